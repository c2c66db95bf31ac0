"""Tests of tlcourse.checks.g07: correct answers written several ways pass; the classic mistakes
(argmax pseudo-labels in LEEP, the joint instead of the conditional, the biased MMD², a kernel
without its 2, a domain classifier scored on its training data, an error returned as an
accuracy) fail with a message that names the mistake.

Every question goes through ``evaluate_question``: collect in this process, the plain-data round
trip, then grade, as in self-study feedback. Several grading seeds are used, since the grader
draws a new one for every check.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from tlcourse.checks import g07
from tlcourse.divergence import mmd2_unbiased
from tlcourse.grading.feedback import evaluate_question
from tlcourse.transferability import leep

SEEDS = (0, 1234, 987654321)
QUESTIONS = {q.name: q for q in g07.QUESTIONS}


def check(name, namespace, seed):
    return evaluate_question(QUESTIONS[name], namespace, seed, time_limit=None)


def assert_passes(name, namespace):
    for seed in SEEDS:
        result = check(name, namespace, seed)
        assert result.passed, f"seed {seed}: {result.message}"


def assert_fails(name, namespace, *fragments):
    for seed in SEEDS:
        result = check(name, namespace, seed)
        assert not result.passed, f"seed {seed}: a wrong answer passed"
        for fragment in fragments:
            assert fragment in result.message, f"seed {seed}: {fragment!r} not in {result.message!r}"


# ---------------------------------------------------------------- q1 LEEP
def leep_loops(probs, labels):
    """LEEP written with explicit loops over examples and classes."""
    n, z = probs.shape
    k = int(labels.max()) + 1
    joint = np.zeros((k, z))
    for i in range(n):
        joint[labels[i]] += probs[i] / n
    cond = joint / joint.sum(0, keepdims=True)
    return float(np.mean([np.log(sum(cond[labels[i], j] * probs[i, j] for j in range(z))) for i in range(n)]))


def leep_torch(probs, labels):
    """LEEP in torch with one-hot matrices, returning a 0-d tensor."""
    p, y = torch.as_tensor(probs), torch.as_tensor(labels)
    onehot = torch.nn.functional.one_hot(y).double()
    joint = onehot.T @ p / len(y)
    return (p @ (joint / joint.sum(0)).T).gather(1, y[:, None]).log().mean()


def leep_argmax(probs, labels):
    hard = np.eye(probs.shape[1])[probs.argmax(1)]
    return leep(hard, labels)


def leep_joint_only(probs, labels):
    joint = np.stack([probs[labels == c].sum(0) for c in range(labels.max() + 1)]) / len(labels)
    return float(np.mean(np.log((probs @ joint.T)[np.arange(len(labels)), labels])))


@pytest.mark.parametrize("fn", [leep, leep_loops, leep_torch], ids=["package", "loops", "torch"])
def test_q1_correct_leep_passes(fn):
    assert_passes("q1", {"leep_score": fn})


def test_q1_argmax_pseudo_labels_fail():
    assert_fails("q1", {"leep_score": leep_argmax}, "argmax pseudo-labels", "NCE")


def test_q1_joint_instead_of_conditional_fails():
    assert_fails("q1", {"leep_score": leep_joint_only}, "P(y | z) = P(y, z) / P(z)")


def test_q1_positive_or_broken_answers_fail():
    assert_fails("q1", {"leep_score": lambda p, y: -leep(p, y)}, "LEEP <= 0")
    assert_fails("q1", {"leep_score": lambda p, y: ...}, "placeholder")
    assert_fails("q1", {"leep_score": lambda p, y: 1 / 0}, "ZeroDivisionError")


def test_q1_does_not_trust_the_students_copy_of_the_inputs():
    """Changing the arrays it receives cannot change what the grader compares with."""
    def vandal(p, y):
        value = leep(p, y)
        p[:] = 1.0 / p.shape[1]
        return value
    assert_passes("q1", {"leep_score": vandal})


# ---------------------------------------------------------------- q2 MMD²
def mmd_scipy(x, y, sigma):
    k = lambda a, b: np.exp(-cdist(a, b, "sqeuclidean") / (2 * sigma ** 2))  # noqa: E731
    n, m = len(x), len(y)
    kxx, kyy = k(x, x), k(y, y)
    return ((kxx.sum() - n) / (n * (n - 1)) + (kyy.sum() - m) / (m * (m - 1)) - 2 * k(x, y).mean())


def mmd_package(x, y, sigma):
    return mmd2_unbiased(torch.as_tensor(x), torch.as_tensor(y), bandwidths=torch.tensor([sigma], dtype=torch.float64))


def mmd_biased(x, y, sigma):
    k = lambda a, b: np.exp(-cdist(a, b, "sqeuclidean") / (2 * sigma ** 2))  # noqa: E731
    return k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean()


def mmd_no_two(x, y, sigma):
    return mmd_scipy(x, y, sigma / np.sqrt(2))


@pytest.mark.parametrize("fn", [mmd_scipy, mmd_package], ids=["scipy", "package"])
def test_q2_correct_mmd_passes(fn):
    assert_passes("q2", {"mmd2_unbiased_rbf": fn})


def test_q2_biased_estimate_fails():
    assert_fails("q2", {"mmd2_unbiased_rbf": mmd_biased}, "biased estimate", "n(n - 1)")


def test_q2_kernel_without_the_two_fails():
    assert_fails("q2", {"mmd2_unbiased_rbf": mmd_no_two}, "left out the 2")


def test_q2_other_wrong_answers_fail():
    assert_fails("q2", {"mmd2_unbiased_rbf": lambda x, y, s: 2 * mmd_scipy(x, y, s)}, "expected")
    assert_fails("q2", {"mmd2_unbiased_rbf": lambda x, y, s: np.zeros(3)}, "single float")


# ---------------------------------------------------------------- q3 held-out domain classifier
def held_out_logistic(a, b, seed):
    x, d = np.r_[a, b], np.r_[np.zeros(len(a)), np.ones(len(b))]
    xf, xh, df, dh = train_test_split(x, d, test_size=0.5, stratify=d, random_state=seed)
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(xf, df).score(xh, dh)


def held_out_forest_small_test(a, b, seed):
    """Another classifier, another split (20 % held out), a numpy float result."""
    x, d = np.r_[a, b], np.r_[np.zeros(len(a)), np.ones(len(b))]
    xf, xh, df, dh = train_test_split(x, d, test_size=0.2, stratify=d, random_state=seed)
    forest = RandomForestClassifier(n_estimators=100, random_state=seed).fit(xf, df)
    return np.float64((forest.predict(xh) == dh).mean())


def scored_on_training_data(a, b, seed):
    x, d = np.r_[a, b], np.r_[np.zeros(len(a)), np.ones(len(b))]
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(x, d).score(x, d)


@pytest.mark.parametrize("fn", [held_out_logistic, held_out_forest_small_test], ids=["logistic", "forest"])
def test_q3_held_out_classifiers_pass(fn):
    assert_passes("q3", {"domain_accuracy": fn})


def test_q3_training_accuracy_fails():
    assert_fails("q3", {"domain_accuracy": scored_on_training_data}, "scored on the examples it was fitted on")


def test_q3_error_instead_of_accuracy_fails():
    assert_fails("q3", {"domain_accuracy": lambda a, b, s: 1 - held_out_logistic(a, b, s)}, "returning the error")


def test_q3_constant_answers_fail():
    assert_fails("q3", {"domain_accuracy": lambda a, b, s: 0.5}, "clearly shifted pair")
    assert_fails("q3", {"domain_accuracy": lambda a, b, s: 1.7}, "fraction in [0, 1]")


# ---------------------------------------------------------------- q4 interpretation
@pytest.mark.parametrize("value", ["c", " C ", "(c)", "c."])
def test_q4_right_choice_passes(value):
    assert_passes("q4", {"answer_q4": value})


@pytest.mark.parametrize("value,fragment", [("a", "held-out"), ("b", "transfer worked"), ("d", "features always differ")])
def test_q4_wrong_choices_explain(value, fragment):
    assert_fails("q4", {"answer_q4": value}, fragment)


def test_q4_bad_values_fail():
    assert_fails("q4", {"answer_q4": ...}, "placeholder")
    assert_fails("q4", {"answer_q4": "e"}, "choose one of")


def test_every_question_has_points_and_a_hint():
    assert [q.name for q in g07.QUESTIONS] == ["q1", "q2", "q3", "q4"]
    assert all(q.points >= 1 and q.hint for q in g07.QUESTIONS)
