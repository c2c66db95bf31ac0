"""Checks for exercise T02 (domain and task): a covariate shift built by selecting from a labelled
pool, a domain-classifier test scored on held-out inputs, and one prediction of a classifier's
accuracy under label shift.

Every ``collect`` runs in the student's kernel, calls the student's function on inputs drawn from
the grading seed and returns plain data; every ``grade`` runs in the trusted process, redraws the
same inputs from the seed and judges them against the truth it knows (the pool's true
``P(Y=1|x)``, which distributions each pair came from). Nothing from the student's namespace is
trusted.

- **q1** (2 points) ``covariate_shift_sample(x, y, seed)`` returns the indices (repeats allowed)
  or a boolean mask of the examples of a labelled pool (:func:`tlcourse.shifts.labelled_pool`,
  3,000 points) that form the target. Covariate shift means: P(X) moved, P(Y|X) not. The grader
  checks (1) at least 200 examples are kept; (2) the kept labels still follow the pool's true
  ``P(Y|x)``: the residual ``mean(y - p(x))`` over the kept examples, weighted by how often each is
  kept, must have ``|z| <= 4`` under "selection depends on x only"
  (:func:`tlcourse.shifts.selection_residual`); selecting on ``y`` (label shift) gives ``|z|`` of 10
  or more and is named; (3) P(X) moved: the MMD permutation test
  (:func:`tlcourse.shifts.mmd_permutation_test`, 200 permutations) between up to 500 distinct
  kept inputs and 500 fresh draws of the pool's distribution must give ``p < 0.01``; a uniform
  random subsample fails it (and is named).
- **q2** (2 points) ``domain_auc(x_source, x_target, seed)``: the held-out ROC AUC of any domain
  classifier. Four seeded 2-D pairs of 300 + 300 points: two drawn from one distribution
  ``N(0, I)``, one with the same mean and 1.8 times the spread, one with the mean moved by 1 in
  x1. Bars: each same-distribution AUC <= 0.66 and their mean <= 0.63 (and >= 0.37); spread
  >= 0.62; mean shift >= 0.6. Measured over 40 grading seeds (min / max): a random forest
  (100 trees, leaves of 20) held out on half: nulls up to 0.59 (mean up to 0.54), spread from 0.66,
  mean from 0.63; logistic regression on quadratic features held out on 30 %: nulls up to 0.64
  (mean up to 0.60), spread from 0.68, mean from 0.66; k-NN (30) with 5-fold cross-validated
  probabilities: nulls up to 0.57, spread from 0.66, mean from 0.68. The wrong approaches: the
  same forest scored on its own training points gives nulls of at least 0.69 (mean 0.71 to 0.75):
  caught and named as the training-points mistake; a held-out logistic regression on the raw
  inputs gives at most 0.58 on the spread pair: caught and named as a classifier that sees only the
  mean. (Logistic regression scored on its training points is also caught there; k-NN scored on
  its training points, mildly optimistic in 2-D, is not reliably caught.)
- **q3** (1 point) ``answer_q3``: the accuracy of a classifier under label shift, by choice.
"""
from __future__ import annotations

import numpy as np

from tlcourse.grading import Question
from tlcourse.grading.answers import call as _call
from tlcourse.grading.answers import describe as _describe
from tlcourse.grading.answers import returned_float as _result
from tlcourse.grading.choice import choice_question

POOL_SIZE = 3000
MIN_KEPT = 200
Z_LIMIT = 4.0
MMD_SAMPLE, MMD_PERMUTATIONS, MMD_ALPHA = 500, 200, 0.01
PAIR_SIZE, SPREAD, MEAN_SHIFT = 300, 1.8, 1.0
NULL_MAX, NULL_MEAN_RANGE, SPREAD_MIN, MEAN_MIN = 0.66, (0.37, 0.63), 0.62, 0.6


# ---------------------------------------------------------------- q1
def q1_pool(seed: int):
    """The labelled pool of q1, drawn from the grading seed: ``(x (3000, 2), y (3000,))``."""
    from tlcourse.shifts import labelled_pool
    return labelled_pool(POOL_SIZE, seed=seed)


