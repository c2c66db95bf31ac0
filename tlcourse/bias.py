"""Inherited bias in transfer learning: a seeded biased source, subgroup metrics, bias amplification.

Chapter T18 builds a controlled case of a source whose subgroup attribute is tied to the label, and
measures what a model trained on it passes on to a target. Three pieces live here.

**The construction** (:func:`biased_digit_splits`). Every MNIST test image ``i < 9001`` exists in two
renderings: the original grey digit (group 0, "plain") and the same digit blended onto a colour
photograph patch, MNIST-M item ``i`` (group 1, "coloured"; Ganin & Lempitsky, 2015). The group is a
property of the image, like a skin tone or a camera, that says nothing about the digit. Each underlying
digit is used once, in one rendering, in one split, so no split shares a handwritten digit with another.
The *source* takes, for every class ``c``, ``n_source_per_class`` images of which a share
``coloured_share[c]`` is coloured: choosing shares far from 1/2 and different between classes makes the
group predict the label in the source, which is the bias. Every other split is balanced, with the
same number of images in each (class, group) cell, except ``source_test`` (the source's own skew,
held out, where Zhao et al. measure amplification) and ``target_skewed`` (a target the size of
``target`` with the source's skew).

**Subgroup metrics** (:func:`subgroup_frame`, :func:`fairness_report`), on top of ``fairlearn``'s
``MetricFrame``, ``equalized_odds_difference`` and ``demographic_parity_difference``. Both fairlearn
functions are defined for a *binary* decision: ``equalized_odds_difference`` is
max(TPR gap, FPR gap) between groups and raises on multiclass labels; ``demographic_parity_difference``
is the gap in selection rates P(h(x) = 1 | A = a) and, given ten digit labels, silently measures the
share of predictions equal to 1. So a multiclass prediction is binarised one-vs-rest first
(:func:`binarise`) and the report says which outcome was used.

**Bias amplification** (:func:`bias_amplification`), Zhao, Wang, Yatskar, Ordonez & Chang (2017),
"Men also like shopping", EMNLP. With ``c(o, g)`` the number of examples of output ``o`` with
attribute ``g``, the bias of ``o`` towards ``g`` is ``b(o, g) = c(o, g) / sum_g' c(o, g')``. With
``b*`` computed on the training labels and ``b~`` on the model's predictions for a test set drawn
like the training set,

    BA = 1/|O| * sum_g sum_{o : b*(o, g) > 1/|G|} ( b~(o, g) - b*(o, g) ).

BA > 0: where the training data leaned towards a group, the predictions lean further.

>>> import numpy as np
>>> y, g = np.array([0, 0, 0, 1, 1, 1]), np.array([0, 0, 1, 1, 1, 0])
>>> cooccurrence_bias(y, g).round(3).tolist()
[[0.667, 0.333], [0.333, 0.667]]
>>> bias_amplification(y, g, y, g)   # predictions with the training co-occurrence: nothing amplified
0.0
>>> bias_amplification(y, g, np.array([0, 0, 1, 1, 1, 0]), g)  # the group decides the prediction
0.333...
"""
from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

__all__ = ["GROUPS", "Split", "digit_renderings", "biased_digit_splits", "cooccurrence_bias",
           "bias_amplification", "binarise", "subgroup_frame", "fairness_report", "train_source",
           "arm_model", "predict_labels"]

#: Group 0 and group 1 of the construction.
GROUPS = ("plain", "coloured")


class Split(NamedTuple):
    """Images ``x`` float32 (N, 3, S, S) in [0, 1], digit labels ``y`` int64 (N,), groups ``group`` int64 (N,)."""

    x: torch.Tensor
    y: torch.Tensor
    group: torch.Tensor


