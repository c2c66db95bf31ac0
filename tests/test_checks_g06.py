"""Tests of the G06 checks: each question accepts correct answers written in more than one way and
rejects the obvious wrong approach (unequal budgets, IWCV for DEV, a grey "bridge") with a message
that names it."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tlcourse.bridge import colour_bridge
from tlcourse.checks import g06
from tlcourse.embedded_validation import dev_risk
from tests.check_helpers import question_helpers

SEED = 1234


def bridge_numpy(d, c):
    return np.abs(c.numpy()[:, :, None, None] - d.numpy())


def dev_by_hand(w, l):
    L = w * l
    eta = -np.cov(L, w)[0, 1] / np.var(w, ddof=1)
    return L.mean() + eta * w.mean() - eta


@pytest.fixture(scope="module")
def namespace():
    ref = g06.reference_runs()
    return dict(make_colour_bridge=colour_bridge, budget_direct=200, budget_bridged=200,
                direct_acc=ref["direct"], bridged_acc=ref["bridged"], dev=dev_risk, answer_q4="b")


grade, passes, fails = question_helpers(g06, SEED)


def test_points_come_from_the_questions():
    assert [(q.name, q.points) for q in g06.QUESTIONS] == [("q1", 2), ("q2", 2), ("q3", 2), ("q4", 1)]


# ---------------------------------------------------------------- q1
@pytest.mark.parametrize("fn", [colour_bridge, bridge_numpy, lambda d, c: (c[:, :, None, None] - d).abs()])
def test_q1_accepts_the_bridge_written_several_ways(namespace, fn):
    passes(namespace, "q1", make_colour_bridge=fn)


@pytest.mark.parametrize("wrong, words", [
    (lambda d, c: (c[:, :, None, None] + d).clamp(0, 1), "c + d"),
    (lambda d, c: c[:, :, None, None] * d, "multiplied by the colour"),
    (lambda d, c: d.repeat(1, 3, 1, 1), "still grey"),
    (lambda d, c: 1 - (c[:, :, None, None] - d).abs(), "inverted"),
])
def test_q1_names_each_wrong_recipe(namespace, wrong, words):
    fails(namespace, "q1", words, make_colour_bridge=wrong)


def test_q1_rejects_other_wrong_answers(namespace):
    fails(namespace, "q1", "NotImplementedError",
          make_colour_bridge=lambda d, c: (_ for _ in ()).throw(NotImplementedError()))
    fails(namespace, "q1", "shape", make_colour_bridge=lambda d, c: d)
    fails(namespace, "q1", "differs", make_colour_bridge=lambda d, c: (c[:, :, None, None] - d).abs() + 0.1)


# ---------------------------------------------------------------- q2
def test_q2_accepts_the_solution_and_other_spellings(namespace):
    passes(namespace, "q2")
    passes(namespace, "q2", budget_direct=np.int64(200), direct_acc=torch.tensor(namespace["direct_acc"]))


def test_q2_rejects_unequal_budgets(namespace):
    ref = g06.reference_runs()
    fails(namespace, "q2", "unequal budgets", budget_bridged=300, bridged_acc=ref["bridged, extra steps"])
    # the same mistake reported with equal numbers: the accuracy gives it away
    assert abs(ref["bridged, extra steps"] - ref["bridged"]) > 3.01 / g06.N_TEST
    fails(namespace, "q2", "unequal budgets", bridged_acc=ref["bridged, extra steps"])


def test_q2_rejects_wrong_accuracies_and_budgets(namespace):
    fails(namespace, "q2", "the grader's direct run", direct_acc=namespace["direct_acc"] + 0.01)
    fails(namespace, "q2", "exercise spends", budget_direct=100, budget_bridged=100)
    fails(namespace, "q2", "should be a number", direct_acc=...)


# ---------------------------------------------------------------- q3
@pytest.mark.parametrize("fn", [dev_risk, dev_by_hand])
def test_q3_accepts_dev_written_several_ways(namespace, fn):
    passes(namespace, "q3", dev=fn)


@pytest.mark.parametrize("wrong, words", [
    (lambda w, l: np.mean(w * l), "this is IWCV"),
    (lambda w, l: float(np.mean(l)), "ignores the weights"),
    (lambda w, l: 2 * np.mean(w * l) - dev_by_hand(w, l), "wrong sign"),
    (lambda w, l: g06._dev(w, l, ddof_var=0), "different ddof"),
])
def test_q3_names_each_classic_mistake(namespace, wrong, words):
    fails(namespace, "q3", words, dev=wrong)


def test_q3_rejects_other_wrong_answers(namespace):
    fails(namespace, "q3", "expected", dev=lambda w, l: dev_by_hand(w, l) + 0.01)
    fails(namespace, "q3", "return a float", dev=lambda w, l: "0.3")


# ---------------------------------------------------------------- q4
@pytest.mark.parametrize("answer", ["b", "B", " b "])
def test_q4_accepts_the_right_choice(namespace, answer):
    passes(namespace, "q4", answer_q4=answer)


def test_q4_rejects_wrong_choices_without_giving_the_answer(namespace):
    for wrong in ("a", "c", "d"):
        result = fails(namespace, "q4", "not '", answer_q4=wrong)
        assert g06.Q4_CHOICES["b"] not in result.message
    fails(namespace, "q4", "one letter as a string", answer_q4=2)