def _collect_selection(ns, seed):
    x, y = q1_pool(seed)
    return {"kept": _call(ns["covariate_shift_sample"], x.copy(), y.copy(), seed)}


def _counts(value) -> np.ndarray:
    """How often each pool example is kept, from indices or a boolean mask; AssertionError otherwise."""
    arr = np.asarray(value) if isinstance(value, (list, tuple, np.ndarray)) else None
    assert arr is not None and arr.ndim == 1 and arr.dtype.kind in "biu", (
        f"covariate_shift_sample returned {_describe(value)}; return a 1-D array of integer indices into x "
        f"(repeats allowed) or a boolean mask of length {POOL_SIZE}")
    if arr.dtype.kind == "b":
        assert len(arr) == POOL_SIZE, (
            f"a boolean mask must have one entry per pool example ({POOL_SIZE}), got {len(arr)}")
        return arr.astype(np.float64)
    assert len(arr) == 0 or (arr.min() >= 0 and arr.max() < POOL_SIZE), (
        f"indices must lie in [0, {POOL_SIZE}); got values from {arr.min()} to {arr.max()}")
    return np.bincount(arr, minlength=POOL_SIZE).astype(np.float64)


def _grade_selection(answer, seed):
    from tlcourse.shifts import mmd_permutation_test, pool_posterior, selection_residual

    entry = answer.get("kept") if isinstance(answer, dict) else None
    assert isinstance(entry, dict), "the collected answer is malformed: run the notebook from the top, then check again"
    if "raised" in entry:
        raise AssertionError(f"covariate_shift_sample(x, y, seed) raised {entry['raised']}: {entry.get('message', '')}")
    counts = _counts(entry["value"])
    assert counts.sum() >= MIN_KEPT, (
        f"only {int(counts.sum())} examples kept; keep at least {MIN_KEPT} so the target can be measured")
    x, y = q1_pool(seed)
    p = pool_posterior(x)
    residual, z = selection_residual(y, p, counts)
    kept_rate = float((counts * y).sum() / counts.sum())
    if abs(z) > Z_LIMIT:
        raise AssertionError(
            f"the kept labels no longer follow P(Y|X): among the kept examples y - P(Y=1|x) averages {residual:+.3f} "
            f"(z = {z:+.1f}; {kept_rate:.0%} positive). The selection depends on the label y, which is label shift "
            "(or worse), not covariate shift: decide whether to keep an example from x alone")
    kept = np.flatnonzero(counts)
    rng = np.random.default_rng([seed, 2])
    if len(kept) > MMD_SAMPLE:
        kept = rng.choice(kept, MMD_SAMPLE, replace=False)
    fresh = rng.standard_normal((MMD_SAMPLE, 2))
    _, p_value = mmd_permutation_test(x[kept], fresh, n_permutations=MMD_PERMUTATIONS, seed=seed)
    assert p_value < MMD_ALPHA, (
        f"P(X) has not moved: an MMD two-sample test between the kept inputs and fresh draws of the pool's "
        f"distribution gives p = {p_value:.3f}. A selection that ignores x (a uniform random subsample) keeps "
        "P(X) as it was; keep examples with a probability that depends on x")


# ---------------------------------------------------------------- q2
def q2_pairs(seed: int) -> dict:
    """The four pairs of q2, drawn from the grading seed: name -> (x_source, x_target), (300, 2) each."""
    rng = np.random.default_rng([seed, 3])

    def g():
        return rng.standard_normal((PAIR_SIZE, 2))

    return {"same distribution (1)": (g(), g()), "same distribution (2)": (g(), g()),
            "same mean, 1.8 x the spread": (g(), SPREAD * g()),
            "mean moved by 1": (g(), g() + np.array([MEAN_SHIFT, 0.0]))}


def _collect_auc(ns, seed):
    fn = ns["domain_auc"]
    return {"cases": {name: _call(fn, xs.copy(), xt.copy(), seed) for name, (xs, xt) in q2_pairs(seed).items()}}


