"""Tests of tlcourse.checks.s06: correct answers written several ways pass; the classic mistakes
(the Ben-David bound without its 1/2, the domain classifier's error used as the distance, an
unclipped proxy, lambda from the source alone, a vacuous bound read as failure, co-adaptation
blamed where the control rules it out) fail with a message that names the mistake.

Every question goes through ``evaluate_question``: collect in this process, the plain-data round
trip, then grade, as in self-study feedback. Several grading seeds are used, since the grader
draws a new one for every check.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

from tlcourse.bounds import ben_david_bound
from tlcourse.checks import s06
from tlcourse.grading.feedback import evaluate_question

SEEDS = (0, 1234, 987654321)
QUESTIONS = {q.name: q for q in s06.QUESTIONS}


def check(name, namespace, seed):
    return evaluate_question(QUESTIONS[name], namespace, seed, time_limit=None)


def assert_passes(name, namespace, seeds=SEEDS):
    for seed in seeds:
        result = check(name, namespace, seed)
        assert result.passed, f"seed {seed}: {result.message}"


def assert_fails(name, namespace, *fragments, seeds=SEEDS):
    for seed in seeds:
        result = check(name, namespace, seed)
        assert not result.passed, f"seed {seed}: a wrong answer passed"
        for fragment in fragments:
            assert fragment in result.message, f"seed {seed}: {fragment!r} not in {result.message!r}"


# ---------------------------------------------------------------- q1 the bound's right-hand side
def bound_plain(source_error, domain_error, lambda_):
    proxy = min(max(2 * (1 - 2 * domain_error), 0.0), 2.0)
    return source_error + proxy / 2 + lambda_


def bound_numpy(source_error, domain_error, lambda_):
    """The same, simplified by hand (1/2 * 2 = 1) and returned as a NumPy scalar."""
    return np.float64(source_error + np.clip(1 - 2 * domain_error, 0, 1) + lambda_)


def bound_torch(source_error, domain_error, lambda_):
    return torch.tensor(source_error) + 0.5 * torch.clamp(2 * (1 - 2 * torch.tensor(domain_error)), 0, 2) + lambda_


@pytest.mark.parametrize("fn", [bound_plain, bound_numpy, bound_torch], ids=["plain", "numpy", "torch"])
def test_q1_correct_bound_passes(fn):
    assert_passes("q1", {"bound_estimate": fn})


def test_q1_bound_without_the_half_fails():
    def no_half(s, e, lam):
        return s + min(max(2 * (1 - 2 * e), 0.0), 2.0) + lam
    assert_fails("q1", {"bound_estimate": no_half}, "without its 1/2")


def test_q1_error_used_as_distance_fails():
    assert_fails("q1", {"bound_estimate": lambda s, e, lam: s + e / 2 + lam}, "as if it were the distance")
    assert_fails("q1", {"bound_estimate": lambda s, e, lam: s + e + lam}, "as if it were the distance")


def test_q1_unclipped_proxy_fails():
    assert_fails("q1", {"bound_estimate": lambda s, e, lam: s + (1 - 2 * e) + lam}, "clip the proxy")


def test_q1_dropped_lambda_fails():
    def no_lambda(s, e, lam):
        return s + min(max(1 - 2 * e, 0.0), 1.0)
    assert_fails("q1", {"bound_estimate": no_lambda}, "lambda is missing")


def test_q1_broken_answers_fail():
    assert_fails("q1", {"bound_estimate": lambda s, e, lam: ...}, "placeholder")
    assert_fails("q1", {"bound_estimate": lambda s, e, lam: 1 / 0}, "ZeroDivisionError")
    assert_fails("q1", {"bound_estimate": lambda s, e, lam: [s, e, lam]}, "single float")


# ---------------------------------------------------------------- q2 lambda
def lambda_package(x_s, y_s, x_t, y_t, seed):
    return ben_david_bound(x_s, y_s, x_t, y_t, seed=seed).lambda_


def lambda_by_hand(x_s, y_s, x_t, y_t, seed):
    """Another split (30 % held out), an unscaled, weakly regularised logistic regression."""
    xs_a, xs_b, ys_a, ys_b = train_test_split(x_s, y_s, test_size=0.3, random_state=seed)
    xt_a, xt_b, yt_a, yt_b = train_test_split(x_t, y_t, test_size=0.3, random_state=seed)
    h = LogisticRegression(C=10).fit(np.r_[xs_a, xt_a], np.r_[ys_a, yt_a])
    return float(np.mean(h.predict(xs_b) != ys_b) + np.mean(h.predict(xt_b) != yt_b))


def lambda_source_only(x_s, y_s, x_t, y_t, seed):
    """The seed error: the source-trained classifier's source plus target errors."""
    terms = ben_david_bound(x_s, y_s, x_t, y_t, seed=seed)
    return terms.source_error + terms.target_error


def lambda_twice_source(x_s, y_s, x_t, y_t, seed):
    return 2 * ben_david_bound(x_s, y_s, x_t, y_t, seed=seed).source_error


@pytest.mark.parametrize("fn", [lambda_package, lambda_by_hand], ids=["package", "by-hand"])
def test_q2_joint_hypothesis_passes(fn):
    assert_passes("q2", {"estimate_lambda": fn}, seeds=SEEDS[:2])


def test_q2_source_only_classifier_fails():
    assert_fails("q2", {"estimate_lambda": lambda_source_only}, "best *joint* hypothesis", seeds=SEEDS[:2])


def test_q2_source_alone_fails():
    assert_fails("q2", {"estimate_lambda": lambda_twice_source}, "needs target labels", seeds=SEEDS[:2])


def test_q2_out_of_range_fails():
    assert_fails("q2", {"estimate_lambda": lambda *args: 2.5}, "in [0, 2]", seeds=SEEDS[:1])


# ---------------------------------------------------------------- q3, q4 choices
@pytest.mark.parametrize("value", ["b", " B ", "(b)", "b."])
def test_q3_right_choice_passes(value):
    assert_passes("q3", {"answer_q3": value})


@pytest.mark.parametrize("value,fragment", [("a", "says nothing either way"), ("c", "part of Theorem 2"),
                                            ("d", "larger, not smaller")])
def test_q3_wrong_choices_explain(value, fragment):
    assert_fails("q3", {"answer_q3": value}, fragment)


@pytest.mark.parametrize("value", ["c", "C"])
def test_q4_right_choice_passes(value):
    assert_passes("q4", {"answer_q4": value})


@pytest.mark.parametrize("value,fragment", [("a", "same epochs"), ("b", "BnB row"), ("d", "less likely")])
def test_q4_wrong_choices_explain(value, fragment):
    assert_fails("q4", {"answer_q4": value}, fragment)


def test_choices_reject_bad_values():
    assert_fails("q3", {"answer_q3": ...}, "placeholder")
    assert_fails("q4", {"answer_q4": "e"}, "choose one of")


def test_every_question_has_points_and_a_hint():
    assert [q.name for q in s06.QUESTIONS] == ["q1", "q2", "q3", "q4"]
    assert all(q.points >= 1 and q.hint for q in s06.QUESTIONS)
