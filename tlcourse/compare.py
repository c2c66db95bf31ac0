"""Fair comparisons of training recipes: equal budgets, settings chosen on validation data, paired
statistics over seeds, and the classical hand-crafted baseline (HOG + linear SVM).

A comparison of "transfer versus scratch" is only as good as its weakest arm. The helpers here make
the usual mistakes hard to make:

- :class:`Budget` is the tuning budget of one arm: a learning-rate grid, a cap on optimiser steps,
  how often the validation split is scored and the early-stopping patience. Give every arm the same
  ``Budget`` and assert it (``assert len({arm.budget for arm in arms}) == 1``).
- :func:`train_early_stopped` trains with Adam (Kingma & Ba, 2015) for at most ``max_steps`` steps,
  scores the validation split every ``eval_every`` steps and keeps the weights of the best score
  (early stopping, Prechelt, 1998): the number of steps is chosen on validation data, never on the
  test data.
- :func:`tune_lr` runs :func:`train_early_stopped` once per learning rate of the grid and keeps the
  run with the best validation accuracy.
- :func:`paired_gap` summarises per-seed differences ``a_s - b_s`` of two arms run on the same data
  (mean, standard deviation, standard error ``sd / sqrt(n)``) and calls the gap real only when
  ``|mean| > 2 * se``, otherwise "within noise".
- :func:`hog_features` and :func:`linear_svm` are the classical baseline: histograms of oriented
  gradients (Dalal & Triggs, 2005) fed to a linear SVM (Fan et al., 2008) whose ``C`` is chosen on
  validation data.
"""
from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .batchnorm import keep_frozen_batchnorm_in_eval
from .finetune import freeze
from .train import channels_last, index_batches, model_device

__all__ = ["Budget", "train_early_stopped", "tune_lr", "score", "paired_gap", "mean_sd",
           "hog_features", "linear_svm"]


@dataclass(frozen=True)
class Budget:
    """The training and tuning budget of one arm of a comparison (hashable, so arms can be compared).

    ``lr_grid``: learning rates tried, one run each; ``max_steps``: cap on Adam steps per run;
    ``eval_every``: steps between two scores on the validation split; ``patience``: scores without
    improvement before a run stops; ``batch_size``: examples per step.

    >>> Budget((1e-3,), max_steps=100).runs
    1
    """

    lr_grid: tuple[float, ...]
    max_steps: int
    eval_every: int = 10
    patience: int = 5
    batch_size: int = 32

    def __post_init__(self):
        if not self.lr_grid or any(lr <= 0 for lr in self.lr_grid):
            raise ValueError(f"lr_grid must hold positive learning rates, got {self.lr_grid}")
        for name in ("max_steps", "eval_every", "patience", "batch_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {getattr(self, name)!r}")

    @property
    def runs(self) -> int:
        """Training runs per tuning: one per learning rate."""
        return len(self.lr_grid)


@torch.no_grad()
def score(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256) -> dict[str, float]:
    """Accuracy and mean cross-entropy of ``model`` on ``x`` (N, ...) and ``y`` (N,), in eval mode.

    Returns ``{"accuracy", "loss"}``; the model's training mode is restored afterwards.
    """
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"x and y need equal non-zero lengths, got {len(x)} and {len(y)}")
    device, was_training = model_device(model), model.training
    model.eval()
    x = channels_last(x)
    correct, total_loss = 0, 0.0
    for i in range(0, len(x), batch_size):
        xb, yb = x[i:i + batch_size].to(device), y[i:i + batch_size].to(device)
        logits = model(xb).float()
        total_loss += F.cross_entropy(logits, yb, reduction="sum").item()
        correct += (logits.argmax(1) == yb).sum().item()
    model.train(was_training)
    return {"accuracy": correct / len(y), "loss": total_loss / len(y)}


