"""Checks for exercise T04 (inductive vs transductive transfer): the AdaBN statistics update written
by hand, an adapted model scored on its pool and on fresh images without letting one into the
other, and one question on what a validation split of 20 labelled images can decide.

Every ``collect`` runs in the student's kernel and returns plain data; every ``grade`` runs in the
trusted process and rebuilds what it compares with from the seed: small probe networks and probe
data drawn here (:func:`probe_model`, :func:`probe_pool`, :func:`q2_probe`), adapted by
:func:`tlcourse.adapt.adapt_batchnorm`. Nothing in the student's namespace is trusted.

- **q1** (2 points) ``target_batchnorm(model, pool_x)`` returns the model (a copy or the same
  object) with every BatchNorm layer's running statistics re-estimated on ``pool_x``.
  *collect*: the student's function on a "source-trained" probe CNN (conv, BatchNorm2d, ReLU,
  **dropout**, linear, BatchNorm1d, ReLU, linear) and a shifted probe pool drawn from the seed:
  the running means and variances, the largest change of any weight, whether any module is left
  in training mode, and two predictions of the same batch. *grade*: the statistics must be the
  pool's (any batch size: 5 % on variances), no weight may change, the model must be in eval mode.
  Named mistakes: statistics left at the source's; source statistics blended in (not reset,
  ``momentum=0.1``); the whole model in training mode while collecting, so dropout distorts the
  BatchNorm after it; the model returned in training mode; a weight update.
- **q2** (2 points) ``pool_and_fresh_accuracy(model, pool_x, pool_y, fresh_x, fresh_y)`` returns
  ``(pool_acc, fresh_acc)``: adapt on ``pool_x`` only, then score on both. *collect*: the function on
  a probe network whose accuracy depends on its BatchNorm statistics, called twice with the same
  pool and two different fresh sets (the second strongly shifted). *grade*: both accuracies must
  match the reference; a pool accuracy that changes with the fresh set, or that matches adapting
  on pool + fresh, means the fresh images leaked into the adaptation pool; no adaptation and the
  two accuracies swapped are named too.
- **q3** (1 point) ``answer_q3``: a choice, checked by letter.
"""
from __future__ import annotations

import copy
import numbers

import numpy as np
import torch
from torch import nn

from tlcourse.adapt import adapt_batchnorm
from tlcourse.batchnorm import BATCHNORM
from tlcourse.grading import Question
from tlcourse.grading.answers import NOT_PLAIN as _NOT_PLAIN
from tlcourse.grading.choice import choice_question

N_POOL = 256


def _kind(value) -> str:
    kind = type(value).__name__
    if kind == "ellipsis":
        return "`...`, the exercise's placeholder"
    return f"{'an' if kind[:1].lower() in 'aeiou' else 'a'} {kind}"


def _scalar(value):
    """A number (0-d tensors and NumPy scalars included) as a float; anything else described."""
    if isinstance(value, bool):
        return f"{_NOT_PLAIN}bool>"
    if isinstance(value, (torch.Tensor, np.ndarray)) and value.ndim == 0 and value.dtype != object:
        return float(value)
    if isinstance(value, (numbers.Real, np.generic)) and not isinstance(value, str):
        return float(value)
    return f"{_NOT_PLAIN}{_kind(value)}>"


def _call(fn, name, *args):
    try:
        return fn(*args), None
    except NotImplementedError:
        return None, {"error": f"{name} raises NotImplementedError: replace the placeholder with your code"}
    except Exception as exc:  # noqa: BLE001 - reported to the student
        return None, {"error": f"{name} raised {type(exc).__name__}: {str(exc)[:200]}"}


# ---------------------------------------------------------------- q1: the probe network and pool
def probe_model(seed: int) -> nn.Module:
    """A small "source-trained" CNN for 6x6 inputs: non-trivial weights and source statistics."""
    gen = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                        nn.Dropout(0.5), nn.Linear(4 * 4 * 4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
        for m in (net[1], net[6]):
            m.weight.abs_().add_(0.5)
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen))
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
    return net.eval()


