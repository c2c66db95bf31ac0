"""Learning curves and the benefits of transfer read off them: jumpstart, time to threshold, area
under the curve, asymptotic gap.

Torrey & Shavlik (2009) draw the three ways transfer can help as three features of a learning
curve (target performance against training time): a **higher start**, a **higher slope** and a
**higher asymptote**. Taylor & Stone (2009, section 2.1) turn them into numbers, for reinforcement
learning as much as for supervised learning: *jumpstart*, *asymptotic performance*, *total reward*
(the area under the curve), the *transfer ratio* and *time to threshold*. This module computes
them from curves recorded at the same steps, so a chapter on supervised fine-tuning (T03) and one
on reinforcement learning (T16) measure the same things the same way.

Conventions, for every function:

- ``steps`` (T,): the x positions of the curve (optimiser steps, epochs, episodes), strictly
  increasing; ``values`` (..., T): one curve per leading index (for example (n_seeds, T)),
  higher is better (accuracy, return). Every measure returns an array of the leading shape (a
  float for one curve).
- Two curves are compared only when they were recorded at the **same** steps: a transfer arm
  trained twice as long as its baseline has not earned its higher asymptote. Paired measures
  check it and raise ``ValueError``; :func:`truncate` cuts two runs to their common budget.
- Read the benefits off curves scored on a **validation** split; a test split that is looked at
  at every step becomes one more thing the experimenter has tuned on.

:func:`record_curve` records such a curve for a classifier trained with Adam for a fixed number
of steps, and :func:`plot_curves` draws mean ± sd bands over seeds.

>>> steps = [0, 10, 20, 30]
>>> scratch, transfer = [0.1, 0.3, 0.5, 0.6], [0.1, 0.6, 0.7, 0.7]
>>> round(jumpstart(transfer, scratch, first=2), 4), round(asymptotic_gap(transfer, scratch, last=2), 4)
(0.15, 0.15)
>>> float(time_to_threshold(steps, scratch, 0.5)), float(time_to_threshold(steps, transfer, 0.5))
(20.0, 10.0)
>>> round(float(area_under_curve(steps, transfer)), 4)
0.5667
"""
from __future__ import annotations

import time
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .compare import score
from .train import channels_last, index_batches
from .train import model_device

__all__ = ["as_curves", "jumpstart", "asymptote", "asymptotic_gap", "area_under_curve", "transfer_ratio",
           "time_to_threshold", "mean_slope", "truncate", "benefits", "record_curve", "plot_curves"]


# ---------------------------------------------------------------- checking inputs
def as_curves(steps, values) -> tuple[np.ndarray, np.ndarray]:
    """``(steps, values)`` as float arrays, checked: steps (T,) strictly increasing, values (..., T).

    >>> as_curves([0, 5], [[0.1, 0.2], [0.3, 0.4]])[1].shape
    (2, 2)
    >>> as_curves([0, 5, 10], [0.1, 0.2])
    Traceback (most recent call last):
    ValueError: values have 2 points per curve but steps has 3: record every curve at the same steps
    """
    s = np.asarray(steps, dtype=float)
    v = np.asarray(values, dtype=float)
    if s.ndim != 1 or len(s) < 1:
        raise ValueError(f"steps must be 1-D (T,) with T >= 1, got shape {s.shape}")
    if np.any(np.diff(s) <= 0):
        raise ValueError(f"steps must be strictly increasing, got {s.tolist()}")
    if v.ndim < 1 or v.shape[-1] != len(s):
        raise ValueError(f"values have {v.shape[-1] if v.ndim else 0} points per curve but steps has "
                         f"{len(s)}: record every curve at the same steps")
    if not np.all(np.isfinite(v)):
        raise ValueError("values contain NaN or infinity")
    return s, v


def _pair(transfer, baseline) -> tuple[np.ndarray, np.ndarray]:
    t, b = np.asarray(transfer, dtype=float), np.asarray(baseline, dtype=float)
    if t.ndim < 1 or b.ndim < 1 or t.shape[-1] != b.shape[-1]:
        raise ValueError(f"the two curves have {t.shape[-1] if t.ndim else 0} and {b.shape[-1] if b.ndim else 0} "
                         "points: compare curves recorded at the same steps (an equal budget); cut the longer "
                         "run with truncate()")
    return t, b


def _count(k: int, n: int, name: str) -> int:
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or not 1 <= k <= n:
        raise ValueError(f"{name} must be an integer in [1, {n}] (points of the curve), got {k!r}")
    return int(k)


