"""Tests of the T11 checks: each question accepts correct answers written in more than one way and
rejects the obvious wrong approach (weights keyed by position, a threshold chosen on the test split,
PR-AUC from hard predictions, ...) with a message that names it."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score
from sklearn.utils.class_weight import compute_class_weight

from tlcourse.checks import t11
from tlcourse.imbalance import choose_threshold
from tests.check_helpers import question_helpers

SEED = 1234


def weights_numpy(labels):
    classes, counts = np.unique(labels, return_counts=True)
    return dict(zip(classes.tolist(), (len(labels) / (len(classes) * counts)).tolist()))


def weights_sklearn(labels):
    classes = np.unique(labels)
    return dict(zip(classes, compute_class_weight("balanced", classes=classes, y=labels)))  # NumPy keys and values


def weights_enumerate(labels):
    return dict(enumerate(compute_class_weight("balanced", classes=np.unique(labels), y=labels)))


@pytest.fixture(scope="module")
def ref():
    return t11.reference()


@pytest.fixture(scope="module")
def namespace(ref):
    t, _ = choose_threshold(ref["y_va"], ref["m_va"])
    y_te, m_te = ref["y_te"], ref["m_te"]
    return dict(balanced_weights=weights_numpy, threshold=t, test_macro_f1=t11.macro_f1_at(y_te, m_te, t),
                majority_accuracy=float((y_te == 0).mean()),
                majority_macro_f1=f1_score(y_te, np.zeros_like(y_te), average="macro", zero_division=0),
                test_pr_auc=average_precision_score(y_te, m_te), answer_q4="b")


grade, passes, fails = question_helpers(t11, SEED)


def test_points_come_from_the_questions():
    assert [(q.name, q.points) for q in t11.QUESTIONS] == [("q1", 2), ("q2", 2), ("q3", 1), ("q4", 1)]


# ---------------------------------------------------------------- q1
@pytest.mark.parametrize("fn", [weights_numpy, weights_sklearn])
def test_q1_accepts_the_weights_written_several_ways(namespace, fn):
    passes(namespace, "q1", balanced_weights=fn)


def test_q1_names_the_enumerate_mistake(namespace):
    fails(namespace, "q1", "keyed by their position (dict(enumerate(weights)))", balanced_weights=weights_enumerate)


def test_q1_names_other_wrong_weights(namespace):
    def frequencies(labels):
        c, n = np.unique(labels, return_counts=True)
        return dict(zip(c.tolist(), (n / len(labels)).tolist()))

    def inverse_counts(labels):
        c, n = np.unique(labels, return_counts=True)
        return dict(zip(c.tolist(), (1 / n).tolist()))

    fails(namespace, "q1", "class frequencies n_c / N", balanced_weights=frequencies)
    fails(namespace, "q1", "1 / n_c but not normalised", balanced_weights=inverse_counts)
    fails(namespace, "q1", "should return a dict", balanced_weights=lambda labels: [1.0, 2.0])
    fails(namespace, "q1", "NotImplementedError",
          balanced_weights=lambda labels: (_ for _ in ()).throw(NotImplementedError("replace this line")))
    fails(namespace, "q1", "expected N / (K n_c)",
          balanced_weights=lambda labels: {k: v + (0.1 if i == 0 else 0) for i, (k, v) in enumerate(weights_numpy(labels).items())})


# ---------------------------------------------------------------- q2
def test_q2_accepts_the_solution_and_any_threshold_in_the_best_interval(namespace, ref):
    passes(namespace, "q2")
    t, _ = choose_threshold(ref["y_va"], ref["m_va"])
    u = np.unique(ref["m_va"])
    lower = u[u < t].max()   # any threshold between the two margins around t decides the same way
    other = (lower + t) / 2
    passes(namespace, "q2", threshold=np.float32(other) if abs(np.float32(other) - other) < 1e-9 else other,
           test_macro_f1=torch.tensor(t11.macro_f1_at(ref["y_te"], ref["m_te"], other), dtype=torch.float64))


def test_q2_rejects_a_threshold_chosen_on_the_test_split(namespace, ref):
    on_test, _ = choose_threshold(ref["y_te"], ref["m_te"])
    assert t11.macro_f1_at(ref["y_va"], ref["m_va"], on_test) < choose_threshold(ref["y_va"], ref["m_va"])[1] - 1e-9
    fails(namespace, "q2", "best threshold on the TEST split", threshold=on_test,
          test_macro_f1=t11.macro_f1_at(ref["y_te"], ref["m_te"], on_test))


def test_q2_rejects_the_default_threshold_and_misreported_scores(namespace, ref):
    fails(namespace, "q2", "the default decision", threshold=0.0,
          test_macro_f1=t11.macro_f1_at(ref["y_te"], ref["m_te"], 0.0))
    t = namespace["threshold"]
    fails(namespace, "q2", "VALIDATION macro-F1", test_macro_f1=t11.macro_f1_at(ref["y_va"], ref["m_va"], t))
    fails(namespace, "q2", "default threshold 0", test_macro_f1=t11.macro_f1_at(ref["y_te"], ref["m_te"], 0.0))
    fails(namespace, "q2", "on the test split", test_macro_f1=namespace["test_macro_f1"] - 0.01)
    fails(namespace, "q2", "should be a number", threshold="0.5")
    fails(namespace, "q2", "try every candidate", threshold=float(ref["m_va"].max()) + 1)


# ---------------------------------------------------------------- q3
def test_q3_accepts_the_solution(namespace):
    passes(namespace, "q3")
    passes(namespace, "q3", majority_macro_f1=np.float64(namespace["majority_macro_f1"]),
           test_pr_auc=torch.tensor(namespace["test_pr_auc"]))


def test_q3_names_the_usual_metric_mistakes(namespace, ref):
    y, m = ref["y_te"], ref["m_te"]
    fails(namespace, "q3", "hard predictions", test_pr_auc=average_precision_score(y, (m >= 0).astype(int)))
    fails(namespace, "q3", "is the ROC-AUC", test_pr_auc=roc_auc_score(y, m))
    fails(namespace, "q3", "F1 of the E alone", majority_macro_f1=f1_score(y, np.zeros_like(y), zero_division=0))
    fails(namespace, "q3", "majority_accuracy", majority_accuracy=0.5)
    fails(namespace, "q3", "a fraction in [0, 1]", majority_accuracy=98.0)


# ---------------------------------------------------------------- q4
@pytest.mark.parametrize("answer", ["b", "B", " b ", "(b)"])
def test_q4_accepts_the_right_choice_in_any_spelling(namespace, answer):
    passes(namespace, "q4", answer_q4=answer)


def test_q4_teaches_without_giving_the_answer_away(namespace):
    for wrong in ("a", "c", "D"):
        result = fails(namespace, "q4", "not '", answer_q4=wrong)
        assert t11.Q4_CHOICES["b"] not in result.message and "'b'" not in result.message
    fails(namespace, "q4", "choose one of", answer_q4="e")
    fails(namespace, "q4", "one letter as a string", answer_q4=...)