def probe_pool(seed: int) -> torch.Tensor:
    """Unlabelled "target" inputs (N_POOL, 1, 6, 6), shifted and scaled away from the source's."""
    gen = torch.Generator().manual_seed(seed + 1)
    return torch.randn(N_POOL, 1, 6, 6, generator=gen) * 2.5 + 1.5


def _stats(model):
    return [[m.running_mean.detach().double().tolist(), m.running_var.detach().double().tolist()]
            for m in model.modules() if isinstance(m, BATCHNORM)]


def _collect_bn(ns, seed):
    fn = ns["target_batchnorm"]
    model, pool = probe_model(seed), probe_pool(seed)
    weights = {k: v.detach().clone() for k, v in model.named_parameters()}
    out, error = _call(fn, "target_batchnorm(model, pool_x)", model, pool.clone())
    if error:
        return error
    if not isinstance(out, nn.Module):
        return {"error": f"target_batchnorm returned {_kind(out)}; return the adapted model (an nn.Module)"}
    params = dict(out.named_parameters())
    if set(params) != set(weights):
        return {"error": "target_batchnorm returned a model with other parameters than the one it was given"}
    changed = max(float((params[k].detach() - w).abs().max()) for k, w in weights.items())
    stats, training = _stats(out), [type(m).__name__ for m in out.modules() if m.training]
    with torch.no_grad():  # after reading the statistics: a model left in training mode would move them
        probe = pool[:16]
        first, second = out(probe), out(probe)
    return {"stats": stats, "changed": changed, "training": training, "repeatable": bool(torch.equal(first, second))}


def _bn_variants(seed) -> dict:
    """The reference statistics and those of the usual mistakes, computed here."""
    model, pool = probe_model(seed), probe_pool(seed)
    right = _stats(adapt_batchnorm(model, pool))
    blended = copy.deepcopy(model)                 # not reset, default momentum 0.1, one pass
    blended.train()
    for m in blended.modules():
        if isinstance(m, nn.Dropout):
            m.eval()
    with torch.no_grad():
        blended(pool)
    return {"right": right, "source": _stats(model), "blended": _stats(blended)}


def _stats_close(got, want, var_rtol=0.05) -> bool:
    for (gm, gv), (wm, wv) in zip(got, want):
        gm, gv, wm, wv = map(np.asarray, (gm, gv, wm, wv))
        scale = np.sqrt(wv)
        if gm.shape != wm.shape or not np.all(np.abs(gm - wm) <= 0.05 * scale + 1e-6):
            return False
        if not np.allclose(gv, wv, rtol=var_rtol, atol=1e-6):
            return False
    return len(got) == len(want)


def _grade_bn(answer, seed):
    assert isinstance(answer, dict), "the collected answer is malformed: run the notebook's cells in order"
    assert "error" not in answer, answer.get("error")
    assert answer["changed"] <= 1e-6, (
        f"a weight changed by up to {answer['changed']:.3g}: AdaBN changes no weight (no optimiser step, no "
        "gradient); only the BatchNorm running statistics are re-estimated, under torch.no_grad()")
    variants = _bn_variants(seed)
    got = answer["stats"]
    assert len(got) == len(variants["right"]), (
        f"the returned model has {len(got)} BatchNorm layers, expected {len(variants['right'])}")
    if not _stats_close(got, variants["right"]):
        if _stats_close(got, variants["source"], var_rtol=1e-4):
            raise AssertionError("the running statistics are still the source's: pass pool_x through the "
                                 "BatchNorm layers in training mode (under torch.no_grad()) so that they "
                                 "re-estimate them")
        if _stats_close(got, variants["blended"], var_rtol=0.02):
            raise AssertionError("the source statistics are blended in: with the default momentum=0.1 and no "
                                 "reset, one pass keeps 90 % of the source's. Call reset_running_stats() and set "
                                 "momentum=None (a plain average) before the pass")
        var_ratio = np.mean(got[-1][1]) / np.mean(variants["right"][-1][1])
        if _stats_close(got[:1], variants["right"][:1]) and var_ratio > 1.3:
            raise AssertionError("the BatchNorm layer after the dropout has the wrong statistics: dropout was "
                                 "active while they were collected (the whole model in training mode). Put the "
                                 "model in eval mode and only the BatchNorm layers in training mode")
        if _stats_close(got[:1], variants["right"][:1]):
            raise AssertionError("the first BatchNorm layer is right, the later one is not: it must see the "
                                 "pool as it arrives in eval mode (no dropout), after the layers below it have "
                                 "been normalised with the pool's statistics")
        raise AssertionError("the running statistics are not the pool's: every BatchNorm layer's running_mean "
                             "and running_var should be the mean and variance of its input on pool_x")
    assert not answer["training"], (
        f"the returned model is in training mode ({', '.join(sorted(set(answer['training'])))}): BatchNorm would "
        "normalise with each batch's own statistics and dropout would drop units at prediction time; "
        "return model.eval()")
    assert answer["repeatable"], "two predictions of the same batch differ: return the model in eval mode"


