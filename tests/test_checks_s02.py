"""Tests of the S02 checks: each question accepts correct answers written in more than one way and
rejects the obvious wrong approach (the seed errors of the chapter) with a message that names it."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tlcourse.checks import s02
from tlcourse.dann import dann_lambda, dann_lr, grad_reverse
from tlcourse.grading.feedback import evaluate_question

SEED = 1234


# ---------------------------------------------------------------- q1 answers, right and wrong
def _function(forward, backward):
    """A torch.autograd.Function built from a forward(x) and a backward(lambda_, grad) rule."""

    class _F(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, lambda_):
            ctx.lambda_ = lambda_
            return forward(x)

        @staticmethod
        def backward(ctx, grad_output):
            return backward(ctx.lambda_, grad_output), None

    return lambda x, lambda_: _F.apply(x, lambda_)


reverse_clone = _function(lambda x: x.clone(), lambda lam, g: -lam * g)
reverse_neg_copy = _function(lambda x: x * 1.0, lambda lam, g: g.neg() * lam)


def reverse_by_hook(x, lambda_):
    """Another correct way: an identity op with a gradient hook."""
    y = x + 0.0
    y.register_hook(lambda g: -lambda_ * g)
    return y


def reverse_detach_trick(x, lambda_):
    """And another: the value of x, the gradient of -lambda * x (no autograd.Function at all)."""
    return (1 + lambda_) * x.detach() - lambda_ * x


no_minus = _function(lambda x: x.clone(), lambda lam, g: lam * g)
unscaled = _function(lambda x: x.clone(), lambda lam, g: -g)
identity_backward = _function(lambda x: x.clone(), lambda lam, g: g)
as_view = _function(lambda x: x.view_as(x), lambda lam, g: -lam * g)
returns_input = _function(lambda x: x, lambda lam, g: -lam * g)


def grade(question, seed=SEED, **namespace):
    q = next(q for q in s02.QUESTIONS if q.name == question)
    return evaluate_question(q, namespace, seed, time_limit=None)


def passes(question, seed=SEED, **namespace):
    result = grade(question, seed, **namespace)
    assert result.passed, f"{question}: {result.message}"


def fails(question, words, seed=SEED, **namespace):
    result = grade(question, seed, **namespace)
    assert not result.passed, f"{question} passed although it should not"
    assert words in result.message, result.message
    return result


def test_points_come_from_the_questions():
    assert [(q.name, q.points) for q in s02.QUESTIONS] == [("q1", 2), ("q2", 2), ("q3", 1), ("q4", 1)]


@pytest.mark.parametrize("fn", [reverse_clone, reverse_neg_copy, reverse_by_hook, reverse_detach_trick,
                                grad_reverse])
def test_q1_accepts_the_layer_written_several_ways(fn):
    for seed in (0, 1, SEED):
        passes("q1", seed, reverse=fn)


@pytest.mark.parametrize("wrong, words", [
    (no_minus, "minus sign is missing"),
    (unscaled, "flipped but not scaled"),
    (identity_backward, "passes through reverse(x, 0.5) unchanged"),
    (as_view, "returns a view"),
    (returns_input, "returns a view"),
    (lambda x, lam: x.detach().clone(), "detached from the graph"),
    (lambda x, lam: -x, "forward pass must be the identity"),
])
def test_q1_names_each_classic_mistake(wrong, words):
    fails("q1", words, reverse=wrong)


def test_q1_rejects_other_wrong_answers_with_a_useful_message():
    fails("q1", "NotImplementedError", reverse=lambda *a: (_ for _ in ()).throw(NotImplementedError("todo")))
    fails("q1", "must return a tensor", reverse=lambda x, lam: x.tolist())
    fails("q1", "keep the shape", reverse=lambda x, lam: x.flatten())
    fails("q1", "not -0.5 times", reverse=_function(lambda x: x.clone(), lambda lam, g: -lam * g + 0.1))
    fails("q1", "define `reverse`")


def test_q1_inputs_depend_on_the_seed():
    a, b = s02.q1_inputs(0), s02.q1_inputs(1)
    assert not torch.equal(a[0][0], b[0][0]) and torch.equal(a[0][0], s02.q1_inputs(0)[0][0])


# ---------------------------------------------------------------- q2
def lambdas_loop(steps_per_epoch, epochs):
    total = steps_per_epoch * epochs
    return [2.0 / (1.0 + math.exp(-10.0 * k / total)) - 1.0 for k in range(total)]


def lambdas_package(steps_per_epoch, epochs):
    """Through tlcourse.dann.dann_lambda, as a NumPy array, progress counted after the step."""
    total = steps_per_epoch * epochs
    return np.array([dann_lambda((k + 1) / total) for k in range(total)], dtype=np.float32)


def lambdas_tensor(steps_per_epoch, epochs):
    p = torch.linspace(0, 1, steps_per_epoch * epochs, dtype=torch.float64)  # p = k / (K - 1)
    return 2 / (1 + torch.exp(-10 * p)) - 1


def per_epoch(steps_per_epoch, epochs):
    return [dann_lambda(e / epochs) for e in range(epochs) for _ in range(steps_per_epoch)]


def lr_instead(steps_per_epoch, epochs):
    total = steps_per_epoch * epochs
    return [dann_lr(k / total) / dann_lr(0.0) for k in range(total)]


@pytest.mark.parametrize("fn", [lambdas_loop, lambdas_package, lambdas_tensor])
def test_q2_accepts_the_schedule_written_several_ways(fn):
    for seed in (0, 1, SEED):
        passes("q2", seed, lambda_per_step=fn)


@pytest.mark.parametrize("wrong, words", [
    (per_epoch, "once per epoch"),
    (lr_instead, "learning-rate annealing"),
    (lambda spe, ep: [2 / (1 + math.exp(-k / (spe * ep))) - 1 for k in range(spe * ep)], "missing gamma = 10"),
    (lambda spe, ep: [2 / (1 + math.exp(-10 * k)) - 1 for k in range(spe * ep)], "fraction of training done"),
])
def test_q2_names_each_classic_mistake(wrong, words):
    fails("q2", words, lambda_per_step=wrong)


def test_q2_rejects_other_wrong_answers_with_a_useful_message():
    fails("q2", "optimiser steps, one lambda each", lambda_per_step=lambda spe, ep: lambdas_loop(spe, ep)[:-1])
    fails("q2", "optimiser steps, one lambda each", lambda_per_step=lambda spe, ep: lambdas_loop(spe, 1))
    fails("q2", "is off", lambda_per_step=lambda spe, ep: [v * 0.9 for v in lambdas_loop(spe, ep)])
    fails("q2", "list of floats", lambda_per_step=lambda spe, ep: "lambda")
    fails("q2", "raised ZeroDivisionError", lambda_per_step=lambda spe, ep: 1 / 0)


# ---------------------------------------------------------------- q3
@pytest.mark.parametrize("answer", ["b", "B", " b ", "b\n"])
def test_q3_accepts_the_right_choice_in_any_spelling(answer):
    passes("q3", answer_q3=answer)


def test_q3_teaches_without_giving_the_answer_away():
    for wrong in ("a", "C", "d"):
        result = fails("q3", "not '", answer_q3=wrong)
        assert s02.Q3_CHOICES["b"] not in result.message and "'b'" not in result.message
    fails("q3", "one of", answer_q3="e")
    fails("q3", "one letter as a string", answer_q3=2)
    fails("q3", "one letter as a string", answer_q3=...)


# ---------------------------------------------------------------- q4
def guarded_entropy(table):
    ok = table[table.source_val_acc >= table.source_val_acc.max() - 0.05]
    return ok.target_entropy.idxmin()


def guarded_entropy_loop(table):
    """Another way: plain Python over the rows, returning a NumPy string."""
    rows = table.to_dict(orient="index")
    best = max(r["source_val_acc"] for r in rows.values())
    allowed = [(r["target_entropy"], name) for name, r in rows.items() if r["source_val_acc"] >= best - 0.05]
    return np.str_(min(allowed)[1])


@pytest.mark.parametrize("fn", [guarded_entropy, guarded_entropy_loop])
def test_q4_accepts_the_rule_written_several_ways(fn):
    for seed in (0, 1, SEED):
        passes("q4", seed, choose_without_target_labels=fn)


@pytest.mark.parametrize("wrong, words", [
    (lambda t: t.oracle_acc.idxmax(), "reads target labels"),
    (lambda t: t.test_acc.idxmax(), "reads target labels"),
    (lambda t: (t.source_val_acc + t.oracle_acc).idxmax(), "reads target labels"),
    (lambda t: t.target_entropy.idxmin(), "apply the source guard first"),
    (lambda t: t.source_val_acc.idxmax(), "blind to the shift"),
])
def test_q4_names_each_classic_mistake(wrong, words):
    fails("q4", words, choose_without_target_labels=wrong)


def test_q4_rejects_other_wrong_answers_with_a_useful_message():
    fails("q4", "expected", choose_without_target_labels=lambda t: t.target_entropy.idxmax())
    fails("q4", "not a row", choose_without_target_labels=lambda t: "best")
    fails("q4", "return the chosen row's index", choose_without_target_labels=lambda t: t.index.get_loc("dann"))
    fails("q4", "NotImplementedError",
          choose_without_target_labels=lambda t: (_ for _ in ()).throw(NotImplementedError("todo")))


def test_q4_tables_catch_a_missing_guard():
    for seed in (0, 1, SEED):
        rows = s02.q4_tables(seed)[0]
        assert min(rows, key=lambda n: rows[n]["target_entropy"]) != s02._reference_choice(rows)