def _scalar_or_array(x):
    x = np.asarray(x, dtype=float)
    return float(x) if x.ndim == 0 else x


# ---------------------------------------------------------------- the measures
def asymptote(values, *, last: int = 3):
    """Asymptotic performance: the mean of the last ``last`` points, ``mean(values[..., -last:])``.

    Shapes: values (..., T) -> (...). A learning curve is noisy, so one final point is a poor
    estimate of where it levels off; averaging the last few is the usual remedy. Whether the curve
    has levelled off at all is a separate question: check :func:`mean_slope` over the same window.

    >>> asymptote([0.2, 0.5, 0.7, 0.9], last=2)
    0.8
    """
    v = np.asarray(values, dtype=float)
    k = _count(last, v.shape[-1], "last")
    return _scalar_or_array(v[..., -k:].mean(-1))


def jumpstart(transfer, baseline, *, first: int = 1):
    """Jumpstart (Taylor & Stone, 2009): the gap in initial performance,
    ``mean(transfer[..., :first]) - mean(baseline[..., :first])``.

    Shapes: (..., T) each, the same T -> (...). ``first = 1`` compares the points at the first
    recorded step. Mind what that step is: a pretrained body with a *new, randomly initialised*
    head is at chance before any training, exactly like the baseline, so at step 0 the jumpstart
    is about zero; it appears after the first steps have fitted the head (or at step 0 when the
    source's output layer is reused, as for a policy in reinforcement learning).

    >>> jumpstart([0.1, 0.6, 0.7], [0.1, 0.2, 0.5], first=1)
    0.0
    >>> jumpstart([[0.1, 0.6], [0.2, 0.8]], [[0.1, 0.2], [0.1, 0.3]], first=2).round(4).tolist()
    [0.2, 0.3]
    """
    t, b = _pair(transfer, baseline)
    k = _count(first, t.shape[-1], "first")
    return _scalar_or_array(t[..., :k].mean(-1) - b[..., :k].mean(-1))


def asymptotic_gap(transfer, baseline, *, last: int = 3):
    """Higher asymptote: ``asymptote(transfer, last) - asymptote(baseline, last)``.

    Shapes: (..., T) each, the same T -> (...). Compared at the same steps only: a gap between a
    long run and a short one measures the budget, not the transfer.

    >>> round(asymptotic_gap([0.5, 0.8, 0.9], [0.3, 0.7, 0.8], last=2), 2)
    0.1
    """
    t, b = _pair(transfer, baseline)
    return _scalar_or_array(np.asarray(asymptote(t, last=last)) - np.asarray(asymptote(b, last=last)))


def area_under_curve(steps, values, *, normalise: bool = True):
    """Area under the learning curve by the trapezoidal rule (Taylor & Stone's "total reward").

    ``sum_i (x_{i+1} - x_i) * (y_i + y_{i+1}) / 2`` over the recorded points; with ``normalise``
    (the default) divided by the span ``x_T - x_1``, so the result is the curve's mean level, in
    the units of ``values`` (an accuracy stays in [0, 1]), and curves of different spans would not
    be comparable anyway. Unevenly spaced steps are weighted by their spacing, which a plain mean
    of the points does not do. Shapes: steps (T,), values (..., T) -> (...); T >= 2.

    >>> area_under_curve([0, 1, 3], [0.0, 1.0, 1.0])
    0.8333333333333334
    >>> area_under_curve([0, 1, 3], [0.0, 1.0, 1.0], normalise=False)
    2.5
    """
    s, v = as_curves(steps, values)
    if len(s) < 2:
        raise ValueError("a curve needs at least 2 points to have an area")
    area = ((v[..., 1:] + v[..., :-1]) / 2 * np.diff(s)).sum(-1)
    return _scalar_or_array(area / (s[-1] - s[0]) if normalise else area)


def transfer_ratio(steps, transfer, baseline):
    """Transfer ratio (Taylor & Stone, 2009): ``(AUC_transfer - AUC_baseline) / AUC_baseline``.

    The relative gain in area; it depends on where the y-axis starts (an accuracy and an error
    rate give different ratios), so state the metric beside it. Shapes as
    :func:`area_under_curve`; the baseline's area must be positive.

    >>> round(transfer_ratio([0, 1, 2], [0.5, 1.0, 1.0], [0.0, 0.5, 1.0]), 3)
    0.75
    """
    t, b = _pair(transfer, baseline)
    a_t, a_b = np.asarray(area_under_curve(steps, t)), np.asarray(area_under_curve(steps, b))
    if np.any(a_b <= 0):
        raise ValueError("the baseline's area under the curve must be positive for a ratio")
    return _scalar_or_array((a_t - a_b) / a_b)