def train_early_stopped(model: nn.Module, x: torch.Tensor, y: torch.Tensor, x_val: torch.Tensor,
                        y_val: torch.Tensor, *, lr: float, max_steps: int, eval_every: int = 10,
                        patience: int = 5, batch_size: int = 32, seed: int = 0,
                        frozen_blocks: Sequence[str] = ()) -> dict:
    """Train ``model`` with Adam on (x, y), early-stopped on the accuracy of (x_val, y_val).

    ``x`` (N, ...) and ``y`` (N,) integer classes; the same for ``x_val``, ``y_val``. Blocks named in
    ``frozen_blocks`` are frozen (their BatchNorm layers stay in inference mode). The validation
    split is scored every ``eval_every`` steps; a score counts as better when its accuracy is
    higher, or equal with a lower cross-entropy. The run stops after ``patience`` scores without
    improvement or after ``max_steps`` steps, and the model is left with the weights of its best
    score, in eval mode. Images (N, C, H, W) are trained in channels-last memory order (the model
    too), which only changes speed.

    Returns ``{"model", "lr", "best_step", "steps_run", "val_accuracy", "val_loss", "seconds"}``.
    """
    if len(x) != len(y) or len(x) < 2:
        raise ValueError(f"x and y need equal lengths >= 2, got {len(x)} and {len(y)}")
    if frozen_blocks:
        freeze(model, list(frozen_blocks))
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters")
    device = model_device(model)
    if x.ndim == 4:
        model.to(memory_format=torch.channels_last)
    x, x_val = channels_last(x), channels_last(x_val)
    optimizer = torch.optim.Adam(params, lr=lr, foreach=True)
    generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()

    def validation():
        metrics = score(model, x_val, y_val)
        return metrics["accuracy"], -metrics["loss"]

    best, best_step, best_state = (-math.inf, -math.inf), 0, None
    bad, step = 0, 0
    batches = index_batches(len(x), batch_size, generator)
    while step < max_steps and bad < patience:
        model.train()
        keep_frozen_batchnorm_in_eval(model)
        for _ in range(min(eval_every, max_steps - step)):
            idx = next(batches)
            xb, yb = channels_last(x[idx]).to(device), y[idx].to(device)
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(xb), yb)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss became {loss.item()} at step {step}: lower lr={lr}")
            loss.backward()
            optimizer.step()
            step += 1
        current = validation()
        if current > best:
            best, best_step, bad = current, step, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            bad += 1
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return {"model": model, "lr": lr, "best_step": best_step, "steps_run": step,
            "val_accuracy": best[0], "val_loss": -best[1], "seconds": time.perf_counter() - start}


def tune_lr(make_model: Callable[[], nn.Module], x: torch.Tensor, y: torch.Tensor,
            x_val: torch.Tensor, y_val: torch.Tensor, budget: Budget, *, seed: int = 0,
            frozen_blocks: Sequence[str] = (), lr_grid: Sequence[float] | None = None) -> dict:
    """One early-stopped run per learning rate; the run with the best validation score wins.

    ``make_model()`` returns a fresh model for each run, initialised from ``torch.manual_seed(seed)``
    so every learning rate starts from the same weights. ``lr_grid`` overrides ``budget.lr_grid``
    (to rerun a learning rate chosen earlier). Returns the winning run of
    :func:`train_early_stopped` plus ``"tried"``: ``{lr: (val_accuracy, best_step)}`` and
    ``"seconds"`` for all runs together.
    """
    grid = tuple(budget.lr_grid if lr_grid is None else lr_grid)
    best, tried, start = None, {}, time.perf_counter()
    for lr in grid:
        torch.manual_seed(seed)
        run = train_early_stopped(make_model(), x, y, x_val, y_val, lr=lr, max_steps=budget.max_steps,
                                  eval_every=budget.eval_every, patience=budget.patience,
                                  batch_size=budget.batch_size, seed=seed, frozen_blocks=frozen_blocks)
        tried[lr] = (run["val_accuracy"], run["best_step"])
        if best is None or (run["val_accuracy"], -run["val_loss"]) > (best["val_accuracy"], -best["val_loss"]):
            best = run
    return {**best, "tried": tried, "seconds": time.perf_counter() - start}


