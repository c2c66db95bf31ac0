"""Measuring fine-tuning recipes fairly: fixed step budgets, the gradient a new head sends into the
body and a reference for its cosine, BatchNorm statistics versus weights, and paired statistics over
seeds (chapter T07).

- :func:`train_steps` trains whatever requires grad with Adam (Kingma & Ba, 2015) for exactly
  ``steps`` optimiser steps, so that arms compared against each other get the same budget, and can
  watch the model every ``every`` steps. The BatchNorm rule of :mod:`tlcourse.batchnorm` applies
  after every ``model.train()`` unless ``frozen_bn_eval=False``.
- :func:`body_features` is the body's output in inference mode: training a head on it is the same
  computation as training the head on a frozen base whose BatchNorm layers run in inference mode,
  without the base's forward pass at every step.
- :func:`gradient_cosines` compares the gradient ``g = dL/d(theta_body)`` under a random head and
  under a trained one by ``cos(g_a, g_b) = g_a . g_b / (|g_a| |g_b|)``, with references to read it
  against: two trained heads, two random heads, two mini-batches, and the typical ``|cos|`` of two
  random directions in ``d`` dimensions, ``sqrt(2 / (pi d))`` (for Gaussian directions ``cos`` is
  about ``N(0, 1/d)``). The stage-1 argument of LP-FT (Kumar et al., 2022) is about this direction.
- :func:`freeze_batchnorm` and :func:`with_statistics_of` separate what BatchNorm statistics and
  what weights contribute to forgetting: fine-tune with the BatchNorm layers frozen, or put the
  source's running statistics back into a model fine-tuned with them updating.
- the statistics (paired gaps over seeds, mean ± sd) come from :mod:`tlcourse.compare`.
- :func:`keras_trainable_checks` measures, on a tiny Keras model, the two behaviours the Keras
  fine-tuning recipe depends on (recompiling after a change of ``trainable``, BatchNorm in
  inference mode).
"""
from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .batchnorm import BATCHNORM, keep_frozen_batchnorm_in_eval
from .forgetting import with_head
from .train import channels_last, index_batches, model_device, predict

__all__ = ["channels_last", "train_steps", "accuracy", "body_features", "base_gradient", "gradient_cosines",
           "freeze_batchnorm", "with_statistics_of", "keras_trainable_checks"]


def train_steps(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, lr: float, steps: int,
                batch_size: int = 32, seed: int = 0, frozen_bn_eval: bool = True,
                every: int | None = None, monitor: Callable[[nn.Module], dict] | None = None) -> list[dict]:
    """Train the parameters of ``model`` that require grad with a new Adam at ``lr`` for ``steps`` steps.

    ``x`` (N, ...) inputs and ``y`` (N,) integer classes; batches of ``batch_size`` drawn without
    replacement from a generator seeded with ``seed``, reshuffled after every pass. With
    ``frozen_bn_eval`` (the default) BatchNorm layers whose parameters are all frozen run in
    inference mode (:func:`tlcourse.batchnorm.keep_frozen_batchnorm_in_eval`); ``False`` leaves
    them in training mode, the classic mistake. Images (N, C, H, W) are trained in channels-last
    memory order (the model is converted in place), which changes speed, not values beyond rounding.
    ``monitor(model)`` is called (in eval mode) every
    ``every`` steps and its dict is recorded with the step. Returns those rows (``[]`` without a
    monitor); the model is left in eval mode.
    """
    if steps < 1 or lr <= 0 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1 and lr > 0, got {steps}, {batch_size}, {lr}")
    if len(x) != len(y) or len(x) < 2:
        raise ValueError(f"x and y need equal lengths >= 2, got {len(x)} and {len(y)}")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters")
    device = model_device(model)
    if x.ndim == 4:  # images: channels-last memory order, the same values and about 30 % faster on a CPU
        model.to(memory_format=torch.channels_last)
        x = channels_last(x)
    optimizer = torch.optim.Adam(params, lr=lr)
    batches = index_batches(len(x), batch_size, torch.Generator().manual_seed(seed))
    rows = []
    for step in range(1, steps + 1):
        model.train()
        if frozen_bn_eval:
            keep_frozen_batchnorm_in_eval(model)
        idx = next(batches)
        loss = F.cross_entropy(model(x[idx].to(device)), y[idx].to(device))
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {loss.item()} at step {step}: lower lr={lr}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if monitor is not None and every and step % every == 0:
            model.eval()
            rows.append({"step": step, **monitor(model)})
    model.eval()
    return rows


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of ``x`` (N, ...) that ``model`` (in eval mode) puts in class ``y`` (N,); images are
    passed in channels-last order (:func:`channels_last`)."""
    return float((predict(model, channels_last(x), batch_size=1000).argmax(1) == y.cpu()).float().mean())


def body_features(model: nn.Module, x: torch.Tensor, attr: str = "head") -> torch.Tensor:
    """The body's output (N, D) on ``x``: ``model`` with its ``attr`` head removed, in eval mode."""
    return predict(with_head(model, nn.Identity(), attr), x, batch_size=1000)


