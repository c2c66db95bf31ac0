"""Checks for exercise T18 (bias risks): bias amplification written by hand, the subgroup accuracy gap
and fairlearn's two group metrics computed correctly on a biased source's predictions, and one
question that asks what fine-tuning on a skewed target does.

Every ``collect`` runs in the student's kernel and returns plain data; every ``grade`` runs in the
trusted process and rebuilds what it compares with: random label/group arrays drawn from the seed
(q1), and the exercise's splits and biased source, rebuilt with
:func:`tlcourse.bias.biased_digit_splits` and :func:`tlcourse.bias.train_source` (seeded, one thread,
so the same weights everywhere; about 2 s, cached for the session) (q2). Nothing in the student's
namespace (``pred_test``, ``source``) is trusted.

- **q1** (2 points) ``bias_amp(train_labels, train_groups, pred_labels, test_groups)``. *collect*: the
  student's function on six random cases (4-6 outputs, 2 or 3 groups, skewed co-occurrences).
  *grade*: each value must equal Zhao et al.'s
  ``1/|O| * sum_g sum_{o: b*(o,g) > 1/|G|} (b~(o,g) - b*(o,g))`` computed here; the usual mistakes (the
  sum over every pair, which is always 0; the bias normalised over outputs instead of groups; a
  threshold of 1/2 with three groups; an absolute value; division by the number of leaning pairs)
  are recognised and named.
- **q2** (2 points) ``acc_gap``, ``eod`` and ``dpd``: on the balanced test split, the largest
  accuracy difference between the groups, and ``equalized_odds_difference`` and
  ``demographic_parity_difference`` for the one-vs-rest outcome "the digit is 5-9". Each must match
  the grader's value to 0.005. Computed on the skewed ``source_test`` split, on the ten digit labels
  (the share-of-ones gap), with ``agg="mean"``, or as a ratio, the answer fails with that mistake named.
- **q3** (1 point) ``answer_q3``: a choice, checked by letter.
"""
from __future__ import annotations

import functools
import numbers

import numpy as np
import torch

from tlcourse.grading import Question
from tlcourse.grading.answers import NOT_PLAIN as _NOT_PLAIN, shown as _shown, scalar as _scalar
from tlcourse.grading.choice import choice_question

# ---------------------------------------------------------------- the exercise's fixed setting
SPLIT_SEED = 4                                  # biased_digit_splits(SPLIT_SEED, ...) and the source's seed
COLOURED_SHARE = (0.1,) * 5 + (0.8,) * 5        # the chapter's biased source
IMAGE_SIZE = 16
HIGH = tuple(range(5, 10))                      # the binary outcome: "the digit is 5-9"
Q1_CASES = ((4, 2), (5, 2), (6, 3), (4, 3), (5, 3), (6, 2))   # (outputs, groups)
TOLERANCE = 0.005


# ---------------------------------------------------------------- q1
def q1_inputs(seed: int):
    """Per case ``(train_labels, train_groups, pred_labels, test_groups)``, int64 arrays drawn from ``seed``.

    Groups depend on the label through a random lean per output, so every case has outputs that lean
    towards a group; the predictions copy the test labels and then move some towards the leaning group.
    """
    rng = np.random.default_rng(seed)
    cases = []
    for n_out, n_groups in Q1_CASES:
        lean = rng.dirichlet(np.full(n_groups, 0.7), size=n_out)       # P(group | output)
        def draw(n):
            y = rng.integers(0, n_out, n)
            g = np.array([rng.choice(n_groups, p=lean[o]) for o in y])
            return y, g
        y_tr, g_tr = draw(240)
        y_te, g_te = draw(160)
        pred = y_te.copy()
        flip = rng.random(len(pred)) < 0.3
        pred[flip] = rng.integers(0, n_out, int(flip.sum()))
        for o in range(n_out):   # make sure every output is predicted at least once
            pred[o] = o
        cases.append((y_tr, g_tr, pred, g_te))
    return cases


def _collect_ba(ns, seed):
    fn = ns["bias_amp"]
    values = []
    for case in q1_inputs(seed):
        try:
            values.append(_scalar(fn(*(a.copy() for a in case))))
        except NotImplementedError:
            return {"error": "bias_amp raises NotImplementedError: replace the placeholder with your code"}
        except Exception as exc:  # noqa: BLE001 - reported to the student
            return {"error": f"bias_amp(train_labels, train_groups, pred_labels, test_groups) raised "
                             f"{type(exc).__name__}: {str(exc)[:200]}"}
    return {"values": values}


def _bias(y, g, n_out, n_groups, over="groups"):
    counts = np.zeros((n_out, n_groups))
    np.add.at(counts, (y, g), 1)
    axis = 1 if over == "groups" else 0
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.nan_to_num(counts / counts.sum(axis, keepdims=True))