def time_to_threshold(steps, values, threshold: float):
    """Time to threshold: the first recorded step at which ``values >= threshold``; ``inf`` if never.

    Shapes: steps (T,), values (..., T) -> (...). A "steeper slope" measured this way does not
    depend on where the curves start or end, only on how soon each reaches the same level; pick the
    threshold before looking (or on a validation split) and use the same one for both arms. The
    resolution is the spacing of the recorded steps.

    >>> time_to_threshold([0, 10, 20, 30], [[0.1, 0.4, 0.6, 0.7], [0.1, 0.2, 0.3, 0.4]], 0.5).tolist()
    [20.0, inf]
    """
    s, v = as_curves(steps, values)
    reached = v >= threshold
    first = np.where(reached.any(-1), s[np.argmax(reached, axis=-1)], np.inf)
    return _scalar_or_array(first)


def mean_slope(steps, values, start: float, stop: float):
    """Mean rate of improvement between two recorded steps: ``(y(stop) - y(start)) / (stop - start)``.

    Shapes: steps (T,), values (..., T) -> (...), per unit of ``steps``. ``start`` and ``stop`` must
    be recorded steps. Near zero over the last points means the curve has levelled off within the
    budget. Early on it is a poor measure of "steeper": a curve that starts higher has less room to
    rise, so prefer :func:`time_to_threshold` to compare arms.

    >>> mean_slope([0, 10, 20], [0.2, 0.5, 1.0], 10, 20)
    0.05
    """
    s, v = as_curves(steps, values)
    where = {}
    for name, x in (("start", start), ("stop", stop)):
        hit = np.flatnonzero(s == x)
        if hit.size != 1:
            raise ValueError(f"{name}={x!r} is not a recorded step (steps are {s.tolist()})")
        where[name] = int(hit[0])
    if stop <= start:
        raise ValueError(f"stop must come after start, got start={start}, stop={stop}")
    return _scalar_or_array((v[..., where["stop"]] - v[..., where["start"]]) / (stop - start))


def truncate(steps, values, max_step: float) -> tuple[np.ndarray, np.ndarray]:
    """The part of a curve recorded at steps ``<= max_step``: ``(steps (T',), values (..., T'))``.

    Cut the longer of two runs to the other's budget before comparing them.

    >>> truncate([0, 10, 20, 30], [0.1, 0.5, 0.7, 0.8], 20)[1].tolist()
    [0.1, 0.5, 0.7]
    """
    s, v = as_curves(steps, values)
    keep = s <= max_step
    if not keep.any():
        raise ValueError(f"no recorded step is <= max_step={max_step} (steps start at {s[0]:g})")
    return s[keep], v[..., keep]


def benefits(steps, transfer, baseline, *, threshold: float, first: int = 1, last: int = 3) -> dict:
    """All the measures for paired curves, one value per leading index (per seed).

    Shapes: steps (T,), transfer and baseline (..., T). Returns ``{"jumpstart", "asymptotic_gap",
    "auc_gap", "transfer_ratio", "time_to_threshold_transfer", "time_to_threshold_baseline"}``.

    >>> b = benefits([0, 1, 2], [0.5, 0.9, 0.9], [0.1, 0.5, 0.8], threshold=0.8, last=1)
    >>> round(b["auc_gap"], 4), b["time_to_threshold_transfer"], b["time_to_threshold_baseline"]
    (0.325, 1.0, 2.0)
    """
    s, t = as_curves(steps, transfer)
    _, b = as_curves(steps, baseline)
    _pair(t, b)
    return {
        "jumpstart": jumpstart(t, b, first=first),
        "asymptotic_gap": asymptotic_gap(t, b, last=last),
        "auc_gap": _scalar_or_array(np.asarray(area_under_curve(s, t)) - np.asarray(area_under_curve(s, b))),
        "transfer_ratio": transfer_ratio(s, t, b),
        "time_to_threshold_transfer": time_to_threshold(s, t, threshold),
        "time_to_threshold_baseline": time_to_threshold(s, b, threshold),
    }


