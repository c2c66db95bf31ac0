"""How far fine-tuning moved a model from its source: catastrophic forgetting, weight drift and
BatchNorm statistics.

Fine-tuning on a target task overwrites what the network knew about its source task
(*catastrophic forgetting*, McCloskey & Cohen, 1989; Kirkpatrick et al., 2017). A direct measure,
used by Learning without Forgetting (Li & Hoiem, 2016), is the **source-task accuracy of the
fine-tuned body with the original source head put back**: the body is what fine-tuning changed,
the source head is the readout the body used to serve. If the body still computes the features
the head expects, the accuracy stays at its pretrained value; every point it loses was forgotten.

Two cheaper signals that need no source labels:

- **weight drift**, the relative distance from the pretrained weights
  ``||theta - theta_0|| / ||theta_0||`` (what L2-SP, Li et al. 2018, penalises);
- **BatchNorm drift**: running means and variances are *buffers*, not parameters, so
  ``requires_grad=False`` does not stop them from moving while a BatchNorm layer runs in train
  mode. :func:`batchnorm_drift` reports ``||mu - mu_0|| / ||mu_0||`` (and the same for the
  variance) for every BatchNorm layer.

>>> from tlcourse.models import DigitCNN
>>> source = DigitCNN(num_classes=10)
>>> tuned = with_head(source, nn.Linear(128, 19))  # a new 19-class head on a copy of the body
>>> tuned.head.out_features, source.head.out_features
(19, 10)
>>> weight_drift(tuned, source, ["block1", "block2", "block3"])
0.0
"""
from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
from torch import nn

__all__ = ["with_head", "retained_accuracy", "weight_drift", "batchnorm_drift"]

_BATCHNORM = nn.modules.batchnorm._BatchNorm


def with_head(model: nn.Module, head: nn.Module, attr: str = "head") -> nn.Module:
    """A deep copy of ``model`` whose ``attr`` sub-module is a deep copy of ``head``.

    Neither argument is changed. The new head is moved to the device of the model's parameters,
    and the copy keeps the model's train/eval mode.
    """
    if not hasattr(model, attr):
        names = [n for n, _ in model.named_children()]
        raise ValueError(f"model has no {attr!r} to replace; its top-level blocks are {names}")
    out = copy.deepcopy(model)
    new_head = copy.deepcopy(head)
    first = next(iter(out.parameters()), None)
    if first is not None:
        new_head = new_head.to(first.device)
    setattr(out, attr, new_head.train(out.training))
    return out


@torch.no_grad()
def retained_accuracy(model: nn.Module, source_head: nn.Module, x: torch.Tensor, y: torch.Tensor,
                      attr: str = "head", batch_size: int = 512) -> float:
    """Source-task accuracy of ``model``'s body with the original ``source_head`` put back.

    Args:
        model: a fine-tuned network whose classifier is the sub-module ``attr``.
        source_head: the classifier of the *pretrained* model, kept before fine-tuning.
        x, y: held-out source inputs (N, ...) and labels (N,).

    Runs in eval mode on a copy; ``model`` is left as it was. Returns a float in [0, 1].

    >>> from tlcourse.models import DigitCNN
    >>> source = DigitCNN(num_classes=10).eval()
    >>> x = torch.rand(6, 1, 28, 28)
    >>> y = source(x).argmax(1)  # labels the source model gets right by construction
    >>> tuned = with_head(source, nn.Linear(128, 19))
    >>> retained_accuracy(tuned, source.head, x, y)
    1.0
    """
    from .train import predict

    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"x and y must be non-empty and of equal length, got {len(x)} and {len(y)}")
    probe = with_head(model, source_head, attr)
    logits = predict(probe, x, batch_size=batch_size)
    if logits.shape[1] <= int(y.max()):
        raise ValueError(f"source_head has {logits.shape[1]} outputs but the labels go up to "
                         f"{int(y.max())}: pass the pretrained model's head, not the new one")
    return float((logits.argmax(1) == y.cpu()).float().mean())


