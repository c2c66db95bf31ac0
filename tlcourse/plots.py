"""Plotting helpers: learning curves, confusion matrices and first-layer filters, titled and labelled.

Each function draws on a given ``ax`` (or a new figure) and returns the figure, so notebooks can
compose them. Nothing is shown or saved here: the caller decides.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from sklearn.metrics import ConfusionMatrixDisplay, confusion_matrix

__all__ = ["plot_learning_curves", "plot_confusion_matrix", "filter_images", "plot_filters"]


def plot_learning_curves(histories: Mapping[str, object], metric: str = "val_acc", ax=None,
                         title: str | None = None, ylabel: str | None = None, stage_marks: bool = True):
    """One line per run: ``metric`` (a :class:`~tlcourse.train.History` column) against the epoch.

    Args:
        histories: ``{label: History}``.
        metric: ``train_loss``, ``train_acc``, ``val_loss`` or ``val_acc``.
        stage_marks: draw a dotted line where a run's ``stage`` changes (two-stage fine-tuning).
    """
    if not histories:
        raise ValueError("histories is empty: pass {label: History}")
    fig, ax = _figure(ax)
    for label, history in histories.items():
        values = history[metric]
        if all(v is None for v in values):
            raise ValueError(f"run {label!r} has no {metric!r}: was it trained with a val_loader?")
        epochs = history["epoch"]
        (line,) = ax.plot(epochs, values, marker="o", ms=3, label=label)
        stages = history["stage"]
        if stage_marks and any(s is not None for s in stages):
            for e, (a, b) in zip(epochs[1:], zip(stages, stages[1:])):
                if a != b:
                    ax.axvline(e - 0.5, color=line.get_color(), ls=":", lw=1)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel or metric.replace("_", " ").replace("acc", "accuracy"))
    ax.set_title(title or f"{metric} per epoch")
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def plot_confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], classes: Sequence[str] | None = None,
                          normalize: str | None = "true", ax=None, title: str = "Confusion matrix"):
    """Confusion matrix (rows: true class, columns: predicted) drawn with scikit-learn.

    ``normalize="true"`` shows each row as fractions of that class (recall on the diagonal).
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true and y_pred differ in shape: {y_true.shape} vs {y_pred.shape}")
    labels = np.arange(len(classes)) if classes is not None else None
    cm = confusion_matrix(y_true, y_pred, labels=labels, normalize=normalize)
    fig, ax = _figure(ax, size=(5.5, 5))
    ConfusionMatrixDisplay(cm, display_labels=classes).plot(
        ax=ax, colorbar=False, values_format=".2f" if normalize else "d", cmap="Blues")
    ax.set_title(title)
    return fig


def filter_images(weights) -> np.ndarray:
    """Convolution filters as displayable images: (K, C, h, w) weights -> (K, h, w, C) in [0, 1].

    Each filter is scaled on its own to the full range (its minimum to 0, its maximum to 1), so
    the display shows its pattern, not its size; grey filters (C = 1) keep one channel.

    >>> import torch
    >>> filter_images(torch.tensor([[[[-1.0, 1.0]]]])).tolist()
    [[[[0.0], [1.0]]]]
    """
    w = np.asarray(weights.detach().float().cpu() if hasattr(weights, "detach") else weights, dtype=np.float64)
    if w.ndim != 4:
        raise ValueError(f"expected conv weights of shape (K, C, h, w), got {w.shape}")
    low, high = w.min(axis=(1, 2, 3), keepdims=True), w.max(axis=(1, 2, 3), keepdims=True)
    return ((w - low) / np.maximum(high - low, 1e-12)).transpose(0, 2, 3, 1)


def plot_filters(banks: Mapping[str, object], ncols: int = 16, title: str | None = None):
    """Show banks of first-layer filters, one block of rows per bank, ``ncols`` filters per row.

    ``banks`` maps a label to conv weights (K, C, h, w) (C = 1 grey, C = 3 RGB); each filter is
    scaled with :func:`filter_images`. Returns the figure.
    """
    images = {name: filter_images(w) for name, w in banks.items()}
    nrows = sum(-(-len(v) // ncols) for v in images.values())
    fig, axes = plt.subplots(nrows, ncols, figsize=(0.75 * ncols, 0.9 * nrows), squeeze=False)
    row = 0
    for name, imgs in images.items():
        for k, img in enumerate(imgs):
            ax = axes[row + k // ncols, k % ncols]
            ax.imshow(img[:, :, 0] if img.shape[2] == 1 else img, cmap="gray")
        axes[row, 0].set_ylabel(name, fontsize=7)
        row += -(-len(imgs) // ncols)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def _figure(ax, size=(6, 4)):
    if ax is None:
        fig, ax = plt.subplots(figsize=size)
        return fig, ax
    return ax.figure, ax