# ---------------------------------------------------------------- recording and drawing curves
def record_curve(model: nn.Module, x: torch.Tensor, y: torch.Tensor, x_val: torch.Tensor,
                 y_val: torch.Tensor, *, lr: float, steps: int, eval_every: int, batch_size: int = 16,
                 seed: int = 0, track: Mapping[str, tuple[torch.Tensor, torch.Tensor]] | None = None) -> dict:
    """Train ``model`` with Adam for exactly ``steps`` steps, scoring (x_val, y_val) along the way.

    ``x`` (N, ...) and ``y`` (N,) integer classes; the same for the validation split. The accuracy
    is recorded before training (step 0) and every ``eval_every`` steps, so every run of a
    comparison with the same ``steps`` and ``eval_every`` has the same x positions. No early
    stopping and no restoring of best weights: a learning curve shows the whole budget and the
    model is returned as it is at the last step (in eval mode). Batches are reshuffled from
    ``seed`` (the same batches for two models given the same seed); images are trained in
    channels-last order, which only changes speed.

    ``track`` names more splits ``{name: (x, y)}`` scored at the same steps, for instance the
    training set (to see overfitting) or, as a logger often does, the test set: recording it is
    harmless, *reading* a benefit or a choice off it is not.

    Returns ``{"model", "steps" (T,), "accuracy" (T,), "loss" (T,), "tracked": {name: (T,)},
    "seconds"}``: the validation accuracy and cross-entropy at each recorded step, and the accuracy
    of each tracked split.
    """
    if len(x) != len(y) or len(x) < 2:
        raise ValueError(f"x and y need equal lengths >= 2, got {len(x)} and {len(y)}")
    for name, v in (("steps", steps), ("eval_every", eval_every), ("batch_size", batch_size)):
        if not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    if steps % eval_every:
        raise ValueError(f"steps={steps} must be a multiple of eval_every={eval_every}, so the curve ends "
                         "at the budget")
    device = model_device(model)
    if x.ndim == 4:
        model.to(memory_format=torch.channels_last)
    x, x_val = channels_last(x), channels_last(x_val)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr, foreach=True)
    batches = index_batches(len(x), batch_size, torch.Generator().manual_seed(seed))
    at, acc, loss = [], [], []
    tracked = {name: (channels_last(xs), ys, []) for name, (xs, ys) in (track or {}).items()}

    def record(step):
        metrics = score(model, x_val, y_val)
        at.append(step), acc.append(metrics["accuracy"]), loss.append(metrics["loss"])
        for xs, ys, out in tracked.values():
            out.append(score(model, xs, ys)["accuracy"])

    start = time.perf_counter()
    record(0)
    model.train()
    for step in range(1, steps + 1):
        idx = next(batches)
        optimizer.zero_grad(set_to_none=True)
        batch_loss = F.cross_entropy(model(x[idx].to(device)), y[idx].to(device))
        if not torch.isfinite(batch_loss):
            raise FloatingPointError(f"loss became {batch_loss.item()} at step {step}: lower lr={lr}")
        batch_loss.backward()
        optimizer.step()
        if step % eval_every == 0:
            record(step)   # score() restores training mode afterwards
    model.eval()
    return {"model": model, "steps": np.array(at), "accuracy": np.array(acc), "loss": np.array(loss),
            "tracked": {name: np.array(out) for name, (_, _, out) in tracked.items()},
            "seconds": time.perf_counter() - start}


def plot_curves(ax, steps, curves: Mapping[str, np.ndarray], *, scale: float = 100.0, styles=None,
                band: bool = True):
    """Draw each arm's mean curve over seeds with a shaded mean ± sd band on a matplotlib ``ax``.

    ``curves`` maps a label to an array (n_seeds, T) recorded at ``steps`` (T,); values are
    multiplied by ``scale`` (per cent by default). ``styles`` maps a label to a format string.
    The sd uses n - 1 degrees of freedom; with one seed no band is drawn. Returns ``ax``.
    """
    s = np.asarray(steps, dtype=float)
    for label, values in curves.items():
        _, v = as_curves(s, np.atleast_2d(values))
        mean = scale * v.mean(0)
        line, = ax.plot(s, mean, (styles or {}).get(label, "-"), label=label, ms=3)
        if band and len(v) > 1:
            sd = scale * v.std(0, ddof=1)
            ax.fill_between(s, mean - sd, mean + sd, color=line.get_color(), alpha=0.2, lw=0)
    return ax
