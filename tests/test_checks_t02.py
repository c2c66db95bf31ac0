"""Tests of the T02 checks: each question accepts correct answers written in more than one way and
rejects the obvious wrong approach (selection on the label, a uniform subsample, a domain classifier
scored on its training points, one that sees only the mean) with a message that names it."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import cross_val_predict, train_test_split
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import PolynomialFeatures, StandardScaler

from tlcourse import shifts
from tlcourse.checks import t02
from tlcourse.divergence import proxy_a_distance
from tlcourse.grading.feedback import evaluate_question

SEED = 1234


# ---------------------------------------------------------------- q1 answers, right and wrong
def keep_by_probability(x, y, seed):
    """The solution's way: keep each example with a probability that depends on x1."""
    rng = np.random.default_rng(seed)
    return np.flatnonzero(rng.random(len(x)) < 1 / (1 + np.exp(-2.0 * x[:, 0])))


def threshold_mask(x, y, seed):
    """A deterministic boolean mask: a hard cut on the inputs (the support changes too)."""
    return x[:, 0] + x[:, 1] > 0.3


def importance_resampling(x, y, seed):
    """Resampling with replacement, weights exp(1.5 x2): indices repeat."""
    w = np.exp(1.5 * x[:, 1])
    return np.random.default_rng(seed).choice(len(x), 1500, p=w / w.sum()).tolist()


def select_on_label(x, y, seed):
    """The mistake: keep every positive and a fifth of the negatives (that is label shift)."""
    rng = np.random.default_rng(seed)
    return np.flatnonzero((y == 1) | (rng.random(len(y)) < 0.2))


def select_on_both(x, y, seed):
    """Another: a cut on x, then more positives on top."""
    return np.flatnonzero((x[:, 0] > 0) | (y == 1))


def uniform_subsample(x, y, seed):
    """Another: a random subsample, which moves nothing."""
    return np.random.default_rng(seed).choice(len(x), 1000, replace=False)


# ---------------------------------------------------------------- q2 answers, right and wrong
def forest_held_out(xs, xt, seed):
    x, d = np.r_[xs, xt], np.r_[np.zeros(len(xs)), np.ones(len(xt))]
    a, b, da, db = train_test_split(x, d, test_size=0.5, stratify=d, random_state=seed)
    m = RandomForestClassifier(100, min_samples_leaf=20, random_state=seed).fit(a, da)
    return roc_auc_score(db, m.predict_proba(b)[:, 1])


def quadratic_package(xs, xt, seed):
    """The package's proxy A-distance with quadratic features and a 30 % held-out part."""
    clf = make_pipeline(PolynomialFeatures(2), StandardScaler(), LogisticRegression())
    return np.float32(proxy_a_distance(xs, xt, seed=seed, classifier=clf, test_size=0.3).auc)


def knn_cross_validated(xs, xt, seed):
    x, d = np.r_[xs, xt], np.r_[np.zeros(len(xs)), np.ones(len(xt))]
    return roc_auc_score(d, cross_val_predict(KNeighborsClassifier(30), x, d, cv=5, method="predict_proba")[:, 1])


def forest_on_training_points(xs, xt, seed):
    return shifts.training_points_auc(xs, xt, seed=seed)


def default_forest_on_training_points(xs, xt, seed):
    return shifts.training_points_auc(xs, xt, seed=seed, classifier=RandomForestClassifier(100))


def linear_held_out(xs, xt, seed):
    return proxy_a_distance(xs, xt, seed=seed).auc


def linear_on_training_points(xs, xt, seed):
    return shifts.training_points_auc(xs, xt, seed=seed, classifier=LogisticRegression())


NAMESPACE = dict(covariate_shift_sample=keep_by_probability, domain_auc=forest_held_out, answer_q3="b")


def grade(question, seed=SEED, **changes):
    q = next(q for q in t02.QUESTIONS if q.name == question)
    return evaluate_question(q, {**NAMESPACE, **changes}, seed, time_limit=None)


def passes(question, seed=SEED, **changes):
    result = grade(question, seed, **changes)
    assert result.passed, f"{question}: {result.message}"


def fails(question, words, seed=SEED, **changes):
    result = grade(question, seed, **changes)
    assert not result.passed, f"{question} passed although it should not"
    assert words in result.message, result.message
    return result


def test_points_come_from_the_questions():
    assert [(q.name, q.points) for q in t02.QUESTIONS] == [("q1", 2), ("q2", 2), ("q3", 1)]


