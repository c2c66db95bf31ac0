"""Checks for exercise G06 (domain adaptation): the colour bridge built by hand, a bridged and a
direct fine-tuning run compared with the same budget, the DEV risk written by hand, and one
prediction about a bridge that is not between the domains.

Every ``collect`` runs in the student's kernel and returns plain data; every ``grade`` runs in the
trusted process and recomputes what it compares with from the seed and from data it loads itself
(:func:`tlcourse.bridge.mnist_to_mnistm`, :func:`tlcourse.bridge.train_stages`, seeded, on the CPU).

- **q1** (2 points) ``make_colour_bridge(digits, colours)``: on random digits and colours drawn
  from the seed it must return ``|c - d|`` per channel; the usual wrong recipes (``c + d``,
  ``c * d``, a grey copy, ``1 - |c - d|``) are named.
- **q2** (2 points) ``budget_direct``, ``budget_bridged`` (SGD steps after the source model),
  ``direct_acc`` and ``bridged_acc`` (MNIST-M test accuracy). Both budgets must be the exercise's
  200 steps; the accuracies must match the grader's own runs to a few test images. A bridged run
  given its bridge steps on top of direct fine-tuning's budget is refused by name.
- **q3** (2 points) ``dev(weights, losses)``: DEV of You et al. (2019) on random cases; IWCV (no
  control variate), the flipped sign of eta, and mixed ``ddof`` in Cov and Var are named.
- **q4** (1 point) ``answer_q4``: a prediction, checked by letter.
"""
from __future__ import annotations

import functools
import numbers

import numpy as np
import torch

from tlcourse.grading import Question
from tlcourse.grading.answers import NOT_PLAIN as _NOT_PLAIN, shown as _shown, scalar as _scalar
from tlcourse.grading.choice import choice_question

SPLIT_SEED = 0
SOURCE_STEPS, BRIDGE_STEPS, TARGET_STEPS = 200, 100, 100
BUDGET = BRIDGE_STEPS + TARGET_STEPS
LR = 0.01
N_TEST = 2000


def _call(fn, name, *args):
    try:
        return fn(*args), None
    except NotImplementedError:
        return None, f"{name} raises NotImplementedError: replace the placeholder with your code"
    except Exception as exc:  # noqa: BLE001 - reported to the student
        return None, f"{name} raised {type(exc).__name__}: {str(exc)[:200]}"


# ---------------------------------------------------------------- q1
def q1_inputs(seed: int):
    g = torch.Generator().manual_seed(seed)
    digits = (torch.rand(6, 1, 5, 5, generator=g) > 0.5).float() * torch.rand(6, 1, 5, 5, generator=g)
    return digits, torch.rand(6, 3, generator=g)


def _collect_bridge(ns, seed):
    d, c = q1_inputs(seed)
    out, err = _call(ns["make_colour_bridge"], "make_colour_bridge(digits, colours)", d.clone(), c.clone())
    if err:
        return {"error": err}
    if not isinstance(out, (torch.Tensor, np.ndarray)):
        return {"error": f"make_colour_bridge returned {type(out).__name__}; return a tensor (N, 3, H, W)"}
    return {"values": np.asarray(torch.as_tensor(out, dtype=torch.float64)).tolist()}


def _grade_bridge(answer, seed):
    assert isinstance(answer, dict), "the collected answer is malformed: run the notebook's cells in order"
    assert "error" not in answer, answer.get("error")
    got = np.asarray(answer["values"], dtype=float)
    d, c = (t.double().numpy() for t in q1_inputs(seed))
    c4 = c[:, :, None, None]
    assert got.shape == (len(d), 3, *d.shape[2:]), (
        f"make_colour_bridge returned shape {got.shape}, expected {(len(d), 3, *d.shape[2:])}: one colour channel per "
        "channel of `colours`")
    right = np.abs(c4 - d)
    if np.allclose(got, right, atol=1e-5):
        return
    wrong = {"the background colour is added to the digit (c + d): MNIST-M takes the absolute difference |c - d|, "
             "which makes the digit dark on a light background": np.clip(c4 + d, 0, 1),
             "the digit is multiplied by the colour (c * d): the background would stay black": c4 * d,
             "the image is still grey (the digit repeated over three channels): the colour is missing": np.repeat(d, 3, 1),
             "the result is inverted (1 - |c - d|): the background must take the colour c itself": 1 - right}
    for message, value in wrong.items():
        if value.shape == got.shape and np.allclose(got, value, atol=1e-5):
            raise AssertionError(f"make_colour_bridge: {message}")
    raise AssertionError("make_colour_bridge(digits, colours) differs from |c - d| per channel on random inputs; "
                         "reshape colours to (N, 3, 1, 1) and broadcast against digits (N, 1, H, W)")