def paired_gap(a: Sequence[float], b: Sequence[float]) -> dict:
    """Mean, sd and standard error of the paired differences ``d_s = a_s - b_s`` over seeds.

    With ``n`` seeds, ``se = sd / sqrt(n)`` (``sd`` with ``n - 1`` degrees of freedom). The gap is
    called ``real`` only when ``n >= 2`` and ``|mean| > 2 se``; a zero spread with a non-zero mean
    counts as real. Pairing removes what both arms share on a seed (its subset, its split).

    >>> g = paired_gap([0.70, 0.72, 0.71], [0.60, 0.63, 0.61])
    >>> round(g["mean"], 3), g["real"]
    (0.097, True)
    >>> paired_gap([0.70, 0.60], [0.65, 0.66])["real"]
    False
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError(f"a and b must be 1-D of the same non-zero length, got {a.shape} and {b.shape}")
    d = a - b
    n = len(d)
    sd = float(d.std(ddof=1)) if n > 1 else float("nan")
    se = sd / math.sqrt(n) if n > 1 else float("nan")
    mean = float(d.mean())
    real = bool(n > 1 and abs(mean) > 2 * se)
    return {"mean": mean, "sd": sd, "se": se, "n": n, "real": real}


def mean_sd(values: Sequence[float], scale: float = 100.0, digits: int = 1) -> str:
    """``"mean ± sd"`` of ``values`` times ``scale`` (percent by default); sd with ``n - 1``.

    >>> mean_sd([0.5, 0.6, 0.7])
    '60.0 ± 10.0'
    """
    v = scale * np.asarray(values, dtype=float)
    sd = v.std(ddof=1) if len(v) > 1 else float("nan")
    return f"{v.mean():.{digits}f} ± {sd:.{digits}f}"


def hog_features(images: torch.Tensor | np.ndarray, orientations: int = 9, pixels_per_cell: int = 4,
                 cells_per_block: int = 2) -> np.ndarray:
    """Histograms of oriented gradients (Dalal & Triggs, 2005) of grey images, one row per image.

    ``images``: (N, 1, H, W) or (N, H, W). Each ``pixels_per_cell`` square cell gets a histogram of
    gradient orientations (``orientations`` unsigned bins over 0-180 degrees, weighted by the
    gradient magnitude); histograms are L2-Hys normalised over blocks of ``cells_per_block`` cells.
    For 28x28 images and the defaults: 7x7 cells, 6x6 blocks, 6*6*2*2*9 = 1,296 features.
    Returns float32 (N, D).
    """
    from skimage.feature import hog

    x = images.numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if x.ndim == 4:
        if x.shape[1] != 1:
            raise ValueError(f"hog_features expects grey images (N, 1, H, W), got {x.shape}")
        x = x[:, 0]
    if x.ndim != 3 or len(x) == 0:
        raise ValueError(f"hog_features expects (N, 1, H, W) or (N, H, W) with N >= 1, got {x.shape}")
    return np.stack([hog(im, orientations=orientations, pixels_per_cell=(pixels_per_cell,) * 2,
                         cells_per_block=(cells_per_block,) * 2, block_norm="L2-Hys")
                     for im in x]).astype(np.float32)


def linear_svm(f_train: np.ndarray, y_train: np.ndarray, f_val: np.ndarray, y_val: np.ndarray,
               c_grid: Sequence[float] = (0.01, 0.1, 1.0, 10.0)) -> dict:
    """A linear SVM (one-vs-rest, squared hinge: ``sklearn.svm.LinearSVC``) per ``C`` of the grid;
    the ``C`` with the best validation accuracy wins (the smaller ``C`` on ties: more regularised).

    Features (N, D), labels (N,). Returns ``{"model", "C", "val_accuracy", "tried": {C: accuracy}}``;
    score the test set with ``model.score(f_test, y_test)``.
    """
    from sklearn.svm import LinearSVC

    best, tried = None, {}
    for c in sorted(c_grid):
        clf = LinearSVC(C=c, max_iter=5000).fit(f_train, y_train)
        tried[c] = float(clf.score(f_val, y_val))
        if best is None or tried[c] > best["val_accuracy"]:
            best = {"model": clf, "C": c, "val_accuracy": tried[c]}
    return {**best, "tried": tried}