def base_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor, blocks: Sequence[str]) -> torch.Tensor:
    """Gradient of the mean cross-entropy on (x, y) with respect to every parameter of ``blocks``,
    flattened into one vector (D,). Computed on a copy in training mode, as the first step of
    fine-tuning would see it; ``model`` is not changed."""
    probe = copy.deepcopy(model).train()
    probe.requires_grad_(True)
    device = model_device(probe)
    F.cross_entropy(probe(x.to(device)), y.to(device)).backward()
    return torch.cat([p.grad.flatten().cpu() for b in blocks for p in probe.get_submodule(b).parameters()])


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(a @ b / (a.norm() * b.norm()))


def gradient_cosines(random_heads: Sequence[nn.Module], trained_heads: Sequence[nn.Module], x: torch.Tensor,
                     y: torch.Tensor, blocks: Sequence[str], seed: int = 0, batch_size: int = 32) -> dict:
    """How the body's gradient under a random head compares with the one under a trained head.

    ``random_heads`` and ``trained_heads``: two models each (the same body; two head initialisations,
    the trained ones trained from those, e.g. in stage 1). All gradients are on the full (x, y)
    unless said otherwise. Returns ``d`` (number of body weights), ``norm_random``,
    ``norm_trained`` (Euclidean norms of the first of each), ``random_vs_trained`` (the cosine in
    question) and its references: ``trained_vs_trained`` (two trained heads from different
    initialisations: how much the direction depends on *which* sensible head is there),
    ``random_vs_random`` (two random heads), ``two_minibatches`` (the first trained model on two
    disjoint mini-batches of ``batch_size`` drawn from ``seed``: the noise of one step) and
    ``random_directions``: ``sqrt(2 / (pi d))``, the mean ``|cos|`` of two random directions.
    """
    if len(random_heads) != 2 or len(trained_heads) != 2:
        raise ValueError("pass two models with random heads and two with trained heads")
    if len(x) < 2 * batch_size:
        raise ValueError(f"need at least {2 * batch_size} examples for two mini-batches, got {len(x)}")
    (r1, r2), (t1, t2) = [[base_gradient(m, x, y, blocks) for m in pair] for pair in (random_heads, trained_heads)]
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    b1, b2 = order[:batch_size], order[batch_size:2 * batch_size]
    m1 = base_gradient(trained_heads[0], x[b1], y[b1], blocks)
    m2 = base_gradient(trained_heads[0], x[b2], y[b2], blocks)
    d = r1.numel()
    return {"d": d, "norm_random": float(r1.norm()), "norm_trained": float(t1.norm()),
            "random_vs_trained": _cos(r1, t1), "trained_vs_trained": _cos(t1, t2),
            "random_vs_random": _cos(r1, r2), "two_minibatches": _cos(m1, m2),
            "random_directions": math.sqrt(2 / (math.pi * d))}