# ---------------------------------------------------------------- q2
@functools.lru_cache(maxsize=1)
def reference_runs() -> dict:
    """The exercise's two arms, trained here: ``{"direct": acc, "bridged": acc}`` on the MNIST-M test set."""
    import copy

    from tlcourse.bridge import Stage, colour_bridge, frame_colours, mnist_to_mnistm, train_stages
    from tlcourse.dann_demo import accuracy, small_cnn
    from torch import nn

    sh = mnist_to_mnistm(SPLIT_SEED)
    pick = np.random.default_rng(SPLIT_SEED).integers(0, len(sh.target_x), len(sh.source_digits))
    bridge = colour_bridge(sh.source_digits, frame_colours(sh.target_x)[torch.as_tensor(pick)])
    g, c = small_cnn(SPLIT_SEED, in_channels=3)
    train_stages(g, c, [Stage("source", sh.source_x, sh.source_y, SOURCE_STEPS)], seed=SPLIT_SEED)
    plans = {"direct": [Stage("target", sh.few_x, sh.few_y, BUDGET)],
             "bridged": [Stage("bridge", bridge, sh.source_y, BRIDGE_STEPS),
                         Stage("target", sh.few_x, sh.few_y, TARGET_STEPS)],
             "bridged, extra steps": [Stage("bridge", bridge, sh.source_y, BRIDGE_STEPS),
                                      Stage("target", sh.few_x, sh.few_y, BUDGET)]}
    out = {}
    for arm, stages in plans.items():
        g2, c2 = copy.deepcopy((g, c))
        train_stages(g2, c2, stages, seed=SPLIT_SEED, lr=LR)
        out[arm] = accuracy(nn.Sequential(g2, c2), sh.test_x, sh.test_y)
    return out


def _collect_budget(ns, seed):
    return {k: _scalar(ns[k]) for k in ("budget_direct", "budget_bridged", "direct_acc", "bridged_acc")}


def _grade_budget(answer, seed):
    assert isinstance(answer, dict), "the collected answer is malformed: run the notebook's cells in order"
    for k, v in answer.items():
        assert not isinstance(v, str), f"{k} should be a number, got {_shown(v)}"
    bd, bb = answer["budget_direct"], answer["budget_bridged"]
    if bd != bb:
        raise AssertionError(f"unequal budgets: direct fine-tuning took {bd:g} steps and the bridged run {bb:g}. "
                             "Give the bridged run its bridge steps out of the same budget (bridge + target = direct), "
                             "or the comparison measures the extra steps, not the bridge")
    assert bd == BUDGET, (f"both budgets are {bd:g} steps, but the exercise spends {BUDGET} steps after the source "
                          f"model ({BRIDGE_STEPS} on the bridge + {TARGET_STEPS} on the target for the bridged run)")
    ref = reference_runs()
    tol = 3.01 / N_TEST
    if abs(answer["bridged_acc"] - ref["bridged, extra steps"]) <= tol < abs(answer["bridged_acc"] - ref["bridged"]):
        raise AssertionError("bridged_acc is the accuracy of a run with unequal budgets: its target stage took "
                             f"{BUDGET} steps after the bridge. Use {TARGET_STEPS} target steps after {BRIDGE_STEPS} "
                             "bridge steps")
    for key, arm in (("direct_acc", "direct"), ("bridged_acc", "bridged")):
        assert abs(answer[key] - ref[arm]) <= tol, (
            f"{key} = {answer[key]:.4f}, but the grader's {arm} run scores {ref[arm]:.4f} on the {N_TEST} MNIST-M "
            "test images: train with the stages given, lr=0.01 and seed 0, and score on (test_x, test_y)")


