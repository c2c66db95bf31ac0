"""The small, seeded experiments of chapter T05 (negative transfer), shared by the chapter, its
exercise and the exercise's checks so that all three train the same networks.

Sources are :class:`~tlcourse.layer_transfer.TransferCNN` networks trained on EMNIST digits,
EMNIST letters A-S, or EMNIST digits with permuted labels (a source whose task has nothing to do
with its images); the target is USPS at 14x14. Every arm is trained by
:func:`tlcourse.l2sp.fit_with_l2sp` (L2-SP when ``alpha > 0``, plain fine-tuning otherwise).
"""
from __future__ import annotations

import numpy as np
import torch

from .l2sp import accuracy, fit_with_l2sp

__all__ = ["SOURCES", "SOURCE_TRAIN", "SOURCE_VAL", "images14", "train_source", "target_splits", "target_model",
           "accuracy"]

SOURCES = {"digits": ("emnist_digits", False), "letters": ("emnist_letters", False),
           "shuffled": ("emnist_digits", True)}
SOURCE_TRAIN, SOURCE_VAL = 4000, 1000


def images14(name: str, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Images of dataset ``name`` resized to 14x14 (N, 1, 14, 14) in [0, 1], and labels (N,)."""
    from . import data

    x, y = data.load(name, split).to_tensors()
    return data.resize(x, 14), y


def train_source(kind: str, seed: int = 0, epochs: int | None = None):
    """One of chapter T05's source networks, a :class:`~tlcourse.layer_transfer.TransferCNN`.

    ``kind``: ``"digits"`` (10 EMNIST digit classes), ``"letters"`` (19 EMNIST letters A-S) or
    ``"shuffled"`` (the same EMNIST digits with their labels randomly permuted: a source whose
    task has nothing to do with the images). ``SOURCE_TRAIN`` = 4,000 images drawn with ``seed``,
    Adam at 1e-3, batches of 64, 3 epochs (15 for ``"shuffled"``, which learns slowly); the next
    ``SOURCE_VAL`` images score it. Returns ``(model, source validation accuracy)``; about 0.5 s
    per epoch of one CPU core.
    """
    from .layer_transfer import TransferCNN

    if kind not in SOURCES:
        raise ValueError(f"unknown source {kind!r}; choose one of {sorted(SOURCES)}")
    name, shuffle = SOURCES[kind]
    x, y = images14(name, "test")
    order = torch.from_numpy(np.random.default_rng(seed).permutation(len(y))[:SOURCE_TRAIN + SOURCE_VAL])
    x, y = x[order], y[order].clone()
    if shuffle:   # the labels are permuted across images: nothing about an image predicts its label
        y = y[torch.from_numpy(np.random.default_rng(seed + 99).permutation(len(y)))]
    epochs = epochs or (15 if shuffle else 3)
    torch.manual_seed(seed)
    model = TransferCNN(int(y.max()) + 1)
    model, history, _ = fit_with_l2sp(model, x[:SOURCE_TRAIN], y[:SOURCE_TRAIN], x[SOURCE_TRAIN:],
                                      y[SOURCE_TRAIN:], epochs=epochs, lr=1e-3, batch_size=64, seed=seed,
                                      keep="last")
    return model, history.rows[-1]["val_acc"]


def target_splits(seed: int, n_train: int = 100, n_val: int = 300) -> dict:
    """Chapter T05's target: USPS digits at 14x14. ``n_train`` training and ``n_val`` validation
    images drawn from USPS train with ``seed``; the test split is all 2,007 USPS test images.
    Returns ``{"train": (x, y), "val": (x, y), "test": (x, y)}``."""
    x, y = images14("usps", "train")
    order = torch.from_numpy(np.random.default_rng(seed).permutation(len(y)))
    tr, va = order[:n_train], order[n_train:n_train + n_val]
    return {"train": (x[tr], y[tr]), "val": (x[va], y[va]), "test": images14("usps", "test")}


def target_model(source=None, *, n_copied: int = 4, frozen: bool = False, seed: int = 0):
    """A fresh TransferCNN(10) for the target, initialised from ``seed``; with a ``source``, its
    first ``n_copied`` blocks are copied (and frozen when ``frozen``). Every arm of one seed starts
    from the same initialisation, so arm-minus-scratch gaps are paired."""
    from .layer_transfer import TransferCNN, transfer_first_layers

    torch.manual_seed(1000 + seed)
    model = TransferCNN(10)
    if source is not None:
        transfer_first_layers(source, model, n_copied, freeze_copied=frozen)
    return model