def _grade_auc(answer, seed):
    cases = answer.get("cases") if isinstance(answer, dict) else None
    names = list(q2_pairs(0))
    assert isinstance(cases, dict) and sorted(cases) == sorted(names), (
        "the collected answer is malformed: run the notebook from the top, then check again")
    auc = {name: _result(cases[name], f"domain_auc on the pair '{name}'", "a ROC AUC in [0, 1]") for name in names}
    for name, value in auc.items():
        assert 0.0 <= value <= 1.0, f"domain_auc on '{name}' returned {value:.3f}; a ROC AUC lies in [0, 1]"
    nulls = [auc[n] for n in names[:2]]
    shown = ", ".join(f"{n}: {v:.2f}" for n, v in auc.items())
    if max(nulls) > NULL_MAX or np.mean(nulls) > NULL_MEAN_RANGE[1]:
        raise AssertionError(
            f"on two pairs drawn from ONE distribution your AUC is {nulls[0]:.2f} and {nulls[1]:.2f}, a shift that is "
            "not there. That is what a domain classifier scored on the points it was fitted on reports: fit it on "
            f"one part of the pooled inputs and compute the AUC on the other part ({shown})")
    spread = auc[names[2]]
    assert not (spread <= 1 - SPREAD_MIN and auc[names[3]] <= 1 - MEAN_MIN), (
        f"the shifted pairs score well BELOW 0.5 ({spread:.2f} and {auc[names[3]]:.2f}): is the target scored as the "
        f"positive class? Label target inputs 1 and use the probability of class 1 ({shown})")
    assert np.mean(nulls) >= NULL_MEAN_RANGE[0], (
        f"on pairs from one distribution the AUC should be about 0.5, got {nulls[0]:.2f} and {nulls[1]:.2f} ({shown})")
    assert spread >= SPREAD_MIN, (
        f"the target with the same mean and 1.8 times the spread scores AUC {spread:.2f}, as if nothing had moved. "
        "A linear domain classifier sees only a change of the mean; use one that can see a change of spread "
        f"(a random forest, k-nearest neighbours, a kernel, or quadratic features) ({shown})")
    assert auc[names[3]] >= MEAN_MIN, (
        f"the target whose mean moved by one standard deviation scores AUC {auc[names[3]]:.2f}; a working domain "
        f"classifier reaches about 0.75 ({shown})")


# ---------------------------------------------------------------- q3
Q3_CHOICES = {
    "a": "About 0.85, as on the source: label shift leaves a classifier's accuracy unchanged.",
    "b": "About 0.93: the per-class rates carry over, and most target examples are positives, which it gets "
         "right 95 % of the time.",
    "c": "About 0.77: the rarer class in the source now dominates, so the classifier is out of its depth.",
    "d": "It cannot be predicted without labelled target examples.",
}
_Q3_ANSWER = "b"
_Q3_FEEDBACK = {
    "a": "the accuracy is an average of the per-class rates weighted by the class proportions; what happens to "
         "that average when the proportions change and the rates do not?",
    "c": "under label shift each class looks as it did in the source, P(X|Y) is fixed: which per-class rate "
         "applies to the positives, and how many of them are there?",
    "d": "you know the target's class proportions and that P(X|Y) did not change: what does that say about the "
         "true-positive and true-negative rates on the target?",
}

QUESTIONS = [
    Question("q1", points=2, names=("covariate_shift_sample",), collect=_collect_selection, grade=_grade_selection,
             hint="keep = rng.random(len(x)) < 1 / (1 + np.exp(-2 * x[:, 0])); return keep  (x only, never y)"),
    Question("q2", points=2, names=("domain_auc",), collect=_collect_auc, grade=_grade_auc,
             hint="pool, label by domain, train_test_split(..., stratify=d, random_state=seed), fit a random forest "
                  "on one half, roc_auc_score on the other half's predict_proba"),
    choice_question("q3", "answer_q3", choices=Q3_CHOICES, answer=_Q3_ANSWER, feedback=_Q3_FEEDBACK, points=1,
                    hint="accuracy = P(Y=1) TPR + P(Y=0) TNR; step 4 of the chapter measures which of these moves."),
]