# ---------------------------------------------------------------- q3
def q3_inputs(seed: int):
    rng = np.random.default_rng(seed)
    return [(rng.exponential(1.0, n), rng.exponential(0.7, n)) for n in (50, 200, 1000)]


def _dev(w, l, ddof_cov=1, ddof_var=1, sign=1.0):
    L = w * l
    eta = -sign * np.cov(L, w, ddof=ddof_cov)[0, 1] / np.var(w, ddof=ddof_var)
    return float(L.mean() + eta * w.mean() - eta)


def _collect_dev(ns, seed):
    values = []
    for w, l in q3_inputs(seed):
        out, err = _call(ns["dev"], "dev(weights, losses)", w.copy(), l.copy())
        if err:
            return {"error": err}
        values.append(_scalar(out))
    return {"values": values}


def _grade_dev(answer, seed):
    assert isinstance(answer, dict), "the collected answer is malformed: run the notebook's cells in order"
    assert "error" not in answer, answer.get("error")
    values = answer["values"]
    for v in values:
        assert not isinstance(v, str), f"dev(weights, losses) returned {_shown(v)}; return a float"
    cases = q3_inputs(seed)
    close = lambda fn: all(abs(v - fn(w, l)) <= 1e-8 * max(1, abs(fn(w, l))) for v, (w, l) in zip(values, cases))  # noqa: E731
    if close(_dev):
        return
    wrong = {"this is IWCV, mean(w * l), without DEV's control variate: add eta * mean(w) - eta with "
             "eta = -Cov(w * l, w) / Var(w)": lambda w, l: float(np.mean(w * l)),
             "eta has the wrong sign: eta = -Cov(L, w) / Var(w)": lambda w, l: _dev(w, l, sign=-1.0),
             "Cov and Var use different ddof (np.cov defaults to ddof=1, np.var to ddof=0): use the same for both":
                 lambda w, l: _dev(w, l, ddof_cov=1, ddof_var=0),
             "the plain source validation loss mean(l) ignores the weights": lambda w, l: float(np.mean(l))}
    for message, fn in wrong.items():
        if close(fn):
            raise AssertionError(f"dev: {message}")
    w, l = cases[0]
    raise AssertionError(f"dev(weights, losses) = {values[0]:.6f} on a random case, expected {_dev(w, l):.6f}: "
                         "L = w * l; eta = -Cov(L, w) / Var(w); return mean(L) + eta * mean(w) - eta")


# ---------------------------------------------------------------- q4
Q4_CHOICES = {
    "a": "It helps about as much as the colour bridge: any extra labelled digits help.",
    "b": "Nothing measurable: USPS is not between MNIST and MNIST-M, so its steps are spent on a shift the "
         "target does not have.",
    "c": "It helps more than the colour bridge, because its digits are real, not synthetic.",
    "d": "It makes the result collapse to chance, because USPS has no colour.",
}
_Q4_FEEDBACK = {
    "a": "what does USPS share with MNIST-M that MNIST lacks? The colour bridge carries the target's colours.",
    "c": "real or synthetic matters less than where the bridge lies: which axis of the shift does USPS move along?",
    "d": "the last stage is still 100 steps on labelled MNIST-M images; would the model forget everything?",
}

QUESTIONS = [
    Question("q1", points=2, names=("make_colour_bridge",), collect=_collect_bridge, grade=_grade_bridge,
             hint="return (colours[:, :, None, None] - digits).abs()"),
    Question("q2", points=2, names=("budget_direct", "budget_bridged", "direct_acc", "bridged_acc"),
             collect=_collect_budget, grade=_grade_budget,
             hint="direct: one target stage of 200 steps; bridged: 100 bridge steps, then 100 target steps."),
    Question("q3", points=2, names=("dev",), collect=_collect_dev, grade=_grade_dev,
             hint="L = w * l; eta = -np.cov(L, w)[0, 1] / np.var(w, ddof=1); L.mean() + eta * w.mean() - eta"),
    choice_question("q4", "answer_q4", choices=Q4_CHOICES, answer="b", feedback=_Q4_FEEDBACK, points=1,
                    hint="Ask which differences between MNIST and MNIST-M a USPS digit shares."),
]
