"""Tests of the T13 checks: each question accepts correct answers written in more than one way and
rejects the obvious wrong approach (the seed errors of the chapter) with a message that names it."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from tlcourse.checks import t13
from tlcourse.distill import distillation_loss
from tlcourse.distill_demo import accuracy, digits_splits, train_student, train_teacher
from tlcourse.train import predict
from tests.check_helpers import question_helpers

SEED = 1234


# ---------------------------------------------------------------- answers, right and wrong
def kd_loss(s, t, y, T, alpha):
    """The solution's way: nn.KLDivLoss on log-probabilities and probabilities, batchmean."""
    soft = nn.KLDivLoss(reduction="batchmean")(F.log_softmax(s / T, dim=1), F.softmax(t / T, dim=1))
    return alpha * T ** 2 * soft + (1 - alpha) * F.cross_entropy(s, y)


def kd_loss_by_hand(s, t, y, T, alpha):
    """Another way: the KL written out, log-targets, NumPy float64 result."""
    log_p, log_q = torch.log_softmax(s / T, 1), torch.log_softmax(t / T, 1)
    kl = (log_q.exp() * (log_q - log_p)).sum(1).mean()
    ce = -torch.log_softmax(s, 1).gather(1, y[:, None]).mean()
    return np.float64(alpha * T ** 2 * kl.item() + (1 - alpha) * ce.item())


def kd_loss_package(s, t, y, T, alpha):
    return distillation_loss(s, t, y, temperature=T, alpha=alpha)


def no_t_squared(s, t, y, T, alpha):
    return kd_loss(s, t, y, T, alpha) - alpha * (T ** 2 - 1) * nn.KLDivLoss(reduction="batchmean")(
        F.log_softmax(s / T, 1), F.softmax(t / T, 1))


def probabilities_as_input(s, t, y, T, alpha):
    soft = nn.KLDivLoss(reduction="batchmean")(F.softmax(s / T, dim=1), F.softmax(t / T, dim=1))
    return alpha * T ** 2 * soft + (1 - alpha) * F.cross_entropy(s, y)


def reduction_mean(s, t, y, T, alpha):
    soft = nn.KLDivLoss(reduction="mean")(F.log_softmax(s / T, dim=1), F.softmax(t / T, dim=1))
    return alpha * T ** 2 * soft + (1 - alpha) * F.cross_entropy(s, y)


def reversed_kl(s, t, y, T, alpha):
    soft = nn.KLDivLoss(reduction="batchmean")(F.log_softmax(t / T, dim=1), F.softmax(s / T, dim=1))
    return alpha * T ** 2 * soft + (1 - alpha) * F.cross_entropy(s, y)


def unsoftened_student(s, t, y, T, alpha):
    soft = nn.KLDivLoss(reduction="batchmean")(F.log_softmax(s, dim=1), F.softmax(t / T, dim=1))
    return alpha * T ** 2 * soft + (1 - alpha) * F.cross_entropy(s, y)


def alpha_swapped(s, t, y, T, alpha):
    return kd_loss(s, t, y, T, 1 - alpha)


def summed_batch(s, t, y, T, alpha):
    soft = nn.KLDivLoss(reduction="sum")(F.log_softmax(s / T, dim=1), F.softmax(t / T, dim=1))
    return alpha * T ** 2 * soft + (1 - alpha) * F.cross_entropy(s, y)


@pytest.fixture(scope="module")
def sweep():
    """The solution's question 2, computed here the way the notebook does."""
    splits = digits_splits(seed=t13.SPLIT_SEED)
    teacher = train_teacher(*splits["transfer"], seed=t13.SPLIT_SEED)
    x_lab, y_lab = splits["labelled"]
    stored = predict(teacher, x_lab)
    students = {T: train_student(x_lab, y_lab, stored, seed=0, temperature=T, alpha=0.9)[0] for T in t13.TEMPERATURES}
    return {"val": {T: accuracy(m, *splits["val"]) for T, m in students.items()},
            "test": {T: accuracy(m, *splits["test"]) for T, m in students.items()}}


@pytest.fixture(scope="module")
def namespace(sweep):
    val = sweep["val"]
    best = max(val, key=val.get)
    return dict(kd_loss=kd_loss, val_acc_by_T=dict(val), best_T=best, best_T_test_acc=sweep["test"][best],
                answer_q3="b")


grade, passes, fails = question_helpers(t13, SEED)


def test_points_come_from_the_questions():
    assert [(q.name, q.points) for q in t13.QUESTIONS] == [("q1", 2), ("q2", 2), ("q3", 1)]


# ---------------------------------------------------------------- q1
@pytest.mark.parametrize("fn", [kd_loss, kd_loss_by_hand, kd_loss_package])
def test_q1_accepts_the_loss_written_several_ways(namespace, fn):
    for seed in (0, 1, SEED):
        result = grade(namespace, "q1", seed=seed, kd_loss=fn)
        assert result.passed, result.message


