"""Transfer versus training from scratch on a small labelled target set.

The basic experiment of transfer learning (Pan & Yang, 2010; Yosinski et al., 2014): take a target
task with ``n`` labelled examples per class, train the same architecture (a) from a random
initialisation and (b) from weights pretrained on a related source task with a new output layer,
and compare their accuracy on held-out target data as ``n`` grows. Transfer helps most when ``n``
is small; the gap closes as the target set grows.

Functions here build class-balanced subsets, replace a classifier's head, train one model on one
subset, and run the whole comparison into a tidy table (one row per method, size and seed).
"""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from .finetune import freeze
from .train import evaluate, fit, make_loader

__all__ = ["balanced_subset", "replace_head", "train_on_subset", "scratch_vs_transfer"]


def balanced_subset(labels: np.ndarray | torch.Tensor, n_per_class: int, seed: int = 0) -> np.ndarray:
    """Indices of ``n_per_class`` examples of every class in ``labels`` (N,), drawn without replacement.

    The order is shuffled; the same seed gives the same subset, and the subset for a smaller
    ``n_per_class`` is contained in the one for a larger ``n_per_class`` (nested learning curves).

    >>> balanced_subset(np.array([0, 0, 1, 1, 1, 2, 2]), 2, seed=0).size
    6
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D (N,), got shape {labels.shape}")
    if n_per_class < 1:
        raise ValueError(f"n_per_class must be >= 1, got {n_per_class}")
    rng = np.random.default_rng(seed)
    chosen = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        if len(members) < n_per_class:
            raise ValueError(f"class {cls} has only {len(members)} examples, fewer than "
                             f"n_per_class={n_per_class}")
        chosen.append(rng.permutation(members)[:n_per_class])
    return rng.permutation(np.concatenate(chosen))


def replace_head(model: nn.Module, num_classes: int, seed: int = 0, attr: str = "head") -> nn.Module:
    """Give ``model`` a freshly initialised linear ``attr`` layer with ``num_classes`` outputs.

    The old layer's input width is kept; the new layer is created on the old one's device and
    initialised from ``seed`` so the comparison between methods is fair.

    >>> net = nn.Sequential()
    >>> net.head = nn.Linear(4, 10)
    >>> replace_head(net, 3).head.out_features
    3
    """
    old = getattr(model, attr, None)
    if not isinstance(old, nn.Linear):
        raise ValueError(f"model.{attr} must be an nn.Linear to be replaced, got {type(old).__name__}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        new = nn.Linear(old.in_features, num_classes)
    setattr(model, attr, new.to(old.weight.device))
    return model


def train_on_subset(model: nn.Module, x: torch.Tensor, y: torch.Tensor, x_test: torch.Tensor,
                    y_test: torch.Tensor, *, steps: int = 200, lr: float = 1e-3, batch_size: int = 32,
                    frozen_blocks: Sequence[str] = (), seed: int = 0, amp: bool = False) -> dict:
    """Train ``model`` on (x, y) for about ``steps`` Adam steps and return its test accuracy.

    Using a fixed number of optimisation steps (rather than epochs) gives every target size the
    same training budget. Blocks in ``frozen_blocks`` are frozen (their BatchNorm layers stay in
    inference mode). Returns ``{"accuracy", "seconds", "history"}``.
    """
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"x and y must be non-empty and of equal length, got {len(x)} and {len(y)}")
    if frozen_blocks:
        freeze(model, list(frozen_blocks))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    batches_per_epoch = -(-len(x) // batch_size)
    epochs = max(1, round(steps / batches_per_epoch))
    torch.manual_seed(seed)
    start = time.perf_counter()
    history = fit(model, make_loader(x, y, batch_size, shuffle=True, seed=seed), epochs=epochs,
                  optimizer=opt, progress=False, amp=amp)
    accuracy = evaluate(model, make_loader(x_test, y_test, 512), amp=amp)["accuracy"]
    return {"accuracy": accuracy, "seconds": time.perf_counter() - start, "history": history}


def scratch_vs_transfer(methods: Mapping[str, Callable[[], nn.Module]], x: torch.Tensor, y: torch.Tensor,
                        x_test: torch.Tensor, y_test: torch.Tensor, sizes: Sequence[int],
                        seeds: Sequence[int] = (0,), frozen: Mapping[str, Sequence[str]] | None = None,
                        **train_kwargs):
    """Train every method on nested class-balanced subsets of every size; return a DataFrame.

    Args:
        methods: ``{name: factory}``; each factory returns a fresh model with the right number of
            outputs, e.g. ``{"scratch": lambda: DigitCNN(19), "transfer": pretrained_with_new_head}``.
        x, y: the target training pool; subsets of ``n`` per class are drawn from it.
        x_test, y_test: held-out target data, the same for every run.
        sizes: examples per class, e.g. ``[5, 20, 80]``.
        frozen: ``{name: blocks to freeze}`` for methods that keep part of the model fixed.
        train_kwargs: passed to :func:`train_on_subset` (``steps``, ``lr``, ``batch_size``...).

    Returns:
        ``pandas.DataFrame`` with columns ``method, n_per_class, n_train, seed, accuracy, seconds``.
    """
    import pandas as pd

    frozen = frozen or {}
    unknown = set(frozen) - set(methods)
    if unknown:
        raise ValueError(f"frozen names methods that do not exist: {sorted(unknown)}")
    rows = []
    for seed in seeds:
        for n in sizes:
            idx = torch.as_tensor(balanced_subset(y, n, seed=seed))
            for name, make in methods.items():
                torch.manual_seed(seed)
                model = make()
                result = train_on_subset(model, x[idx], y[idx], x_test, y_test, seed=seed,
                                         frozen_blocks=frozen.get(name, ()), **train_kwargs)
                rows.append({"method": name, "n_per_class": n, "n_train": len(idx), "seed": seed,
                             "accuracy": result["accuracy"], "seconds": result["seconds"]})
    return pd.DataFrame(rows)