def freeze_batchnorm(model: nn.Module) -> nn.Module:
    """Freeze the affine parameters of every BatchNorm layer of ``model`` (in place), so that
    :func:`train_steps` and :func:`tlcourse.train.fit` also keep their running statistics fixed:
    PyTorch's version of Keras' ``trainable = False`` on ``BatchNormalization`` layers."""
    for module in model.modules():
        if isinstance(module, BATCHNORM):
            module.requires_grad_(False)
    return model


@torch.no_grad()
def with_statistics_of(model: nn.Module, reference: nn.Module) -> nn.Module:
    """A copy of ``model`` whose BatchNorm running means, variances and batch counts are those of
    ``reference`` (same architecture); its weights, BatchNorm scale and shift included, stay."""
    out = copy.deepcopy(model)
    ref = dict(reference.named_modules())
    for name, module in out.named_modules():
        if isinstance(module, BATCHNORM):
            for buffer_name, buffer in module.named_buffers(recurse=False):
                buffer.copy_(getattr(ref[name], buffer_name))
    return out


def keras_trainable_checks(seed: int = 0) -> dict[str, tuple[float, float]]:
    """Two behaviours of Keras 3 that the two-stage recipe relies on, measured on a tiny model.

    The "base" is ``Dense(16)`` then ``BatchNormalization``, the head ``Dense(3)``; 64 inputs
    (64, 8) far from zero mean, so BatchNorm statistics would move; one epoch of ``fit`` with Adam
    at 1e-2, batches of 32. Each entry is ``(max |change| of the base's Dense kernel, max |change|
    of the BatchNorm moving mean)`` over that epoch (compiled as ``fit`` does by default: traced,
    not eager; eagerly, Keras raises on the first case instead of ignoring the change silently):

    - ``"unfrozen, not recompiled"``: base frozen, compiled, trained; ``base.trainable = True``;
      trained again without ``compile()``;
    - ``"unfrozen, recompiled"``: the same model after ``compile()``;
    - ``"BN trainable=False"``: only the BatchNorm layer frozen;
    - ``"base(x, training=False)"``: the Keras 2 pattern, base unfrozen;
    - ``"unfrozen, BN trainable=False"``: the Keras 3 recipe for stage 2.
    """
    import logging

    import keras
    from keras import layers

    logging.getLogger("tensorflow").setLevel(logging.ERROR)  # retracing notes from the tiny fits
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    x = rng.normal(2.0, 3.0, size=(64, 8)).astype("float32")
    y = rng.integers(0, 3, size=64)

    def tiny(inference_call=False):
        base = keras.Sequential([keras.Input(shape=(8,)), layers.Dense(16, name="dense"),
                                 layers.BatchNormalization(name="bn")], name="base")
        inputs = keras.Input(shape=(8,))
        features = base(inputs, training=False) if inference_call else base(inputs)
        return keras.Model(inputs, layers.Dense(3, name="head")(features)), base

    def compile_(model):
        model.compile(optimizer=keras.optimizers.Adam(learning_rate=1e-2),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))

    def change(model, base):
        state = lambda: [keras.ops.convert_to_numpy(base.get_layer("dense").kernel),
                         keras.ops.convert_to_numpy(base.get_layer("bn").moving_mean)]
        before = state()
        model.fit(x, y, batch_size=32, epochs=1, verbose=0)
        return tuple(float(np.abs(a - b).max()) for a, b in zip(state(), before))

    out = {}
    model, base = tiny()
    base.trainable = False
    compile_(model)
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    base.trainable = True
    out["unfrozen, not recompiled"] = change(model, base)
    compile_(model)
    out["unfrozen, recompiled"] = change(model, base)
    model, base = tiny()
    base.get_layer("bn").trainable = False
    compile_(model)
    out["BN trainable=False"] = change(model, base)
    model, base = tiny(inference_call=True)
    compile_(model)
    out["base(x, training=False)"] = change(model, base)
    model, base = tiny()
    base.trainable = True
    base.get_layer("bn").trainable = False
    compile_(model)
    out["unfrozen, BN trainable=False"] = change(model, base)
    return out