def _selected(model: nn.Module, parts: Iterable[str] | None) -> dict[str, torch.Tensor]:
    named = dict(model.named_parameters())
    if parts is None:
        return named
    parts = [parts] if isinstance(parts, str) else list(parts)
    chosen = {n: p for n, p in named.items() if any(n == q or n.startswith(q + ".") for q in parts)}
    if not chosen:
        raise ValueError(f"no parameters under {parts}; top-level blocks are "
                         f"{[n for n, _ in model.named_children()]}")
    return chosen


@torch.no_grad()
def weight_drift(model: nn.Module, reference: nn.Module, parts: Iterable[str] | str | None = None) -> float:
    """Relative distance ``||theta - theta_0|| / ||theta_0||`` between two models' parameters.

    ``parts`` restricts it to some blocks by name (e.g. ``["block1", "block2"]``; all parameters by
    default). Parameters are matched by name, so the two models must share their architecture in
    those blocks (a replaced head is fine as long as it is left out of ``parts``).
    """
    mine, theirs = _selected(model, parts), _selected(reference, parts)
    if mine.keys() != theirs.keys() or any(mine[k].shape != theirs[k].shape for k in mine):
        raise ValueError("model and reference differ in the selected parameters: leave the replaced "
                         "head out of parts")
    diff = sum(float((mine[k].float() - theirs[k].float().to(mine[k].device)).pow(2).sum()) for k in mine)
    norm = sum(float(theirs[k].float().pow(2).sum()) for k in theirs)
    if norm == 0:
        raise ValueError("the reference parameters are all zero: a relative distance is undefined")
    return (diff / norm) ** 0.5


def _relative_change(new: torch.Tensor, old: torch.Tensor) -> float:
    """||new - old|| / ||old||, or the absolute change when ``old`` is zero (a running mean can be)."""
    change = float((new.float() - old.float().to(new.device)).norm())
    scale = float(old.float().norm())
    return change / scale if scale > 0 else change


@torch.no_grad()
def batchnorm_drift(model: nn.Module, reference: nn.Module):
    """Per BatchNorm layer, how far the running statistics moved from ``reference``'s.

    Returns a ``pandas.DataFrame`` indexed by layer name with columns ``mean_drift``
    (``||mu - mu_0|| / ||mu_0||``, the absolute change where ``mu_0`` is zero, as in a freshly
    initialised layer), ``var_drift`` (the same for the running variance) and
    ``batches_seen`` (how many more training batches updated the statistics). All zero for a
    base whose BatchNorm layers stayed in inference mode.

    >>> from torch import nn
    >>> net = nn.Sequential(nn.BatchNorm1d(3))
    >>> ref = copy.deepcopy(net)
    >>> _ = net.train()(torch.randn(8, 3) + 5)
    >>> drift = batchnorm_drift(net, ref)
    >>> float(drift.loc["0", "mean_drift"]) > 0, int(drift.loc["0", "batches_seen"])
    (True, 1)
    """
    import pandas as pd

    theirs = {n: m for n, m in reference.named_modules() if isinstance(m, _BATCHNORM)}
    rows = {}
    for name, layer in model.named_modules():
        if not isinstance(layer, _BATCHNORM):
            continue
        ref = theirs.get(name)
        if ref is None or ref.running_mean is None or layer.running_mean is None:
            raise ValueError(f"BatchNorm layer {name!r} has no running statistics in both models")
        rows[name] = {"mean_drift": _relative_change(layer.running_mean, ref.running_mean),
                      "var_drift": _relative_change(layer.running_var, ref.running_var),
                      "batches_seen": int(layer.num_batches_tracked.cpu() - ref.num_batches_tracked.cpu())}
    if not rows:
        raise ValueError("model has no BatchNorm layers")
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("layer")
