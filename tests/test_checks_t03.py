"""Tests of the T03 checks: each question accepts correct answers written in more than one way and
rejects the obvious wrong approach (test-set curves, unequal budgets, the wrong area) with a message
that names it."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tlcourse import curves
from tlcourse.checks import t03
from tests.check_helpers import question_helpers

SEED = 1234


# ---------------------------------------------------------------- answers, right and wrong
def auc_trapezoid(steps, acc):
    s, a = np.asarray(steps, float), np.asarray(acc, float)
    return float(np.sum(np.diff(s) * (a[1:] + a[:-1]) / 2) / (s[-1] - s[0]))


def auc_numpy(steps, acc):
    return np.trapezoid(acc, steps) / (steps[-1] - steps[0])          # a NumPy scalar


def auc_torch(steps, acc):
    s, a = torch.tensor(steps), torch.tensor(acc)
    return torch.trapezoid(a, s) / (s[-1] - s[0])                     # a 0-d tensor


def ttt_loop(steps, acc, threshold):
    for s, a in zip(steps, acc):
        if a >= threshold:
            return s
    return math.inf


def ttt_vectorised(steps, acc, threshold):
    hit = np.flatnonzero(acc >= threshold)
    return np.float32(steps[hit[0]]) if hit.size else np.inf


def auc_mean(steps, acc):
    return float(np.mean(acc))


def auc_unnormalised(steps, acc):
    return float(np.trapezoid(acc, steps))


def ttt_index(steps, acc, threshold):
    hit = np.flatnonzero(acc >= threshold)
    return int(hit[0]) if hit.size else math.inf


def ttt_strict(steps, acc, threshold):
    hit = np.flatnonzero(acc > threshold)
    return float(steps[hit[0]]) if hit.size else math.inf


def ttt_none(steps, acc, threshold):
    hit = np.flatnonzero(acc >= threshold)
    return float(steps[hit[0]]) if hit.size else None


def ttt_last_step(steps, acc, threshold):
    hit = np.flatnonzero(acc >= threshold)
    return float(steps[hit[0]]) if hit.size else float(steps[-1])


def _gaps(split="val_acc", cut=True, last=3):
    log = t03.logged_runs()
    s, p = log[log.arm == "scratch"], log[log.arm == "pretrained"]
    if cut:
        p = p[p.step <= s.step.max()]
    auc_gap = curves.area_under_curve(p.step, p[split]) - curves.area_under_curve(s.step, s[split])
    asym = p[split].to_numpy()[-last:].mean() - s[split].to_numpy()[-last:].mean()
    return auc_gap, asym


@pytest.fixture(scope="module")
def namespace():
    auc_gap, asym = _gaps()
    return dict(auc=auc_trapezoid, time_to_threshold=ttt_loop, auc_gap=auc_gap, asymptotic_gap=asym, answer_q3="b")


grade, passes, fails = question_helpers(t03, SEED)


def test_points_come_from_the_questions():
    assert [(q.name, q.points) for q in t03.QUESTIONS] == [("q1", 2), ("q2", 2), ("q3", 1)]


# ---------------------------------------------------------------- q1
@pytest.mark.parametrize("auc", [auc_trapezoid, auc_numpy, auc_torch])
@pytest.mark.parametrize("ttt", [ttt_loop, ttt_vectorised])
def test_q1_accepts_the_measures_written_several_ways(namespace, auc, ttt):
    for seed in (0, 1, SEED):
        result = grade(namespace, "q1", seed=seed, auc=auc, time_to_threshold=ttt)
        assert result.passed, result.message


def test_q1_cases_are_uneven_have_a_tie_and_a_never():
    for seed in (0, 1, SEED):
        cases = t03.q1_cases(seed)
        assert any(len(set(np.diff(s))) > 1 for s, _, _ in cases)          # uneven steps
        steps, acc, threshold = cases[1]
        assert threshold in acc                                           # reached exactly
        steps, acc, threshold = cases[3]
        assert (acc < threshold).all()                                    # never reached
    assert not np.array_equal(t03.q1_cases(0)[0][1], t03.q1_cases(1)[0][1])


@pytest.mark.parametrize("wrong, words", [
    (auc_mean, "plain mean of the points"),
    (auc_unnormalised, "not divided by the span"),
])
def test_q1_names_the_wrong_area(namespace, wrong, words):
    fails(namespace, "q1", words, auc=wrong)


@pytest.mark.parametrize("wrong, words", [
    (ttt_index, "index of the point"),
    (ttt_strict, "accuracy > threshold"),
    (ttt_none, "never reaches its threshold"),
    (ttt_last_step, "never reaches its threshold"),
])
def test_q1_names_the_wrong_time(namespace, wrong, words):
    fails(namespace, "q1", words, time_to_threshold=wrong)


def test_q1_rejects_other_wrong_answers_with_a_useful_message(namespace):
    fails(namespace, "q1", "expected", auc=lambda s, a: auc_trapezoid(s, a) + 0.01)
    fails(namespace, "q1", "NotImplementedError",
          auc=lambda *a: (_ for _ in ()).throw(NotImplementedError("replace this line")))
    fails(namespace, "q1", "raised ZeroDivisionError", auc=lambda s, a: 1 / 0)
    fails(namespace, "q1", "return a number", auc=lambda s, a: [0.5])


# ---------------------------------------------------------------- q2
def test_q2_accepts_the_solution_and_other_spellings(namespace):
    passes(namespace, "q2")
    auc_gap, asym = _gaps()
    passes(namespace, "q2", auc_gap=np.float32(auc_gap), asymptotic_gap=torch.tensor(asym))
    # the same numbers through the package's paired helpers
    log = t03.logged_runs()
    s, p = log[log.arm == "scratch"], log[log.arm == "pretrained"]
    steps, p_val = curves.truncate(p.step, p.val_acc, s.step.max())
    b = curves.benefits(steps, p_val, s.val_acc.to_numpy(), threshold=0.5, last=3)
    passes(namespace, "q2", auc_gap=b["auc_gap"], asymptotic_gap=b["asymptotic_gap"])


def test_q2_the_traps_give_distinguishable_numbers():
    v = t03.q2_variants()
    keys = list(v)
    for i, a in enumerate(keys):
        for b in keys[i + 1:]:
            assert max(abs(x - y) for x, y in zip(v[a], v[b])) > 0.005, (a, b)


def test_q2_rejects_reading_the_benefits_off_test_curves(namespace):
    auc_gap, asym = _gaps(split="test_acc")
    fails(namespace, "q2", "TEST-set curves", auc_gap=auc_gap, asymptotic_gap=asym)


def test_q2_rejects_curves_of_unequal_length(namespace):
    auc_gap, asym = _gaps(cut=False)
    fails(namespace, "q2", "unequal budgets", auc_gap=auc_gap, asymptotic_gap=asym)
    auc_gap, asym = _gaps(split="test_acc", cut=False)
    fails(namespace, "q2", "TEST-set curves and the longer run", auc_gap=auc_gap, asymptotic_gap=asym)


def test_q2_rejects_points_and_other_wrong_numbers(namespace):
    auc_gap, asym = _gaps()
    fails(namespace, "q2", "percentage points", auc_gap=100 * auc_gap, asymptotic_gap=100 * asym)
    fails(namespace, "q2", "expected about", auc_gap=auc_gap + 0.02, asymptotic_gap=asym)
    fails(namespace, "q2", "should be a float", auc_gap=..., asymptotic_gap=asym)
    fails(namespace, "q2", "should be a float", auc_gap=None, asymptotic_gap=asym)


def test_q2_the_pretrained_run_is_the_longer_one():
    log = t03.logged_runs()
    lengths = log.groupby("arm").step.max()
    assert lengths["pretrained"] == 2 * lengths["scratch"]


# ---------------------------------------------------------------- q3
@pytest.mark.parametrize("answer", ["b", "B", " b ", "(b)"])
def test_q3_accepts_the_right_choice_in_any_spelling(namespace, answer):
    passes(namespace, "q3", answer_q3=answer)


def test_q3_teaches_without_giving_the_answer_away(namespace):
    for wrong in ("a", "C", "d"):
        result = fails(namespace, "q3", "not '", answer_q3=wrong)
        assert t03.Q3_CHOICES["b"] not in result.message and "'b'" not in result.message
    fails(namespace, "q3", "choose one of", answer_q3="e")
    fails(namespace, "q3", "one letter as a string", answer_q3=2)
    fails(namespace, "q3", "one letter as a string", answer_q3=...)
