"""Tests of the T18 checks: each question accepts correct answers written in more than one way and
rejects the obvious wrong approach (the mistakes the chapter corrects) with a message that names it."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from fairlearn.metrics import (MetricFrame, demographic_parity_difference, demographic_parity_ratio,
                               equalized_odds_difference)
from sklearn.metrics import accuracy_score

from tlcourse.bias import GROUPS, bias_amplification, biased_digit_splits, predict_labels, train_source
from tlcourse.checks import t18
from tests.check_helpers import question_helpers

SEED = 1234


# ---------------------------------------------------------------- q1 answers, right and wrong
def bias_amp(y_tr, g_tr, pred, g_te):
    """The solution's way."""
    n_out, n_groups = y_tr.max() + 1, g_tr.max() + 1

    def b(y, g):
        counts = np.zeros((n_out, n_groups))
        np.add.at(counts, (y, g), 1)
        return counts / counts.sum(1, keepdims=True)

    bt, bp = b(y_tr, g_tr), b(pred, g_te)
    return float(np.where(bt > 1 / n_groups, bp - bt, 0).sum() / n_out)


def bias_amp_pandas(y_tr, g_tr, pred, g_te):
    """Another correct way: crosstabs normalised by row, and a torch scalar returned."""
    import pandas as pd

    bt = pd.crosstab(y_tr, g_tr, normalize="index")
    bp = pd.crosstab(pred, g_te, normalize="index").reindex(index=bt.index, columns=bt.columns, fill_value=0)
    lean = bt > 1 / bt.shape[1]
    return torch.tensor(((bp - bt)[lean].sum().sum()) / len(bt))


def bias_amp_package(y_tr, g_tr, pred, g_te):
    return bias_amplification(y_tr, g_tr, pred, g_te)


def _b(y, g, n_out, n_groups, axis=1):
    counts = np.zeros((n_out, n_groups))
    np.add.at(counts, (y, g), 1)
    return np.nan_to_num(counts / counts.sum(axis, keepdims=True))


def all_pairs(y_tr, g_tr, pred, g_te):
    n_out, n_groups = y_tr.max() + 1, g_tr.max() + 1
    return float((_b(pred, g_te, n_out, n_groups) - _b(y_tr, g_tr, n_out, n_groups)).sum() / n_out)


def normalised_over_outputs(y_tr, g_tr, pred, g_te):
    n_out, n_groups = y_tr.max() + 1, g_tr.max() + 1
    bt, bp = _b(y_tr, g_tr, n_out, n_groups, 0), _b(pred, g_te, n_out, n_groups, 0)
    return float(np.where(bt > 1 / n_groups, bp - bt, 0).sum() / n_out)


def threshold_half(y_tr, g_tr, pred, g_te):
    n_out, n_groups = y_tr.max() + 1, g_tr.max() + 1
    bt, bp = _b(y_tr, g_tr, n_out, n_groups), _b(pred, g_te, n_out, n_groups)
    return float(np.where(bt > 0.5, bp - bt, 0).sum() / n_out)


def absolute(y_tr, g_tr, pred, g_te):
    n_out, n_groups = y_tr.max() + 1, g_tr.max() + 1
    bt, bp = _b(y_tr, g_tr, n_out, n_groups), _b(pred, g_te, n_out, n_groups)
    return float(np.where(bt > 1 / n_groups, abs(bp - bt), 0).sum() / n_out)


def per_pair_mean(y_tr, g_tr, pred, g_te):
    n_out, n_groups = y_tr.max() + 1, g_tr.max() + 1
    bt, bp = _b(y_tr, g_tr, n_out, n_groups), _b(pred, g_te, n_out, n_groups)
    lean = bt > 1 / n_groups
    return float(np.where(lean, bp - bt, 0).sum() / lean.sum())


# ---------------------------------------------------------------- q2: the exercise's setting
@pytest.fixture(scope="module")
def exercise():
    """The solution notebook's numbers, computed as it does (independently of the checks module)."""
    splits = biased_digit_splits(t18.SPLIT_SEED, coloured_share=[0.1] * 5 + [0.8] * 5, size=16)
    source = train_source(splits["source"], t18.SPLIT_SEED)
    out = {}
    for name in ("test", "source_test"):
        y, g = splits[name].y.numpy(), splits[name].group.numpy()
        pred = predict_labels(source, splits[name].x)
        sens = np.array(GROUPS)[g]
        hb, pb = np.isin(y, range(5, 10)).astype(int), np.isin(pred, range(5, 10)).astype(int)
        frame = MetricFrame(metrics=accuracy_score, y_true=y, y_pred=pred, sensitive_features=sens)
        out[name] = dict(y=y, pred=pred, sens=sens, hb=hb, pb=pb, acc_gap=float(frame.difference()),
                         acc_ratio=float(frame.ratio()),
                         eod=equalized_odds_difference(hb, pb, sensitive_features=sens),
                         dpd=demographic_parity_difference(hb, pb, sensitive_features=sens))
    return out


@pytest.fixture(scope="module")
def namespace(exercise):
    t = exercise["test"]
    return dict(bias_amp=bias_amp, acc_gap=t["acc_gap"], eod=t["eod"], dpd=t["dpd"], answer_q3="b")


grade, passes, fails = question_helpers(t18, SEED)


def test_points_come_from_the_questions():
    assert [(q.name, q.points) for q in t18.QUESTIONS] == [("q1", 2), ("q2", 2), ("q3", 1)]