# ---------------------------------------------------------------- q2: pool vs fresh
def q2_probe(seed: int) -> dict:
    """A network whose accuracy depends on its BatchNorm statistics, a pool and two fresh sets.

    x in R^2; the label is whether x_0 lies above the target's centre. The "source" statistics
    are centred at 0, the target's near 3, so only a network adapted on target data gets it right.
    """
    gen = torch.Generator().manual_seed(seed + 7)
    net = nn.Sequential(nn.Linear(2, 2, bias=False), nn.BatchNorm1d(2), nn.Linear(2, 2, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.eye(2))
        net[2].weight.copy_(torch.tensor([[-1.0, 0.0], [1.0, 0.0]]))   # class 1 when normalised x_0 > 0
    net.eval()

    def draw(n, centre, scale):
        x = torch.randn(n, 2, generator=gen) * scale + centre
        return x, (x[:, 0] > centre).long()

    pool_x, pool_y = draw(N_POOL, 3.0, 2.0)
    fresh_x, fresh_y = draw(N_POOL, 3.0, 2.0)
    other_x, other_y = draw(N_POOL, -6.0, 0.5)     # a fresh set far from the pool: leakage shows
    return dict(model=net, pool=(pool_x, pool_y), fresh=(fresh_x, fresh_y), other=(other_x, other_y))


def _accuracy(model, x, y) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def _pair(value, what):
    if isinstance(value, dict):
        value = (value.get("pool_acc"), value.get("fresh_acc"))
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return [_scalar(v) for v in value]
    return f"{_NOT_PLAIN}{_kind(value)}>"


def _collect_pool_fresh(ns, seed):
    fn = ns["pool_and_fresh_accuracy"]
    p = q2_probe(seed)
    out = {}
    for key in ("fresh", "other"):
        result, error = _call(fn, "pool_and_fresh_accuracy(model, pool_x, pool_y, fresh_x, fresh_y)",
                              copy.deepcopy(p["model"]), *(t.clone() for t in (*p["pool"], *p[key])))
        if error:
            return error
        out[key] = _pair(result, key)
    return out


def _grade_pool_fresh(answer, seed):
    assert isinstance(answer, dict), "the collected answer is malformed: run the notebook's cells in order"
    assert "error" not in answer, answer.get("error")
    for key in ("fresh", "other"):
        got = answer[key]
        assert isinstance(got, list) and not any(isinstance(v, str) for v in got), (
            f"pool_and_fresh_accuracy should return (pool_acc, fresh_acc), two floats, got "
            f"{got[len(_NOT_PLAIN):-1] if isinstance(got, str) else got}")
        assert all(0 <= v <= 1 for v in got), f"accuracies are fractions in [0, 1], got {got}"
    p = q2_probe(seed)
    model = p["model"]
    adapted = adapt_batchnorm(model, p["pool"][0])
    tol = 3.01 / N_POOL
    (pool_a, fresh_a), (pool_b, fresh_b) = answer["fresh"], answer["other"]
    want_pool = _accuracy(adapted, *p["pool"])
    want = {"fresh": _accuracy(adapted, *p["fresh"]), "other": _accuracy(adapted, *p["other"])}
    if abs(pool_a - want_pool) <= tol and abs(fresh_a - want["fresh"]) <= tol and abs(fresh_b - want["other"]) <= tol \
            and abs(pool_b - want_pool) <= tol:
        return
    if abs(pool_b - want["other"]) <= tol and abs(fresh_b - want_pool) <= tol:
        raise AssertionError("pool_acc and fresh_acc are swapped: return (accuracy on the pool, accuracy on the "
                             "fresh images)")
    leaked = {k: _accuracy(adapt_batchnorm(model, torch.cat([p["pool"][0], p[k][0]])), *p["pool"])
              for k in ("fresh", "other")}
    if abs(pool_a - want_pool) <= tol < abs(pool_b - want_pool) or (
            abs(pool_a - leaked["fresh"]) <= tol and abs(pool_b - leaked["other"]) <= tol):
        raise AssertionError(
            "the pool accuracy changes when only the fresh images change: the fresh images leaked into the "
            "adaptation pool. Adapt on pool_x alone; fresh_x is only scored, so that its accuracy says how the "
            "adapted model does on target images it never saw")
    if abs(pool_a - _accuracy(model, *p["pool"])) <= tol and abs(fresh_a - _accuracy(model, *p["fresh"])) <= tol:
        raise AssertionError("these are the accuracies of the unadapted source model: re-estimate the BatchNorm "
                             "statistics on pool_x first (your target_batchnorm), then score the adapted model")
    raise AssertionError(
        f"pool_and_fresh_accuracy returned ({pool_a:.3f}, {fresh_a:.3f}) on the grader's probe, expected "
        f"({want_pool:.3f}, {want['fresh']:.3f}): adapt a copy of the model on pool_x only, then return its "
        "accuracy on (pool_x, pool_y) and on (fresh_x, fresh_y)")


# ---------------------------------------------------------------- q3
Q3_CHOICES = {
    "a": "It reliably picks the better rate: 20 images are enough to compare two models.",
    "b": "It cannot reliably tell them apart: near 75 % accuracy, the standard error of an accuracy measured "
         "on 20 images is about 10 points, five times the true difference.",
    "c": "It always picks the worse rate, because the validation images are too few to be representative.",
    "d": "It picks the better rate only if the 20 images are also used for training.",
}
_Q3_ANSWER = "b"
_Q3_FEEDBACK = {
    "a": "compute the standard error sqrt(p (1 - p) / n) of an accuracy p near 0.75 on n = 20 images, and "
         "compare it with a 2-point difference.",
    "c": "noise makes the choice unreliable, not systematically wrong: which way would a coin flip err?",
    "d": "images used for training say how well a model fits them, not how it generalises; that makes the "
         "choice worse, not better.",
}

QUESTIONS = [
    Question("q1", points=2, names=("target_batchnorm",), collect=_collect_bn, grade=_grade_bn,
             hint="copy the model, model.eval(); for each BatchNorm layer m: m.reset_running_stats(), "
                  "m.momentum = None, m.train(); with torch.no_grad(): model(pool_x); restore the momenta; "
                  "return model.eval()"),
    Question("q2", points=2, names=("pool_and_fresh_accuracy",), collect=_collect_pool_fresh,
             grade=_grade_pool_fresh,
             hint="adapted = target_batchnorm(model, pool_x); return accuracy(adapted, pool_x, pool_y), "
                  "accuracy(adapted, fresh_x, fresh_y)"),
    choice_question("q3", "answer_q3", choices=Q3_CHOICES, answer=_Q3_ANSWER, feedback=_Q3_FEEDBACK, points=1,
                    hint="One validation image is 5 points of accuracy when there are 20."),
]