# ---------------------------------------------------------------- q1
@pytest.mark.parametrize("fn", [keep_by_probability, threshold_mask, importance_resampling])
@pytest.mark.parametrize("seed", [0, 7, SEED])
def test_q1_accepts_covariate_shifts_built_several_ways(fn, seed):
    passes("q1", seed, covariate_shift_sample=fn)


@pytest.mark.parametrize("seed", [0, 7, SEED])
def test_q1_rejects_selection_on_the_label_as_label_shift(seed):
    fails("q1", "depends on the label y, which is label shift", seed, covariate_shift_sample=select_on_label)
    fails("q1", "no longer follow P(Y|X)", seed, covariate_shift_sample=select_on_both)


@pytest.mark.parametrize("seed", [0, 7, SEED])
def test_q1_rejects_a_selection_that_moves_nothing(seed):
    fails("q1", "P(X) has not moved", seed, covariate_shift_sample=uniform_subsample)


def test_q1_rejects_malformed_answers():
    fails("q1", "integer indices", covariate_shift_sample=lambda x, y, s: ...)
    fails("q1", "integer indices", covariate_shift_sample=lambda x, y, s: np.abs(x[:, 0]))  # floats, not indices
    fails("q1", "one entry per pool example", covariate_shift_sample=lambda x, y, s: (x[:, 0] > 0)[:100])
    fails("q1", "must lie in", covariate_shift_sample=lambda x, y, s: np.arange(2900, 3100))
    fails("q1", "at least 200", covariate_shift_sample=lambda x, y, s: np.argsort(x[:, 0])[:50])
    fails("q1", "raised IndexError", covariate_shift_sample=lambda x, y, s: np.zeros(3)[np.ones(5) > 0])


# ---------------------------------------------------------------- q2
@pytest.mark.parametrize("fn", [forest_held_out, quadratic_package, knn_cross_validated])
@pytest.mark.parametrize("seed", [0, SEED])
def test_q2_accepts_held_out_tests_of_several_kinds(fn, seed):
    passes("q2", seed, domain_auc=fn)


@pytest.mark.parametrize("seed", [0, 7, SEED])
def test_q2_rejects_the_auc_on_the_training_points(seed):
    fails("q2", "scored on the points it was fitted on", seed, domain_auc=forest_on_training_points)
    fails("q2", "scored on the points it was fitted on", seed, domain_auc=default_forest_on_training_points)


@pytest.mark.parametrize("seed", [0, 7, SEED])
def test_q2_rejects_a_classifier_that_sees_only_the_mean(seed):
    fails("q2", "sees only a change of the mean", seed, domain_auc=linear_held_out)
    fails("q2", "sees only a change of the mean", seed, domain_auc=linear_on_training_points)


def test_q2_rejects_other_wrong_answers_with_a_useful_message():
    fails("q2", "is the target scored as the positive class", domain_auc=lambda a, b, s: 1 - forest_held_out(a, b, s))
    fails("q2", "lies in [0, 1]", domain_auc=lambda a, b, s: 1.5)
    fails("q2", "single float", domain_auc=lambda a, b, s: "0.5")
    fails("q2", "raised ZeroDivisionError", domain_auc=lambda a, b, s: 1 / 0)
    fails("q2", "mean moved by one standard deviation",
          domain_auc=lambda a, b, s: 0.5 if abs(b.mean(0)[0] - a.mean(0)[0]) > 0.5 else forest_held_out(a, b, s))


def test_q2_pairs_are_what_the_docstring_says():
    pairs = t02.q2_pairs(0)
    assert list(pairs) == ["same distribution (1)", "same distribution (2)", "same mean, 1.8 x the spread",
                           "mean moved by 1"]
    xs, xt = pairs["same mean, 1.8 x the spread"]
    assert xs.shape == xt.shape == (300, 2) and 1.5 < xt.std() / xs.std() < 2.1
    assert not np.array_equal(t02.q2_pairs(1)["mean moved by 1"][1], pairs["mean moved by 1"][1])


# ---------------------------------------------------------------- q3
@pytest.mark.parametrize("answer", ["b", "B", " (b) "])
def test_q3_accepts_the_right_choice_in_any_spelling(answer):
    passes("q3", answer_q3=answer)


def test_q3_teaches_without_giving_the_answer_away():
    for wrong in ("a", "c", "D"):
        result = fails("q3", "not '", answer_q3=wrong)
        assert t02.Q3_CHOICES["b"] not in result.message
    fails("q3", "one letter as a string", answer_q3=...)


def test_q3_key_is_the_prior_weighted_mix():
    assert abs(0.9 * 0.95 + 0.1 * 0.75 - 0.93) < 0.002
