"""Adaptation with unlabelled target data only: target BatchNorm statistics (AdaBN).

A network trained on a source domain normalises every BatchNorm input with the running mean and
variance it collected on *source* batches. On a shifted target domain those statistics are wrong:
the activations arrive off-centre and mis-scaled, and the layers after them see inputs unlike the
ones they were trained on. AdaBN (Li, Wang, Shi, Liu & Hou, 2016, "Revisiting batch normalization
for practical domain adaptation", arXiv:1603.04779; as "Adaptive batch normalization for practical
domain adaptation", Pattern Recognition 80, 2018) replaces them with the statistics of unlabelled
target images and changes nothing else:

    for every BatchNorm layer l (input a_l, per channel c):
        mu_l[c]      = E_target[a_l[c]]
        sigma2_l[c]  = Var_target[a_l[c]]
    the weights, the BatchNorm affine parameters and every other buffer stay as they were.

No label, no gradient, no optimiser step: it is the cheapest transductive adaptation there is,
and the control against which a learnt method such as DANN (:mod:`tlcourse.dann`, chapter S02)
should be measured. The adapted network is an ordinary function of one image, usable on target
images that were not in the pool the statistics came from (chapter T04 measures it).

How :func:`adapt_batchnorm` computes them: the running statistics are reset and every BatchNorm
layer's ``momentum`` is set to ``None`` (PyTorch's cumulative average) while the pool passes
through in batches of ``batch_size``, with **only the BatchNorm layers** in training mode (dropout
and everything else stay in inference mode, so the statistics do not depend on random masks).
With ``K`` batches, PyTorch then stores ``mean_k(batch mean)`` and ``mean_k(unbiased batch
variance)``; with one batch (``batch_size=None``, the default) these are exactly the pool's mean
and unbiased variance of each layer's input, where layer ``l``'s input is computed with the layers
below it already normalised by the pool's statistics. The momenta are restored afterwards and the
model is returned in eval mode.

``tlcourse.dann_demo.adabn`` (chapter S02) does the same with the whole model in training mode and
leaves ``momentum=None`` in place; use this module's function for new code.

>>> _ = torch.manual_seed(0)
>>> net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2)).eval()
>>> target = torch.randn(64, 3) * 2 + 5
>>> adapted = adapt_batchnorm(net, target)
>>> torch.allclose(adapted[1].running_mean, net[0](target).mean(0), atol=1e-5)
True
>>> adapted.training, net[1].running_mean.abs().max().item()   # the input model is untouched
(False, 0.0)
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from .batchnorm import BATCHNORM

__all__ = ["batchnorm_layers", "batchnorm_statistics", "adapt_batchnorm"]


def batchnorm_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, layer)`` for every BatchNorm layer of ``model`` (1d, 2d, 3d, SyncBatchNorm), in order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, BATCHNORM)]


def batchnorm_statistics(model: nn.Module) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``{layer name: (running_mean, running_var)}``, copies, for every BatchNorm layer that tracks them."""
    return {name: (m.running_mean.detach().clone(), m.running_var.detach().clone())
            for name, m in batchnorm_layers(model) if m.running_mean is not None}


@torch.no_grad()
def adapt_batchnorm(model: nn.Module, x: torch.Tensor, batch_size: int | None = None, *,
                    inplace: bool = False) -> nn.Module:
    """AdaBN: re-estimate every BatchNorm layer's running mean and variance on unlabelled inputs ``x``.

    Args:
        model: a trained network with BatchNorm layers (any mode; it is returned in eval mode).
        x: unlabelled target inputs (N, ...), the *adaptation pool*. Keep the images you will
            evaluate on out of it when you want to know how the adapted model does on new images.
        batch_size: images per forward pass; ``None`` passes the whole pool at once, which gives
            the exact mean and unbiased variance of each layer's input on the pool. With batches,
            PyTorch averages the per-batch means and unbiased variances (equal weight per batch):
            choose a size that divides ``len(x)``, and not a tiny one.
        inplace: modify ``model`` itself; by default a deep copy is adapted and ``model`` is
            left untouched.

    Returns:
        the adapted model, in eval mode; only the running statistics (and ``num_batches_tracked``)
        differ from ``model``. ``x`` is moved to the model's device.

    Raises:
        ValueError: when ``model`` has no BatchNorm layer that tracks running statistics, when
            ``x`` is empty, or when ``batch_size < 2`` (a variance needs two values).
    """
    if not isinstance(x, torch.Tensor) or len(x) == 0:
        raise ValueError("adapt_batchnorm needs a non-empty tensor of target inputs x (N, ...)")
    if batch_size is not None and batch_size < 2:
        raise ValueError(f"batch_size must be None or at least 2 (a variance needs two values), got {batch_size}")
    if not inplace:
        model = copy.deepcopy(model)
    norms = [m for _, m in batchnorm_layers(model) if m.track_running_stats]
    if not norms:
        raise ValueError("adapt_batchnorm needs a model with BatchNorm layers that track running statistics "
                         "(track_running_stats=True); without them there is nothing to re-estimate")
    momenta = [m.momentum for m in norms]
    model.eval()  # dropout and the rest in inference mode: the statistics must not depend on random masks
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches, not an exponential one
        m.train()
    device = next(iter(model.buffers())).device
    step = len(x) if batch_size is None else batch_size
    for i in range(0, len(x), step):
        model(x[i:i + step].to(device))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    return model.eval()
