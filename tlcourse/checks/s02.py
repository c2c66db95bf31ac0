"""Checks for exercise S02 (adversarial domain adaptation): the gradient-reversal layer written as a
``torch.autograd.Function``, the per-step lambda schedule of a whole run, and one question on why
DANN's gain shrinks against the target-BatchNorm control.

Every ``collect`` runs in the student's kernel and returns plain data; every ``grade`` runs in the
trusted process and recomputes what it compares with from the seed alone (the inputs are drawn from
it; the references are written here from the formulas). Nothing in the student's namespace is trusted.

- **q1** (2 points) ``reverse(x, lambda_)``. *collect*: on four float64 inputs drawn from the seed,
  with lambda 0.5, 1, 2 and 0.1, the forward values, the gradient that reaches ``x`` after
  ``(w * reverse(x, lambda_)).sum().backward()`` for a seeded ``w``, and the same with an in-place
  ReLU right after the layer (as a discriminator built with ``nn.ReLU(inplace=True)`` does).
  *grade*: forward must equal ``x``; the gradient must be ``-lambda * w`` (and
  ``-lambda * w * (x > 0)`` through the ReLU). A missing minus, a gradient not scaled by lambda,
  a detached output, and a view (or the input returned as it is) that the in-place ReLU breaks are
  recognised and named.
- **q2** (2 points) ``lambda_per_step(steps_per_epoch, epochs)``: the list of lambda values of
  every optimiser step of a run, ``2 / (1 + exp(-10 p)) - 1`` with ``p`` the fraction of *steps*
  done. Any of ``p = k / K``, ``(k + 1) / K`` or ``k / (K - 1)`` is accepted (``K`` steps in all).
  The per-epoch staircase, the learning-rate annealing ``(1 + 10 p) ** -0.75`` and a missing
  ``gamma = 10`` are recognised and named.
- **q3** (1 point) ``answer_q3``: a choice, checked by letter.
- **q4** (1 point) ``choose_without_target_labels(table)``: model selection without target labels.
  *collect*: the student's rule on six candidate tables drawn from the seed (a ``pandas.DataFrame``
  indexed by candidate, columns ``source_val_acc``, ``target_entropy``, ``oracle_acc``,
  ``test_acc``), and again on each with the two target-label columns permuted. *grade*: the choice
  must not move when only those columns move (else it reads target labels), and must be the
  lowest ``target_entropy`` among the candidates within 0.05 of the best ``source_val_acc``
  (the guard keeps a model that forgot the source task out). Reading the target labels, picking by source
  accuracy alone or by entropy without the guard is recognised and named.
"""
from __future__ import annotations

import math
import numbers

import numpy as np
import torch

from tlcourse.grading import Question
from tlcourse.grading.choice import choice_question

Q1_LAMBDAS = (0.5, 1.0, 2.0, 0.1)
_SHAPE = (6, 4)
_NOT_PLAIN = "<not plain data: "


def _kind(value) -> str:
    kind = type(value).__name__
    if kind == "ellipsis":
        return "`...`, the exercise's placeholder"
    return f"{'an' if kind[:1].lower() in 'aeiou' else 'a'} {kind}"