def _ba_variants(y_tr, g_tr, pred, g_te, n_out, n_groups) -> dict:
    """The right bias amplification and the usual wrong ones."""
    b_star, b_pred = _bias(y_tr, g_tr, n_out, n_groups), _bias(pred, g_te, n_out, n_groups)
    diff = b_pred - b_star
    leans = b_star > 1 / n_groups
    by_out_star, by_out_pred = (_bias(y_tr, g_tr, n_out, n_groups, "outputs"),
                                _bias(pred, g_te, n_out, n_groups, "outputs"))
    return {
        "right": np.where(leans, diff, 0).sum() / n_out,
        "the sum runs over every (output, group) pair: it is then always 0, because each output's biases "
        "over the groups add up to 1; keep only the pairs with b*(o, g) > 1/|G|": diff.sum() / n_out,
        "b(o, g) is normalised over the outputs (c(o, g) / sum_o' c(o', g)); Zhao et al. divide by the "
        "output's total, c(o, g) / sum_g' c(o, g')": np.where(by_out_star > 1 / n_groups,
                                                               by_out_pred - by_out_star, 0).sum() / n_out,
        "the threshold is 1/2 whatever the number of groups: use b*(o, g) > 1/|G|":
            np.where(b_star > 0.5, diff, 0).sum() / n_out,
        "the differences are taken in absolute value: BA keeps their sign (it can be negative)":
            np.where(leans, np.abs(diff), 0).sum() / n_out,
        "the sum is divided by the number of leaning (output, group) pairs: Zhao et al. divide by the "
        "number of outputs |O|": np.where(leans, diff, 0).sum() / max(int(leans.sum()), 1),
    }


def _close(a: float, b: float, tol: float = 1e-6) -> bool:
    return abs(a - b) <= tol


def _grade_ba(answer, seed):
    assert isinstance(answer, dict), "the collected answer is malformed: run the notebook's cells in order"
    assert "error" not in answer, answer.get("error")
    values = answer["values"]
    for v in values:
        assert not isinstance(v, str), f"bias_amp returned {_shown(v)}; return a float"
    cases = [_ba_variants(*case, n_out, n_groups) for case, (n_out, n_groups) in zip(q1_inputs(seed), Q1_CASES)]
    wrong = [(i, v, float(c["right"])) for i, (v, c) in enumerate(zip(values, cases)) if not _close(v, c["right"])]
    if not wrong:
        return
    for mistake in cases[0]:
        if mistake != "right" and all(_close(v, c[mistake]) for v, c in zip(values, cases)):
            raise AssertionError(f"bias_amp is off on random cases: {mistake}")
    i, got, want = wrong[0]
    n_out, n_groups = Q1_CASES[i]
    raise AssertionError(
        f"bias_amp = {got:.5f} on a random case with {n_out} outputs and {n_groups} groups, expected {want:.5f} "
        f"(wrong in {len(wrong)} of {len(Q1_CASES)} cases). b(o, g) = c(o, g) / sum_g' c(o, g'), b* from the "
        "training labels, b~ from the predictions with the test groups; average b~ - b* over the pairs with "
        "b*(o, g) > 1/|G|, dividing by the number of outputs")


# ---------------------------------------------------------------- q2
@functools.lru_cache(maxsize=1)
def reference_metrics() -> dict:
    """The exercise's numbers, computed here from a source trained here: right and usual wrong values."""
    from fairlearn.metrics import MetricFrame, demographic_parity_difference, equalized_odds_difference
    from sklearn.metrics import accuracy_score

    from tlcourse.bias import GROUPS, biased_digit_splits, binarise, predict_labels, train_source

    splits = biased_digit_splits(SPLIT_SEED, coloured_share=COLOURED_SHARE, size=IMAGE_SIZE)
    source = train_source(splits["source"], SPLIT_SEED)
    out = {}
    for split in ("test", "source_test"):
        s = splits[split]
        y, pred = s.y.numpy(), predict_labels(source, s.x)
        sens = np.asarray(GROUPS, dtype=object)[s.group.numpy()]
        frame = MetricFrame(metrics=accuracy_score, y_true=y, y_pred=pred, sensitive_features=sens)
        yb, pb = binarise(y, HIGH), binarise(pred, HIGH)
        out[split] = {
            "acc_gap": float(frame.difference()), "acc_ratio": float(frame.ratio()),
            "eod": float(equalized_odds_difference(yb, pb, sensitive_features=sens)),
            "eod_mean": float(equalized_odds_difference(yb, pb, sensitive_features=sens, agg="mean")),
            "dpd": float(demographic_parity_difference(yb, pb, sensitive_features=sens)),
            "dpd_digits": float(demographic_parity_difference(y, pred, sensitive_features=sens)),
            "dpd_ratio": float(1 - _dp_ratio(yb, pb, sens)),
        }
    return out


def _dp_ratio(yb, pb, sens):
    from fairlearn.metrics import demographic_parity_ratio

    return demographic_parity_ratio(yb, pb, sensitive_features=sens)


