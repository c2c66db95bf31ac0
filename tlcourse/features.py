"""Feature extraction: a frozen pretrained network as a fixed feature map, and a linear probe on top.

A backbone ``f`` pretrained on a source task maps an input ``x`` to a vector ``z = f(x)``. With
``f`` frozen, transfer reduces to fitting a small classifier ``g(z)`` on the target labels: the
*linear probe* (Alain & Bengio, 2016; Kornblith et al., 2019, "Do Better ImageNet Models Transfer
Better?"). Features can be taken at any layer (Yosinski et al., 2014, "How transferable are
features in deep neural networks?"): early layers give general, local features; late layers give
features specialised to the source task.

Extraction runs batched under ``torch.no_grad()`` in eval mode on the model's own device, so
BatchNorm uses its stored statistics and dropout is off.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn

from .train import model_device

__all__ = ["extract_features", "extract_layer_features", "linear_probe", "ProbeResult", "probe_as_linear"]


def _pool(out: torch.Tensor, pool: str | int) -> torch.Tensor:
    if out.dim() <= 2:
        return out.reshape(len(out), -1)
    if isinstance(pool, (int, np.integer)) and not isinstance(pool, bool) and pool >= 1:
        if out.dim() == 4 and (out.shape[-1] > pool or out.shape[-2] > pool):
            out = torch.nn.functional.adaptive_avg_pool2d(out, int(pool))  # (N, C, g, g)
        return out.flatten(1)
    if pool == "avg":
        return out.flatten(2).mean(-1)  # (N, C, H, W) -> (N, C): global average pooling
    if pool == "flatten":
        return out.flatten(1)
    raise ValueError(f"pool must be 'avg', 'flatten' or a grid size g >= 1, got {pool!r}")


@torch.no_grad()
def extract_layer_features(model: nn.Module, x: torch.Tensor, layers: Sequence[str],
                           batch_size: int = 256, pool: str | int = "avg") -> dict[str, np.ndarray]:
    """Activations of the named sub-modules of ``model`` for inputs ``x``.

    Args:
        model: any ``nn.Module``; it is run in eval mode and restored to its previous mode.
        x: (N, ...) inputs, on any device (batches are moved to the model's device).
        layers: names as in ``model.named_modules()``, e.g. ``["block1", "block3"]``.
        pool: ``"avg"`` averages (N, C, H, W) maps over space to (N, C); ``"flatten"`` keeps
            every position, (N, C*H*W); an integer ``g`` average-pools maps larger than g x g to a
            g x g grid, (N, C*g*g), which keeps the coarse layout that early layers need (a
            global average discards it) without the size of the full map.

    Returns:
        ``{layer: array (N, D_layer)}``, float32 on the CPU.

    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    >>> feats = extract_layer_features(net, torch.zeros(5, 1, 8, 8), ["0", "3"])
    >>> {k: v.shape for k, v in feats.items()}
    {'0': (5, 4), '3': (5, 2)}
    >>> extract_layer_features(net, torch.zeros(5, 1, 8, 8), ["0"], pool=2)["0"].shape  # 4 channels x 2 x 2
    (5, 16)
    """
    if len(x) == 0:
        raise ValueError("x is empty: there is nothing to extract features from")
    modules = dict(model.named_modules())
    missing = [name for name in layers if name not in modules]
    if missing:
        known = [n for n in modules if n][:20]
        raise ValueError(f"unknown layer(s) {missing}; some valid names: {known}")
    device = model_device(model)
    captured: dict[str, torch.Tensor] = {}
    hooks = [modules[name].register_forward_hook(
        lambda _m, _inp, out, name=name: captured.__setitem__(name, out)) for name in layers]
    chunks: dict[str, list[np.ndarray]] = {name: [] for name in layers}
    was_training = model.training
    model.eval()
    try:
        for i in range(0, len(x), batch_size):
            model(x[i:i + batch_size].to(device))
            for name in layers:
                chunks[name].append(_pool(captured[name].float(), pool).cpu().numpy())
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    return {name: np.concatenate(parts) for name, parts in chunks.items()}


@torch.no_grad()
def extract_features(backbone: nn.Module, x: torch.Tensor, batch_size: int = 256,
                     pool: str = "avg") -> np.ndarray:
    """Output of a frozen ``backbone`` for inputs ``x`` (N, ...) as a float32 array (N, D).

    Spatial maps (N, C, H, W) are average-pooled to (N, C) unless ``pool="flatten"``.

    >>> extract_features(nn.Flatten(), torch.ones(3, 2, 2)).shape
    (3, 4)
    """
    if len(x) == 0:
        raise ValueError("x is empty: there is nothing to extract features from")
    device = model_device(backbone)
    was_training = backbone.training
    backbone.eval()
    try:
        parts = [_pool(backbone(x[i:i + batch_size].to(device)).float(), pool).cpu().numpy()
                 for i in range(0, len(x), batch_size)]
    finally:
        backbone.train(was_training)
    return np.concatenate(parts)


@dataclass
class ProbeResult:
    """A fitted linear probe: its test ``accuracy``, train accuracy and the sklearn ``classifier``."""

    accuracy: float
    train_accuracy: float
    classifier: object


def linear_probe(train_features: np.ndarray, train_labels: np.ndarray, test_features: np.ndarray,
                 test_labels: np.ndarray, C: float = 1.0, max_iter: int = 1000) -> ProbeResult:
    """Fit a multinomial logistic regression on frozen features and score it on the test split.

    Features are standardised first (scikit-learn ``StandardScaler``); ``C`` is the inverse L2
    strength. Shapes: features (N, D), labels (N,).

    >>> rng = np.random.default_rng(0)
    >>> z = rng.normal(size=(200, 2)); y = (z[:, 0] > 0).astype(int)
    >>> round(linear_probe(z[:100], y[:100], z[100:], y[100:]).accuracy, 2) >= 0.95
    True
    """
    train_features, test_features = np.asarray(train_features), np.asarray(test_features)
    for name, feats, labels in (("train", train_features, train_labels), ("test", test_features, test_labels)):
        if feats.ndim != 2:
            raise ValueError(f"{name}_features must be 2-D (N, D), got shape {feats.shape}")
        if len(feats) != len(labels):
            raise ValueError(f"{name}_features has {len(feats)} rows but {name}_labels has {len(labels)}")
    if train_features.shape[1] != test_features.shape[1]:
        raise ValueError(f"train and test features differ in width: {train_features.shape[1]} vs "
                         f"{test_features.shape[1]}")
    if len(np.unique(train_labels)) < 2:
        raise ValueError("train_labels hold a single class: a probe needs at least two")
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter))
    clf.fit(train_features, train_labels)
    return ProbeResult(accuracy=float(accuracy_score(test_labels, clf.predict(test_features))),
                       train_accuracy=float(accuracy_score(train_labels, clf.predict(train_features))),
                       classifier=clf)


def probe_as_linear(probe: ProbeResult | object, dtype: torch.dtype = torch.float32) -> nn.Linear:
    """The fitted probe as an ``nn.Linear`` (D -> C) that computes the same logits on raw features.

    The probe standardises, ``u = (z - mu) / sigma``, then scores ``W u + b``; folding the scaling in,
    ``W' = W / sigma`` and ``b' = b - W' mu``, gives a layer that takes the raw features ``z``
    (N, D) and returns logits (N, C) whose softmax is the probe's ``predict_proba``. A binary probe
    (one score ``s``) becomes the two logits ``(0, s)``. Used to start fine-tuning from a trained
    head instead of a random one: LP-FT, Kumar et al. (2022), "Fine-Tuning can Distort Pretrained
    Features and Underperform Out-of-Distribution", ICLR. The layer is on the CPU; move it with
    the model.

    Args:
        probe: a :class:`ProbeResult` from :func:`linear_probe`, or its fitted ``classifier``
            (a ``StandardScaler`` + ``LogisticRegression`` pipeline, or a bare ``LogisticRegression``).

    >>> rng = np.random.default_rng(0)
    >>> z = rng.normal(size=(60, 3)) * [1.0, 5.0, 0.1] + 2.0; y = np.arange(60) % 3
    >>> probe = linear_probe(z, y, z, y)
    >>> layer = probe_as_linear(probe)
    >>> logits = layer(torch.from_numpy(z).float())
    >>> bool((logits.argmax(1).numpy() == probe.classifier.predict(z)).all())
    True
    """
    clf = getattr(probe, "classifier", probe)
    steps = getattr(clf, "steps", None)
    scaler, logreg = (None, clf) if steps is None else (steps[0][1] if len(steps) > 1 else None, steps[-1][1])
    if not isinstance(logreg, LogisticRegression) or not hasattr(logreg, "coef_"):
        raise ValueError("probe must be a fitted linear_probe result or LogisticRegression (optionally "
                         f"after a StandardScaler), got {type(clf).__name__}")
    if scaler is not None and not isinstance(scaler, StandardScaler):
        raise ValueError(f"the step before the LogisticRegression must be a StandardScaler, got "
                         f"{type(scaler).__name__}")
    weight, bias = np.asarray(logreg.coef_, dtype=np.float64), np.asarray(logreg.intercept_, dtype=np.float64)
    if scaler is not None:
        scale = scaler.scale_ if scaler.scale_ is not None else np.ones(weight.shape[1])
        mean = scaler.mean_ if scaler.mean_ is not None else np.zeros(weight.shape[1])
        weight = weight / scale
        bias = bias - weight @ mean
    if weight.shape[0] == 1:  # binary: p(class 1) = sigmoid(s) = softmax((0, s))[1]
        weight, bias = np.vstack([np.zeros_like(weight), weight]), np.concatenate([[0.0], bias])
    layer = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(weight))
        layer.bias.copy_(torch.from_numpy(bias))
    return layer.to(dtype)