# ---------------------------------------------------------------- q1
def q1_inputs(seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The (x, w) float64 pairs of every q1 case, shape (6, 4), drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    return [(torch.tensor(rng.standard_normal(_SHAPE)), torch.tensor(rng.standard_normal(_SHAPE)))
            for _ in Q1_LAMBDAS]


def _as_list(t) -> list | None:
    return None if t is None else t.detach().double().cpu().tolist()


def _collect_grl(ns, seed):
    fn = ns["reverse"]
    cases = []
    for lam, (x0, w) in zip(Q1_LAMBDAS, q1_inputs(seed)):
        x = x0.clone().requires_grad_(True)
        try:
            y = fn(x, lam)
        except NotImplementedError:
            return {"error": "reverse raises NotImplementedError: replace the placeholder with your code"}
        except Exception as exc:  # noqa: BLE001 - reported to the student
            return {"error": f"reverse(x, {lam}) raised {type(exc).__name__}: {str(exc)[:200]}"}
        if not isinstance(y, torch.Tensor):
            return {"error": f"reverse(x, {lam}) returned {_kind(y)}; it must return a tensor"}
        if y.shape != x.shape:
            return {"error": f"reverse(x, {lam}) returned shape {tuple(y.shape)}; it must keep the shape "
                             f"{tuple(x.shape)} (the forward pass is the identity)"}
        case = {"lam": lam, "forward": _as_list(y), "requires_grad": bool(y.requires_grad), "grad": None}
        try:
            if y.requires_grad:
                (w * y).sum().backward()
                case["grad"] = _as_list(x.grad)
        except Exception as exc:  # noqa: BLE001
            return {"error": f"backward through reverse(x, {lam}) raised {type(exc).__name__}: {str(exc)[:200]}"}
        # features come out of a layer (not a leaf); the discriminator may start with ReLU(inplace=True)
        x2 = x0.clone().requires_grad_(True)
        try:
            z = torch.relu_(fn(x2 * 1.0, lam))
            (w * z).sum().backward()
            case["inplace_error"], case["inplace_grad"] = None, _as_list(x2.grad)
        except Exception as exc:  # noqa: BLE001
            case["inplace_error"], case["inplace_grad"] = f"{type(exc).__name__}: {str(exc)[:160]}", None
        cases.append(case)
    return {"cases": cases}


def _same(got, want) -> bool:
    if got is None:
        return False
    got = np.asarray(got, dtype=float)
    return got.shape == want.shape and bool(np.allclose(got, want, rtol=1e-5, atol=1e-6))


def _grade_grl(answer, seed):
    assert isinstance(answer, dict), "the collected answer is malformed: run the notebook's cells in order"
    assert "error" not in answer, answer.get("error")
    cases = answer.get("cases")
    assert isinstance(cases, list) and len(cases) == len(Q1_LAMBDAS), "the collected answer is malformed"
    for case, lam, (x0, w) in zip(cases, Q1_LAMBDAS, q1_inputs(seed)):
        x, w = x0.numpy(), w.numpy()
        forward = np.asarray(case["forward"], dtype=float)
        assert forward.shape == x.shape, (
            f"reverse(x, {lam}) returned shape {forward.shape}; it must keep the shape {x.shape}")
        assert np.allclose(forward, x, rtol=1e-6, atol=1e-7), (
            f"reverse(x, {lam}) changes the values: the forward pass must be the identity (return a copy "
            "of x, e.g. x.clone()), only the backward pass is reversed")
        assert case["requires_grad"] and case["grad"] is not None, (
            f"no gradient reaches x through reverse(x, {lam}): the output is detached from the graph "
            "(do not return x.detach() or a new tensor built from numbers; use torch.autograd.Function "
            "with a forward and a backward)")
        grad = case["grad"]
        if not _same(grad, -lam * w):
            if _same(grad, lam * w):
                raise AssertionError(f"the gradient through reverse(x, {lam}) is +{lam} times the incoming "
                                     "one: the minus sign is missing, so the features would help the "
                                     "discriminator instead of fooling it. backward returns -lambda_ * grad_output")
            if _same(grad, w):
                raise AssertionError(f"the gradient passes through reverse(x, {lam}) unchanged: backward must "
                                     "return -lambda_ * grad_output, not grad_output")
            if _same(grad, -w):
                raise AssertionError(f"the gradient through reverse(x, {lam}) is flipped but not scaled: "
                                     "multiply it by lambda_ as well (-lambda_ * grad_output)")
            raise AssertionError(f"the gradient through reverse(x, {lam}) is not -{lam} times the incoming "
                                 "gradient on random inputs; backward must return (-lambda_ * grad_output, None)")
        if case["inplace_error"] is not None:
            raise AssertionError(
                "reverse works alone, but an in-place ReLU right after it (nn.ReLU(inplace=True), common at "
                f"the start of a discriminator) fails: {case['inplace_error'][:110]}... Your forward returns a "
                "view of its input (x.view_as(x)) or the input itself; return a copy, x.clone()")
        assert _same(case["inplace_grad"], -lam * w * (x > 0)), (
            f"through reverse(x, {lam}) followed by an in-place ReLU the gradient should be "
            f"-{lam} * w where x > 0 and 0 elsewhere; it is not")


# ---------------------------------------------------------------- q2
def q2_cases(seed: int) -> list[tuple[int, int]]:
    """(steps_per_epoch, epochs) of every q2 case, drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    return [(int(rng.integers(7, 60)), int(rng.integers(2, 7))) for _ in range(3)]


def _ramp(p, gamma=10.0):
    return 2.0 / (1.0 + np.exp(-gamma * np.asarray(p, dtype=float))) - 1.0


def _schedules(steps_per_epoch: int, epochs: int) -> dict:
    total = steps_per_epoch * epochs
    k = np.arange(total)
    per_epoch = k // steps_per_epoch
    right = {"p = k / K": _ramp(k / total), "p = (k + 1) / K": _ramp((k + 1) / total),
             "p = k / (K - 1)": _ramp(k / max(total - 1, 1))}
    wrong = {
        "lambda only changes once per epoch (a staircase): recompute it at every optimiser step from "
        "p = step / total_steps, as Ganin et al. do": [_ramp(per_epoch / epochs), _ramp((per_epoch + 1) / epochs),
                                                       _ramp(per_epoch / max(epochs - 1, 1))],
        "this is the learning-rate annealing (1 + 10 p) ** -0.75, which falls from 1; the lambda schedule "
        "rises from 0 to 1: 2 / (1 + exp(-10 p)) - 1": [(1 + 10 * k / total) ** -0.75,
                                                        (1 + 10 * (k + 1) / total) ** -0.75],
        "the ramp is missing gamma = 10: use 2 / (1 + exp(-10 p)) - 1": [_ramp(k / total, 1.0),
                                                                          _ramp((k + 1) / total, 1.0)],
        "p is the step count itself, not the fraction of training done: p = step / total_steps, in [0, 1]":
            [_ramp(k), _ramp(k + 1)],
    }
    return {"right": right, "wrong": wrong, "total": total}


def _numbers(values):
    if isinstance(values, (torch.Tensor, np.ndarray)):
        return np.asarray(values.tolist() if isinstance(values, torch.Tensor) else values, dtype=float).ravel().tolist()
    if isinstance(values, (list, tuple)):
        out = []
        for v in values:
            if isinstance(v, torch.Tensor) and v.ndim == 0:
                v = v.item()
            if isinstance(v, bool) or not isinstance(v, (numbers.Real, np.generic)):
                return f"{_NOT_PLAIN}a list holding {_kind(v)}>"
            out.append(float(v))
        return out
    return f"{_NOT_PLAIN}{_kind(values)}>"


def _collect_schedule(ns, seed):
    fn = ns["lambda_per_step"]
    out = []
    for spe, epochs in q2_cases(seed):
        try:
            out.append(_numbers(fn(spe, epochs)))
        except NotImplementedError:
            return {"error": "lambda_per_step raises NotImplementedError: replace the placeholder with your code"}
        except Exception as exc:  # noqa: BLE001
            return {"error": f"lambda_per_step({spe}, {epochs}) raised {type(exc).__name__}: {str(exc)[:200]}"}
    return {"values": out}


def _matches(got: np.ndarray, want) -> bool:
    want = np.asarray(want, dtype=float)
    return got.shape == want.shape and bool(np.allclose(got, want, rtol=1e-6, atol=1e-9))


def _grade_schedule(answer, seed):
    assert isinstance(answer, dict), "the collected answer is malformed: run the notebook's cells in order"
    assert "error" not in answer, answer.get("error")
    values = answer.get("values")
    assert isinstance(values, list) and len(values) == 3, "the collected answer is malformed"
    for got, (spe, epochs) in zip(values, q2_cases(seed)):
        if isinstance(got, str):
            raise AssertionError(f"lambda_per_step({spe}, {epochs}) returned {got[len(_NOT_PLAIN):-1]}; "
                                 "return a list of floats, one per optimiser step")
        ref = _schedules(spe, epochs)
        assert len(got) == ref["total"], (
            f"lambda_per_step({spe}, {epochs}) returned {len(got)} values; a run of {epochs} epochs of "
            f"{spe} steps takes {ref['total']} optimiser steps, one lambda each")
        arr = np.asarray(got, dtype=float)
        if any(_matches(arr, want) for want in ref["right"].values()):
            continue
        for mistake, variants in ref["wrong"].items():
            if any(_matches(arr, want) for want in variants):
                raise AssertionError(f"lambda_per_step({spe}, {epochs}): {mistake}")
        first, last = arr[0], arr[-1]
        raise AssertionError(
            f"lambda_per_step({spe}, {epochs}) is off: it runs from {first:.4f} to {last:.4f}; expected "
            f"2 / (1 + exp(-10 p)) - 1 with p = step / {ref['total']}, from 0 to about {_ramp(1.0):.4f}")


# ---------------------------------------------------------------- q3
Q3_CHOICES = {
    "a": "The target-BN control reads the target labels to re-estimate BatchNorm, so it is an oracle "
         "that DANN cannot be expected to match.",
    "b": "DANN feeds source and target images through the extractor in one batch, so its BatchNorm "
         "layers normalise target images with statistics that include the target; the plain source-only "
         "network uses source statistics. Re-estimating them on unlabelled target images gives the "
         "source-only network most of that benefit, leaving only the adversarial part of DANN's gain.",
    "c": "The discriminator never reaches 50 % accuracy in so few steps, so DANN's alignment has not "
         "happened yet; with longer training DANN would leave the control far behind.",
    "d": "Re-estimating BatchNorm changes the network's weights towards the target, a form of "
         "fine-tuning, so the control is not a fair baseline.",
}
_Q3_ANSWER = "b"
_Q3_FEEDBACK = {
    "a": "the control uses no labels at all: it passes unlabelled target images through the network in "
         "training mode and keeps the running means and variances. What does DANN's own forward pass give "
         "its BatchNorm layers?",
    "c": "the chapter's discriminator hovers near chance during training, and the full benchmark "
         "(600 steps, and the same ordering on three shifts) still finds DANN within noise of the control. "
         "What else changes between a source-only network and DANN?",
    "d": "AdaBN changes buffers (running mean and variance), not weights, and takes no gradient step; "
         "think about which statistics normalise the target images in each arm.",
}


# ---------------------------------------------------------------- q4
Q4_TOLERANCE = 0.05
Q4_NAMES = ("source_only", "target_bn", "dann", "cdan", "dann_half_lambda")
Q4_COLUMNS = ("source_val_acc", "target_entropy", "oracle_acc", "test_acc")


def q4_tables(seed: int) -> list[dict[str, dict[str, float]]]:
    """Six candidate tables ``{name: {column: value}}`` drawn from ``seed``.

    In the first, the candidate with the lowest target entropy fails the source guard (its source
    validation accuracy is 0.08 below the best), so a rule without the guard is caught.
    """
    rng = np.random.default_rng(seed)
    tables = []
    for i in range(6):
        rows = {name: {"source_val_acc": float(rng.uniform(0.93, 0.99)),
                       "target_entropy": float(rng.uniform(0.3, 1.2)),
                       "oracle_acc": float(rng.uniform(0.4, 0.9)),
                       "test_acc": float(rng.uniform(0.4, 0.9))} for name in Q4_NAMES}
        if i == 0:
            best = max(r["source_val_acc"] for r in rows.values())
            victim = Q4_NAMES[int(rng.integers(len(Q4_NAMES)))]
            rows[victim]["source_val_acc"] = best - 0.08
            rows[victim]["target_entropy"] = 0.1
        tables.append(rows)
    return tables


def _frame(rows):
    import pandas as pd

    return pd.DataFrame.from_dict(rows, orient="index")[list(Q4_COLUMNS)]


def _reference_choice(rows, tolerance=Q4_TOLERANCE) -> str:
    best = max(r["source_val_acc"] for r in rows.values())
    allowed = {n: r for n, r in rows.items() if r["source_val_acc"] >= best - tolerance}
    return min(allowed, key=lambda n: allowed[n]["target_entropy"])


def _collect_selection(ns, seed):
    fn = ns["choose_without_target_labels"]
    out = {"choices": [], "shuffled": []}
    rng = np.random.default_rng(seed + 1)
    for rows in q4_tables(seed):
        # the same table with the target-label columns permuted: a legal rule cannot notice
        perm = rng.permutation(len(Q4_NAMES))
        names = list(rows)
        shuffled = {n: {**rows[n], "oracle_acc": rows[names[j]]["oracle_acc"],
                        "test_acc": rows[names[j]]["test_acc"]} for n, j in zip(names, perm)}
        for key, table in (("choices", rows), ("shuffled", shuffled)):
            try:
                choice = fn(_frame(table))
            except NotImplementedError:
                return {"error": "choose_without_target_labels raises NotImplementedError: replace the "
                                 "placeholder with your code"}
            except Exception as exc:  # noqa: BLE001
                return {"error": f"choose_without_target_labels raised {type(exc).__name__}: {str(exc)[:200]}"}
            out[key].append(choice if isinstance(choice, str) else f"{_NOT_PLAIN}{_kind(choice)}>")
    return out


def _grade_selection(answer, seed):
    assert isinstance(answer, dict), "the collected answer is malformed: run the notebook's cells in order"
    assert "error" not in answer, answer.get("error")
    tables = q4_tables(seed)
    choices, shuffled = answer.get("choices"), answer.get("shuffled")
    assert isinstance(choices, list) and isinstance(shuffled, list) and len(choices) == len(tables) == len(shuffled), (
        "the collected answer is malformed")
    for c in choices:
        assert not c.startswith(_NOT_PLAIN), (
            f"choose_without_target_labels returned {c[len(_NOT_PLAIN):-1]}; return the chosen row's index "
            f"label, a string such as 'dann'")
        assert c in Q4_NAMES, f"choose_without_target_labels returned {c!r}, which is not a row of the table"
    if choices != shuffled:
        raise AssertionError("your choice changes when only the oracle_acc and test_acc columns are shuffled: "
                             "it reads target labels. Choose from source_val_acc and target_entropy only")
    for rows, got in zip(tables, choices):
        want = _reference_choice(rows)
        if got == want:
            continue
        if got == min(rows, key=lambda n: rows[n]["target_entropy"]):
            raise AssertionError(
                f"you pick the lowest target entropy over all candidates, but {got!r} has source validation "
                f"accuracy {rows[got]['source_val_acc']:.3f}, more than {Q4_TOLERANCE} below the best: apply "
                "the source guard first, then the entropy")
        if got == max(rows, key=lambda n: rows[n]["source_val_acc"]):
            raise AssertionError("you pick the best source validation accuracy: it is blind to the shift "
                                 "(the chapter's step 5); use it only as a guard, then take the lowest entropy")
        raise AssertionError(
            f"on one table you chose {got!r}, expected {want!r}: keep the candidates whose source_val_acc is "
            f"within {Q4_TOLERANCE} of the best, then take the lowest target_entropy")


QUESTIONS = [
    Question("q1", points=2, names=("reverse",), collect=_collect_grl, grade=_grade_grl,
             hint="class GradReverse(torch.autograd.Function): forward(ctx, x, lambda_) saves lambda_ on ctx "
                  "and returns x.clone(); backward(ctx, g) returns (-ctx.lambda_ * g, None). "
                  "reverse = lambda x, lambda_: GradReverse.apply(x, lambda_)"),
    Question("q2", points=2, names=("lambda_per_step",), collect=_collect_schedule, grade=_grade_schedule,
             hint="K = steps_per_epoch * epochs; [2 / (1 + math.exp(-10 * k / K)) - 1 for k in range(K)]"),
    choice_question("q3", "answer_q3", choices=Q3_CHOICES, answer=_Q3_ANSWER,
                    feedback=_Q3_FEEDBACK, points=1,
                    hint="Compare the chapter's source-only, target-BN and DANN rows, and ask which statistics "
                  "normalise a target image in each."),
    Question("q4", points=1, names=("choose_without_target_labels",), collect=_collect_selection,
             grade=_grade_selection,
             hint="ok = t[t.source_val_acc >= t.source_val_acc.max() - 0.05]; return ok.target_entropy.idxmin()"),
]

assert math.isclose(_ramp(0.0), 0.0)