def _collect_metrics(ns, seed):
    return {name: _scalar(ns[name]) for name in ("acc_gap", "eod", "dpd")}


def _grade_metrics(answer, seed):
    for name in ("acc_gap", "eod", "dpd"):
        value = answer[name]
        assert not isinstance(value, str), f"{name} should be a float, got {_shown(value)}"
        assert 0 <= value <= 1, f"{name} = {value!r}; a difference of rates is a fraction in [0, 1]"
    ref = reference_metrics()
    right, skewed = ref["test"], ref["source_test"]
    near = lambda a, b: abs(a - b) <= TOLERANCE  # noqa: E731
    keys = ("acc_gap", "eod", "dpd")
    if all(near(answer[k], skewed[k]) for k in keys) and not all(near(answer[k], right[k]) for k in keys):
        raise AssertionError("these are the numbers of the skewed source_test split: measure fairness on the "
                             "balanced test split, where every (digit, group) cell counts the same")
    # acc_gap
    if not near(answer["acc_gap"], right["acc_gap"]):
        if near(answer["acc_gap"], right["acc_ratio"]) or near(answer["acc_gap"], 1 - right["acc_ratio"]):
            raise AssertionError("acc_gap looks like MetricFrame.ratio(); the gap is MetricFrame(...).difference(), "
                                 "the largest minus the smallest group accuracy")
        raise AssertionError(f"acc_gap = {answer['acc_gap']:.4f}, but the biased source's accuracies on the plain and "
                             f"coloured test digits differ by {right['acc_gap']:.4f}")
    if near(answer["eod"], right["dpd"]) and near(answer["dpd"], right["eod"]) and not near(right["eod"], right["dpd"]):
        raise AssertionError("eod and dpd are swapped: eod is equalized_odds_difference, dpd "
                             "demographic_parity_difference")
    # eod
    if not near(answer["eod"], right["eod"]):
        if near(answer["eod"], right["eod_mean"]):
            raise AssertionError("eod is the mean of the TPR and FPR gaps (agg='mean'); the equalized odds "
                                 "difference is the larger of the two (the default agg='worst_case')")
        raise AssertionError(f"eod = {answer['eod']:.4f}, expected {right['eod']:.4f}: binarise the true and the "
                             "predicted digits alike (1 for 5-9, 0 otherwise) before equalized_odds_difference")
    # dpd
    if not near(answer["dpd"], right["dpd"]):
        if near(answer["dpd"], right["dpd_digits"]):
            raise AssertionError("dpd was computed on the ten digit labels: demographic_parity_difference then "
                                 "measures the gap in the share of predictions equal to 1. Binarise the outcome "
                                 "(digit 5-9 vs the rest) first")
        if near(answer["dpd"], right["dpd_ratio"]):
            raise AssertionError("dpd is 1 - demographic_parity_ratio; the difference is the largest minus the "
                                 "smallest selection rate")
        raise AssertionError(f"dpd = {answer['dpd']:.4f}, expected {right['dpd']:.4f}: the gap in the share of "
                             "test images predicted 5-9, between the two groups")


# ---------------------------------------------------------------- q3
Q3_CHOICES = {
    "a": "It falls to about the level of the balanced-target fine-tuning: any fine-tuning on new data "
         "replaces what the source learnt.",
    "b": "It stays about as large as the source's, or grows: the skewed target data agree with the "
         "source's shortcut and reinforce it.",
    "c": "It falls to zero, because the target images are new digits the source never saw.",
    "d": "It cannot be measured, since the fine-tuning data are skewed.",
}
_Q3_ANSWER = "b"
_Q3_FEEDBACK = {
    "a": "what repaired the decision rule in the chapter was the balance of the target, not the act of "
         "fine-tuning. What does a target with the same skew teach the last layers?",
    "c": "new digits drawn with the same skew carry the same correlation between background and label.",
    "d": "the metric is computed on the balanced test split, whatever the training data; the chapter measures it.",
}


QUESTIONS = [
    Question("q1", points=2, names=("bias_amp",), collect=_collect_ba, grade=_grade_ba,
             hint="counts[o, g] with np.add.at; b = counts / counts.sum(1, keepdims=True) for training "
                  "labels and predictions; mean over outputs of the sum of (b_pred - b_train) where b_train > 1/G"),
    Question("q2", points=2, names=("acc_gap", "eod", "dpd"), collect=_collect_metrics, grade=_grade_metrics,
             hint="use (x_test, y_test, g_test); MetricFrame(metrics=accuracy_score, ...).difference(); "
                  "binarise with np.isin(labels, range(5, 10)) before the two fairlearn metrics"),
    choice_question("q3", "answer_q3", choices=Q3_CHOICES, answer=_Q3_ANSWER, feedback=_Q3_FEEDBACK, points=1,
                    hint="Compare the 'fine-tune, skewed target' row of the chapter's step 3 with the source's."),
]
