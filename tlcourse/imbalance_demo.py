"""The seeded data and the small training arms of chapter T11 (imbalanced targets) and its exercise.

**Task.** Detect one letter of EMNIST letters A-S (default ``"E"``) among the 18 others, with a
source network trained on digits: :func:`tlcourse.zoo.pretrained_digit_cnn` (EMNIST digits, cached).
:func:`letter_detection_pool` draws a fixed pool of images (``seed=0``: the negatives the splits
need and three times the positives they need) and passes it once through the frozen CNN, keeping
two cuts of the network:

- ``"block2"`` (N, 1568): the flattened output of the convolutional blocks, the input of the top
  block, so fine-tuning ``block3`` + a new head costs a matrix product per step instead of the convolutions;
- ``"features"`` (N, 128): the penultimate features (``block3`` in inference mode), for heads on
  a frozen backbone.

Each seed then cuts the pool into train/validation/test with :func:`tlcourse.imbalance.imbalanced_splits`
at the ratio ``RATIO`` (50 negatives per positive in every split).

**Arms.** :func:`fit_head` fits a logistic-regression head on frozen features
(``sklearn.linear_model.LogisticRegression``, lbfgs) with optional class weights, choosing the
inverse regularisation ``C`` from ``C_GRID`` by the validation PR-AUC (average precision), which
judges the ranking and leaves the threshold for later. :func:`top_block_model` is the pretrained
``block3`` followed by a new two-class head, trained with :func:`tlcourse.imbalance.train_classifier`.
"""
from __future__ import annotations

import copy
import functools

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from torch import nn

from .imbalance import _average_precision, imbalance_sizes

__all__ = ["RATIO", "N_MAX", "C_GRID", "letter_detection_pool", "splits_of", "fit_head", "top_block_model"]

RATIO = 50                                              # negatives per positive, in every split
N_MAX = {"train": 1500, "val": 1500, "test": 2500}      # negatives per split; positives = N_MAX / RATIO
C_GRID = (0.1, 1.0, 10.0, 100.0)                        # logistic-regression C, chosen on validation


def letter_detection_pool(letter: str = "E", ratio: float = RATIO, n_max: dict | None = None, seed: int = 0,
                          cnn: nn.Module | None = None) -> dict:
    """The pool of chapter T11: images of ``letter`` (label 1) and of the other letters (label 0).

    Holds ``sum(n_max)`` negatives and three times the positives the splits need, drawn from
    ``seed``; returns ``{"labels" (N,) int64, "block2" (N, 1568), "features" (N, 128) float32
    tensors, "images" (N, 1, 28, 28), "letter", "ratio", "n_max", "cnn"}``. ``cnn`` defaults to the
    cached :func:`tlcourse.zoo.pretrained_digit_cnn` (seed 0), trained on first use; that default
    pool is computed once per process and shared (an exercise and its grader read the same one),
    so treat it as read-only.
    """
    n_max = dict(N_MAX if n_max is None else n_max)
    if cnn is None:
        return _default_pool(letter, float(ratio), tuple(n_max.items()), seed)
    return _pool(letter, ratio, n_max, seed, cnn)


@functools.lru_cache(maxsize=2)
def _default_pool(letter: str, ratio: float, n_max_items: tuple, seed: int) -> dict:
    from . import zoo

    return _pool(letter, ratio, dict(n_max_items), seed, zoo.pretrained_digit_cnn(seed=0))


def _pool(letter: str, ratio: float, n_max: dict, seed: int, cnn: nn.Module) -> dict:
    from .data import load

    letters = load("emnist_letters")
    if letter not in letters.classes:
        raise ValueError(f"letter must be one of {letters.classes}, got {letter!r}")
    x_all, y_all = letters.to_tensors()
    y_all = y_all.numpy()
    target = letters.classes.index(letter)
    n_pos = 3 * sum(imbalance_sizes(n, ratio, 2)[1] for n in n_max.values())
    rng = np.random.default_rng(seed)
    neg = rng.choice(np.flatnonzero(y_all != target), sum(n_max.values()), replace=False)
    pos = rng.choice(np.flatnonzero(y_all == target), min(n_pos, int((y_all == target).sum())), replace=False)
    idx = np.concatenate([neg, pos])
    cnn.eval()
    images = x_all[idx]
    with torch.no_grad():
        block2 = torch.cat([cnn.block2(cnn.block1(images[i:i + 1000])).flatten(1) for i in range(0, len(idx), 1000)])
        features = cnn.block3(block2)
    return {"labels": torch.as_tensor((y_all[idx] == target).astype(np.int64)), "block2": block2,
            "features": features, "images": images, "letter": letter, "ratio": ratio, "n_max": n_max, "cnn": cnn}


def splits_of(pool: dict, seed: int) -> dict[str, np.ndarray]:
    """Disjoint train/val/test indices into ``pool`` with its ratio in every split (seeded)."""
    from .imbalance import imbalanced_splits

    return imbalanced_splits(pool["labels"].numpy(), pool["ratio"], pool["n_max"], seed=seed)


def fit_head(x, y, x_val, y_val, class_weight: dict | None = None, c_grid=C_GRID, max_iter: int = 5000):
    """A logistic-regression head per ``C`` of ``c_grid``; the best validation average precision wins.

    ``x`` (N, D), ``y`` (N,) in {0, 1} (repeats allowed: an oversampled set), ``class_weight`` as
    ``{label: weight}``. Returns ``(classifier, C, validation AP)``; raises if a fit did not
    converge within ``max_iter`` iterations (every arm must be trained to the same standard).
    """
    x, x_val = np.asarray(x), np.asarray(x_val)
    y, y_val = np.asarray(y), np.asarray(y_val)
    best = None
    for c in c_grid:
        clf = LogisticRegression(C=c, class_weight=class_weight, max_iter=max_iter).fit(x, y)
        if clf.n_iter_.max() >= max_iter:
            raise RuntimeError(f"LogisticRegression(C={c}) did not converge in {max_iter} iterations")
        ap = _average_precision(y_val, clf.decision_function(x_val))
        if best is None or ap > best[2]:
            best = (clf, c, ap)
    return best


def top_block_model(cnn: nn.Module, seed: int = 0, n_classes: int = 2) -> nn.Sequential:
    """A copy of ``cnn.block3`` (flatten, linear 1568 -> 128, BatchNorm, ReLU; trainable) and a new
    linear head (128 -> ``n_classes``) initialised from ``seed``: input (N, 1568) or (N, 32, 7, 7)."""
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    head = nn.Linear(cnn.block3[1].out_features, n_classes)
    torch.random.set_rng_state(generator_state)
    top = copy.deepcopy(cnn.block3).requires_grad_(True)
    return nn.Sequential(top, head)