@pytest.mark.parametrize("wrong, words", [
    (no_t_squared, "T**2 factor is missing"),
    (probabilities_as_input, "got probabilities as its input"),
    (reduction_mean, "reduction='mean'"),
    (reversed_kl, "KL(student || teacher)"),
    (unsoftened_student, "not divided by the temperature"),
    (alpha_swapped, "alpha weighs the wrong term"),
    (summed_batch, "reduction='sum'"),
])
def test_q1_names_each_classic_mistake(namespace, wrong, words):
    fails(namespace, "q1", words, kd_loss=wrong)


def test_q1_rejects_other_wrong_answers_with_a_useful_message(namespace):
    fails(namespace, "q1", "expected", kd_loss=lambda s, t, y, T, a: kd_loss(s, t, y, T, a) + 0.01)
    fails(namespace, "q1", "NotImplementedError",
          kd_loss=lambda *a: (_ for _ in ()).throw(NotImplementedError("replace this line")))
    fails(namespace, "q1", "raised RuntimeError", kd_loss=lambda s, t, y, T, a: s.view(3, -1).sum())
    fails(namespace, "q1", "return a scalar", kd_loss=lambda s, t, y, T, a: F.log_softmax(s, 1))


def test_q1_inputs_depend_on_the_seed():
    a, b = t13.q1_inputs(0), t13.q1_inputs(1)
    assert not torch.equal(a[0][0], b[0][0]) and torch.equal(a[0][0], t13.q1_inputs(0)[0][0])


# ---------------------------------------------------------------- q2
def test_q2_accepts_the_solution_and_other_spellings(namespace, sweep):
    passes(namespace, "q2")
    val = {np.int64(T): np.float32(v) for T, v in sweep["val"].items()}
    best = sorted(sweep["val"].items(), key=lambda kv: kv[1])[-1][0]
    passes(namespace, "q2", val_acc_by_T=val, best_T=float(best),
           best_T_test_acc=torch.tensor(sweep["test"][best]))


def test_q2_reference_is_the_setting_the_docstring_describes(sweep):
    ref = t13.reference_sweep()
    assert ref["val"] == sweep["val"] and ref["test"] == sweep["test"]  # the same seeded students
    val_best = max(ref["val"], key=ref["val"].get)
    test_best = max(ref["test"], key=ref["test"].get)
    assert (val_best, test_best) == (4, 16)  # what makes choosing on the test split detectable


def test_q2_rejects_a_temperature_chosen_on_the_test_split(namespace, sweep):
    on_test = max(sweep["test"], key=sweep["test"].get)
    assert on_test != namespace["best_T"]
    fails(namespace, "q2", "choose T on the validation split", best_T=on_test,
          best_T_test_acc=sweep["test"][on_test])
    # the same choice dressed up as validation: the "validation" accuracies measured on the test split
    fails(namespace, "q2", "accuracy on the TEST split", val_acc_by_T=dict(sweep["test"]), best_T=on_test,
          best_T_test_acc=sweep["test"][on_test])


def test_q2_rejects_the_validation_accuracy_reported_as_test_accuracy(namespace, sweep):
    best = namespace["best_T"]
    assert abs(sweep["val"][best] - sweep["test"][best]) > 1.01 / 497
    fails(namespace, "q2", "is the validation accuracy", best_T_test_acc=sweep["val"][best])
    fails(namespace, "q2", "test images", best_T_test_acc=sweep["test"][best] + 3 / 497)


def test_q2_rejects_malformed_or_wrong_sweeps(namespace, sweep):
    fails(namespace, "q2", "one entry per temperature", val_acc_by_T={1: 0.9, 4: 0.9})
    fails(namespace, "q2", "one entry per temperature", val_acc_by_T={str(T): v for T, v in sweep["val"].items()})
    fails(namespace, "q2", "should be a dict", val_acc_by_T=[0.9] * 3)
    fails(namespace, "q2", "scores", val_acc_by_T={T: v - 0.02 for T, v in sweep["val"].items()})
    fails(namespace, "q2", "one of the temperatures", best_T=8)
    fails(namespace, "q2", "float accuracy", best_T_test_acc=...)


# ---------------------------------------------------------------- q3
@pytest.mark.parametrize("answer", ["b", "B", " b ", "b\n"])
def test_q3_accepts_the_right_choice_in_any_spelling(namespace, answer):
    passes(namespace, "q3", answer_q3=answer)


def test_q3_teaches_without_giving_the_answer_away(namespace):
    for wrong in ("a", "C", "d"):
        result = fails(namespace, "q3", "not '", answer_q3=wrong)
        assert t13.Q3_CHOICES["b"] not in result.message and "'b'" not in result.message
    fails(namespace, "q3", "choose one of", answer_q3="e")
    fails(namespace, "q3", "one letter as a string", answer_q3=2)
    fails(namespace, "q3", "one letter as a string", answer_q3=...)
    fails(namespace, "q3", "one letter as a string", answer_q3=["b"])