@functools.lru_cache(maxsize=2)
def digit_renderings(size: int = 14) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(plain, coloured, labels)``: MNIST test images 0..9000 as grey RGB and as MNIST-M, (9001, 3, size, size).

    Item ``i`` of both tensors is the same handwritten digit (MNIST-M item ``i`` is MNIST test image ``i``
    on a photograph, its labels match 100 %); both are resized to ``size`` with antialiasing.
    Read through :func:`tlcourse.data.load` (checksums verified); cached for the process.
    """
    from . import data

    mnist_m = data.load("mnist_m")
    xm, ym = mnist_m.to_tensors()
    xp, yp = data.load("mnist").to_tensors()
    xp, yp = xp[:len(ym)], yp[:len(ym)]
    if not torch.equal(yp, ym):
        raise ValueError("MNIST and MNIST-M labels disagree: the two renderings are not the same digits")
    plain = data.resize(data.to_rgb(xp), size).clamp(0, 1)
    coloured = data.resize(xm, size).clamp(0, 1)
    return plain, coloured, ym


def _shares(coloured_share, n_classes: int) -> np.ndarray:
    share = np.broadcast_to(np.asarray(coloured_share, dtype=float), (n_classes,))
    if np.any(share < 0) or np.any(share > 1):
        raise ValueError(f"coloured_share must hold fractions in [0, 1], got {share.tolist()}")
    return share


def biased_digit_splits(seed: int = 0, *, coloured_share: Sequence[float] | float = (0.1,) * 5 + (0.8,) * 5,
                        n_source_per_class: int = 300, n_source_test_per_class: int = 100,
                        n_target_per_cell: int = 10, n_val_per_cell: int = 20, n_test_per_cell: int = 100,
                        size: int = 14) -> dict[str, Split]:
    """The seeded biased source and the balanced target of chapter T18, as :class:`Split` s.

    ``coloured_share[c]``: the share of coloured images among the source's (and ``source_test`` 's and
    ``target_skewed`` 's) images of class ``c``; by default 10 % for digits 0-4 and 80 % for 5-9 (chapter T18), so a
    coloured background "predicts" a high digit. ``target``, ``val`` and ``test`` are balanced:
    ``n_*_per_cell`` images in every (class, group) cell. ``seed`` draws which handwritten digits go to
    which split and the order within a split; each digit is used once, in one rendering.

    Returns ``{"source", "source_test", "target", "target_skewed", "val", "test"}``.

    >>> s = biased_digit_splits(0, n_source_per_class=20, n_source_test_per_class=10, n_target_per_cell=2,
    ...                         n_val_per_cell=2, n_test_per_cell=2)
    >>> [len(s[k].y) for k in ("source", "target", "test")], int(s["source"].group[s["source"].y == 9].sum())
    ([200, 40, 40], 16)
    """
    plain, coloured, labels = digit_renderings(size)
    n_classes = int(labels.max()) + 1
    share = _shares(coloured_share, n_classes)
    n_tgt = 2 * n_target_per_cell
    blocks = {"source": n_source_per_class, "source_test": n_source_test_per_class, "target": n_tgt,
              "target_skewed": n_tgt, "val": 2 * n_val_per_cell, "test": 2 * n_test_per_cell}
    skewed = {"source", "source_test", "target_skewed"}
    rng = np.random.default_rng(seed)
    parts: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {k: [] for k in blocks}
    y_np = labels.numpy()
    for c in range(n_classes):
        members = rng.permutation(np.flatnonzero(y_np == c))
        if len(members) < sum(blocks.values()):
            raise ValueError(f"class {c} has {len(members)} digits, the splits need {sum(blocks.values())}")
        start = 0
        for name, n in blocks.items():
            idx = members[start:start + n]
            start += n
            n_col = int(round(n * share[c])) if name in skewed else n // 2
            group = np.zeros(n, dtype=np.int64)
            group[:n_col] = 1
            parts[name].append((idx, group))
    out = {}
    for name, chunks in parts.items():
        idx = np.concatenate([i for i, _ in chunks])
        group = np.concatenate([g for _, g in chunks])
        order = rng.permutation(len(idx))
        idx, group = torch.from_numpy(idx[order]), torch.from_numpy(group[order])
        x = torch.where(group.bool()[:, None, None, None], coloured[idx], plain[idx])
        out[name] = Split(x, labels[idx], group)
    return out


def _as_int_array(values, name: str) -> np.ndarray:
    a = values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    if a.ndim != 1 or len(a) == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array (N,), got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.integer):
        if not np.all(np.mod(a, 1) == 0):
            raise ValueError(f"{name} must hold integer class or group ids")
        a = a.astype(np.int64)
    if a.min() < 0:
        raise ValueError(f"{name} must hold non-negative ids, got {a.min()}")
    return a


def cooccurrence_bias(labels, groups, n_classes: int | None = None, n_groups: int | None = None) -> np.ndarray:
    """Zhao et al.'s ``b(o, g) = c(o, g) / sum_g' c(o, g')``, array (n_classes, n_groups); rows sum to 1.

    ``labels`` (N,) outputs (true or predicted), ``groups`` (N,) attribute ids. A class that never occurs
    gets a row of NaN.

    >>> cooccurrence_bias([0, 0, 1], [1, 1, 0]).tolist()
    [[0.0, 1.0], [1.0, 0.0]]
    """
    y, g = _as_int_array(labels, "labels"), _as_int_array(groups, "groups")
    if len(y) != len(g):
        raise ValueError(f"labels and groups need the same length, got {len(y)} and {len(g)}")
    n_classes = int(y.max()) + 1 if n_classes is None else n_classes
    n_groups = int(g.max()) + 1 if n_groups is None else n_groups
    counts = np.zeros((n_classes, n_groups))
    np.add.at(counts, (y, g), 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return counts / counts.sum(1, keepdims=True)


def bias_amplification(train_labels, train_groups, pred_labels, test_groups, per_class: bool = False):
    """Bias amplification of Zhao et al. (2017): how much further the predictions lean than the training data.

    ``BA = 1/|O| * sum_g sum_{o : b*(o, g) > 1/|G|} (b~(o, g) - b*(o, g))``, with ``b*`` from the training
    labels ``train_labels`` (N,) and groups ``train_groups`` (N,), and ``b~`` from the model's predicted
    labels ``pred_labels`` (M,) on a test set with groups ``test_groups`` (M,), drawn like the training set
    (otherwise a shift of the test set's base rates is counted as amplification). 0 when the predictions
    have the training co-occurrence, > 0 when they exaggerate it. ``per_class=True`` returns the (|O|,)
    terms whose mean is BA. Raises when a class that the training data leans on is never predicted
    (``b~`` undefined).

    >>> bias_amplification([0, 0, 1, 1], [0, 0, 1, 0], [0, 0, 1, 1], [0, 0, 1, 0])
    0.0
    """
    b_train = cooccurrence_bias(train_labels, train_groups)
    n_classes, n_groups = b_train.shape
    y_pred, g_test = _as_int_array(pred_labels, "pred_labels"), _as_int_array(test_groups, "test_groups")
    if y_pred.max() >= n_classes or g_test.max() >= n_groups:
        raise ValueError(f"predictions or test groups outside the training ids ({n_classes} classes, "
                         f"{n_groups} groups)")
    b_pred = cooccurrence_bias(y_pred, g_test, n_classes, n_groups)
    leans = b_train > 1 / n_groups
    missing = [o for o in range(n_classes) if leans[o].any() and np.isnan(b_pred[o]).any()]
    if missing:
        raise ValueError(f"class {missing[0]} is never predicted on the test set, so b~({missing[0]}, g) is "
                         "undefined; use a larger test set or report the class separately")
    terms = np.where(leans, b_pred - b_train, 0.0).sum(1)
    return terms if per_class else float(terms.mean())


def binarise(labels, positive) -> np.ndarray:
    """One-vs-rest outcome: 1 where ``labels`` (N,) is in ``positive`` (a class or a collection), else 0.

    >>> binarise([3, 7, 5, 0], positive=range(5, 10)).tolist()
    [0, 1, 1, 0]
    """
    positive = [positive] if np.isscalar(positive) else list(positive)
    return np.isin(_as_int_array(labels, "labels"), positive).astype(np.int64)


def subgroup_frame(y_true, y_pred, groups, names: Sequence[str] = GROUPS):
    """A fairlearn ``MetricFrame`` of accuracy and count per group (``names[g]`` for group id ``g``).

    ``.by_group`` is the table, ``.difference()`` the largest gap between groups, ``.group_min()`` the
    worst group.
    """
    from fairlearn.metrics import MetricFrame, count
    from sklearn.metrics import accuracy_score

    y, p, g = (_as_int_array(a, n) for a, n in ((y_true, "y_true"), (y_pred, "y_pred"), (groups, "groups")))
    return MetricFrame(metrics={"accuracy": accuracy_score, "count": count}, y_true=y, y_pred=p,
                       sensitive_features=np.asarray(names, dtype=object)[g])


def fairness_report(y_true, y_pred, groups, positive, names: Sequence[str] = GROUPS) -> dict[str, float]:
    """Subgroup accuracies and gap, and fairlearn's two group metrics on a one-vs-rest outcome.

    ``positive``: the classes that make the binary outcome 1 (:func:`binarise`), applied to the true and
    the predicted labels alike. Returns ``{"acc <name>"..., "accuracy gap", "worst-group accuracy",
    "equalized odds difference", "demographic parity difference", "TPR <name>"..., "FPR <name>"...}``,
    all fractions.
    """
    from fairlearn.metrics import MetricFrame, demographic_parity_difference, equalized_odds_difference
    from sklearn.metrics import accuracy_score

    y, p, g = (_as_int_array(a, n) for a, n in ((y_true, "y_true"), (y_pred, "y_pred"), (groups, "groups")))
    sensitive = np.asarray(names, dtype=object)[g]
    frame = MetricFrame(metrics=accuracy_score, y_true=y, y_pred=p, sensitive_features=sensitive)
    yb, pb = binarise(y, positive), binarise(p, positive)
    out = {f"acc {n}": float(v) for n, v in frame.by_group.items()}
    out["accuracy gap"] = float(frame.difference())
    out["worst-group accuracy"] = float(frame.group_min())
    out["equalized odds difference"] = float(equalized_odds_difference(yb, pb, sensitive_features=sensitive))
    out["demographic parity difference"] = float(demographic_parity_difference(yb, pb, sensitive_features=sensitive))
    for n in frame.by_group.index:   # the rates behind the equalized odds difference, per group
        member = sensitive == n
        out[f"TPR {n}"] = float(pb[member & (yb == 1)].mean()) if (member & (yb == 1)).any() else float("nan")
        out[f"FPR {n}"] = float(pb[member & (yb == 0)].mean()) if (member & (yb == 0)).any() else float("nan")
    return out


def train_source(split: Split, seed: int = 0, *, steps: int = 450, lr: float = 3e-3,
                 batch_size: int = 32) -> torch.nn.Module:
    """The source network of chapter T18: a :class:`~tlcourse.layer_transfer.TransferCNN` (10 classes, RGB)
    trained on ``split`` (a :class:`Split`) for ``steps`` Adam steps at ``lr``, batches of ``batch_size``.

    Initialised from ``torch.manual_seed(seed)``, batches drawn from ``seed``; trained with one torch thread,
    so the same call gives the same weights on every machine (the thread count changes the order of
    floating-point sums). Returned in eval mode; about 1.5 s of one CPU core with the defaults at 16x16.
    """
    from .finetune_study import train_steps
    from .layer_transfer import TransferCNN

    torch.manual_seed(seed)
    model = TransferCNN(10, in_channels=3, image_size=int(split.x.shape[-1]))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train_steps(model, split.x, split.y, lr=lr, steps=steps, batch_size=batch_size, seed=seed)
    finally:
        torch.set_num_threads(threads)
    return model


def arm_model(kind: str, source: torch.nn.Module | None = None, *, seed: int = 0) -> torch.nn.Module:
    """A fresh target network for one arm of the T18 comparison, initialised from ``seed``.

    ``kind``: ``"target only"`` (random :class:`~tlcourse.layer_transfer.TransferCNN`, nothing copied),
    ``"linear probe"`` (every block below the head copied from ``source`` and frozen; a new head) or
    ``"fine-tune"`` (every block copied, all trainable; a new head). Within a seed all arms share the
    same random head, so their differences are paired.
    """
    from .layer_transfer import TransferCNN, transfer_first_layers

    kinds = ("target only", "linear probe", "fine-tune")
    if kind not in kinds:
        raise ValueError(f"unknown arm {kind!r}; choose one of {kinds}")
    if kind != "target only" and source is None:
        raise ValueError(f"the {kind!r} arm needs a source model")
    torch.manual_seed(1000 + seed)
    model = TransferCNN(10, in_channels=3, image_size=source.image_size if source is not None else 14)
    if kind != "target only":
        transfer_first_layers(source, model, len(model.block_names) - 1, freeze_copied=kind == "linear probe")
    return model


def predict_labels(model: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    """Arg-max class of ``model`` (eval mode) on ``x`` (N, ...), as an int64 NumPy array (N,)."""
    from .train import predict

    return predict(model, x, batch_size=1000).argmax(1).numpy()