# ---------------------------------------------------------------- q1
@pytest.mark.parametrize("fn", [bias_amp, bias_amp_pandas, bias_amp_package])
def test_q1_accepts_bias_amplification_written_several_ways(namespace, fn):
    for seed in (0, 1, SEED):
        result = grade(namespace, "q1", seed=seed, bias_amp=fn)
        assert result.passed, result.message


@pytest.mark.parametrize("wrong, words", [
    (all_pairs, "always 0"),
    (normalised_over_outputs, "normalised over the outputs"),
    (threshold_half, "threshold is 1/2"),
    (absolute, "absolute value"),
    (per_pair_mean, "number of leaning"),
])
def test_q1_names_each_classic_mistake(namespace, wrong, words):
    fails(namespace, "q1", words, bias_amp=wrong)


def test_q1_cases_separate_the_mistakes():
    """Every wrong variant differs from the right value on some case, or the test above proves nothing."""
    for case, (n_out, n_groups) in zip(t18.q1_inputs(SEED), t18.Q1_CASES):
        variants = t18._ba_variants(*case, n_out, n_groups)
        assert variants["right"] == pytest.approx(bias_amplification(*case))
    cases = [t18._ba_variants(*c, *shape) for c, shape in zip(t18.q1_inputs(SEED), t18.Q1_CASES)]
    for mistake in cases[0]:
        if mistake != "right":
            assert any(abs(c[mistake] - c["right"]) > 1e-4 for c in cases), mistake


def test_q1_rejects_other_wrong_answers_with_a_useful_message(namespace):
    fails(namespace, "q1", "expected", bias_amp=lambda *a: bias_amp(*a) + 0.01)
    fails(namespace, "q1", "NotImplementedError",
          bias_amp=lambda *a: (_ for _ in ()).throw(NotImplementedError("replace this line")))
    fails(namespace, "q1", "raised KeyError", bias_amp=lambda *a: {}["x"])
    fails(namespace, "q1", "return a float", bias_amp=lambda *a: np.zeros(3))


def test_q1_inputs_depend_on_the_seed():
    a, b = t18.q1_inputs(0), t18.q1_inputs(1)
    assert not np.array_equal(a[0][0], b[0][0]) and np.array_equal(a[0][0], t18.q1_inputs(0)[0][0])


# ---------------------------------------------------------------- q2
def test_q2_accepts_the_solution_and_other_spellings(namespace, exercise):
    passes(namespace, "q2")
    t = exercise["test"]
    # by hand: per-group accuracies and rates, as NumPy scalars and a tensor
    acc = [np.mean(t["pred"][t["sens"] == g] == t["y"][t["sens"] == g]) for g in GROUPS]
    sel = [t["pb"][t["sens"] == g].mean() for g in GROUPS]
    passes(namespace, "q2", acc_gap=np.float32(abs(acc[0] - acc[1])), dpd=torch.tensor(abs(sel[0] - sel[1])))


def test_q2_reference_matches_the_exercise(exercise):
    ref = t18.reference_metrics()["test"]
    t = exercise["test"]
    assert abs(ref["acc_gap"] - t["acc_gap"]) < 1e-12 and abs(ref["eod"] - t["eod"]) < 1e-12
    assert abs(ref["dpd"] - t["dpd"]) < 1e-12
    # what makes the wrong answers detectable
    assert abs(ref["dpd_digits"] - ref["dpd"]) > 0.05 and abs(ref["eod_mean"] - ref["eod"]) > 0.05
    assert max(abs(exercise["source_test"][k] - ref[k]) for k in ("acc_gap", "dpd")) > 0.05


def test_q2_rejects_the_multiclass_labels(namespace, exercise):
    t = exercise["test"]
    raw = demographic_parity_difference(t["y"], t["pred"], sensitive_features=t["sens"])
    fails(namespace, "q2", "ten digit labels", dpd=raw)


def test_q2_rejects_the_skewed_split(namespace, exercise):
    s = exercise["source_test"]
    fails(namespace, "q2", "skewed source_test split", acc_gap=s["acc_gap"], eod=s["eod"], dpd=s["dpd"])


def test_q2_rejects_other_wrong_metrics(namespace, exercise):
    t = exercise["test"]
    fails(namespace, "q2", "agg='mean'",
          eod=equalized_odds_difference(t["hb"], t["pb"], sensitive_features=t["sens"], agg="mean"))
    fails(namespace, "q2", "MetricFrame.ratio()", acc_gap=t["acc_ratio"])
    fails(namespace, "q2", "demographic_parity_ratio",
          dpd=1 - demographic_parity_ratio(t["hb"], t["pb"], sensitive_features=t["sens"]))
    only_five = (t["y"] == 5).astype(int), (t["pred"] == 5).astype(int)
    fails(namespace, "q2", "binarise the true and the predicted",
          eod=equalized_odds_difference(*only_five, sensitive_features=t["sens"]))
    fails(namespace, "q2", "swapped", eod=t["dpd"], dpd=t["eod"])
    fails(namespace, "q2", "should be a float", eod=...)
    fails(namespace, "q2", "fraction in [0, 1]", acc_gap=-0.3)


# ---------------------------------------------------------------- q3
@pytest.mark.parametrize("answer", ["b", "B", " b ", "b\n"])
def test_q3_accepts_the_right_choice_in_any_spelling(namespace, answer):
    passes(namespace, "q3", answer_q3=answer)


def test_q3_teaches_without_giving_the_answer_away(namespace):
    for wrong in ("a", "C", "d"):
        result = fails(namespace, "q3", "not '", answer_q3=wrong)
        assert t18.Q3_CHOICES["b"] not in result.message and "'b'" not in result.message
    fails(namespace, "q3", "choose one of", answer_q3="e")
    fails(namespace, "q3", "one letter as a string", answer_q3=2)
