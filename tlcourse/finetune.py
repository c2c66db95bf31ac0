"""Fine-tuning: freezing by block, BatchNorm in a frozen base, discriminative learning rates and the
two-stage recipe.

Stage 1 trains a new head on a frozen base (linear probing); stage 2 fine-tunes from there. Starting
stage 2 from a trained head rather than a random one is LP-FT (Kumar et al., 2022, "Fine-tuning can
distort pretrained features and underperform out-of-distribution"): while the head is random, fine-tuning
changes the pretrained features to fit it, and those changes are what hurts on data unlike the
target's. The common explanation, that a random head sends *large* gradients into the body, does
not hold on the course's digit CNN: chapter T07 measures the body's gradient under a random head
to be as large as under a trained head (norms within 10 %), but pointing elsewhere (cosine about
0.2 with it, where two heads trained from different initialisations agree at about 0.8 and two
random directions at 0.002); the problem is where it points, not how large it is.
Stage 2 unfreezes the top blocks (or all of them) and
trains on with a learning rate one to two orders of magnitude smaller, so the pretrained features
are adapted rather than overwritten (Yosinski et al., 2014; Howard & Ruder, 2018, ULMFiT, for
gradual unfreezing and discriminative learning rates: block ``k`` from the top gets
``lr_top / decay**k``).

BatchNorm: a frozen BatchNorm layer must also stop updating its running statistics, i.e. stay in
inference mode, or the frozen features drift with the target batches. The rule lives in
:mod:`tlcourse.batchnorm` (re-exported here as :func:`keep_frozen_batchnorm_in_eval`);
:func:`~tlcourse.train.fit` applies it after every ``model.train()``.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn

from .batchnorm import keep_frozen_batchnorm_in_eval
from .train import fit

__all__ = ["freeze", "unfreeze", "count_parameters", "keep_frozen_batchnorm_in_eval",
           "discriminative_param_groups", "two_stage_finetune"]



def _modules(model: nn.Module, parts: Iterable[str | nn.Module] | None) -> list[nn.Module]:
    if parts is None:
        return [model]
    if isinstance(parts, (str, nn.Module)):
        parts = [parts]
    out = []
    for part in parts:
        if isinstance(part, nn.Module):
            out.append(part)
            continue
        try:
            out.append(model.get_submodule(part))
        except AttributeError:
            names = [n for n, _ in model.named_children()]
            raise ValueError(f"model has no block {part!r}; its top-level blocks are {names}") from None
    return out


def freeze(model: nn.Module, parts: Iterable[str | nn.Module] | str | None = None) -> nn.Module:
    """Stop gradient updates of ``parts`` of ``model`` (names or sub-modules; all of it by default).

    >>> net = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
    >>> count_parameters(freeze(net, ["0"]))
    (3, 9)
    """
    for module in _modules(model, parts):
        for p in module.parameters():
            p.requires_grad_(False)
    return model


def unfreeze(model: nn.Module, parts: Iterable[str | nn.Module] | str | None = None) -> nn.Module:
    """Let ``parts`` of ``model`` (names or sub-modules; all of it by default) learn again."""
    for module in _modules(model, parts):
        for p in module.parameters():
            p.requires_grad_(True)
    return model


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """``(trainable, total)`` parameter counts, the numbers Keras' ``model.summary()`` reports."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total


def discriminative_param_groups(model: nn.Module, blocks: Sequence[str], lr: float,
                                decay: float = 2.6, weight_decay: float = 0.0) -> list[dict]:
    """Optimizer parameter groups with layer-wise learning rates (ULMFiT's discriminative fine-tuning).

    ``blocks`` are ordered from the input to the output; the last one gets ``lr``, the one below
    ``lr / decay``, then ``lr / decay**2`` and so on. Frozen parameters are left out; so are blocks
    that end up empty. ``decay = 1`` gives one learning rate everywhere.

    >>> net = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2), nn.Linear(2, 1))
    >>> [g["lr"] for g in discriminative_param_groups(net, ["0", "1", "2"], lr=1.0, decay=10)]
    [0.01, 0.1, 1.0]
    """
    if lr <= 0:
        raise ValueError(f"lr must be positive, got {lr}")
    if decay < 1:
        raise ValueError(f"decay must be >= 1 (lower blocks learn more slowly), got {decay}")
    groups, seen = [], set()
    for depth, module in enumerate(reversed(_modules(model, blocks))):
        params = [p for p in module.parameters() if p.requires_grad and id(p) not in seen]
        seen.update(id(p) for p in params)
        if params:
            groups.append({"params": params, "lr": lr / decay**depth, "weight_decay": weight_decay})
    if not groups:
        raise ValueError("no trainable parameters in the given blocks: unfreeze some first")
    return list(reversed(groups))


def two_stage_finetune(model: nn.Module, *, blocks: Sequence[str], head: str, train_loader,
                       val_loader=None, head_epochs: int = 2, head_lr: float = 1e-3,
                       finetune_epochs: int = 2, finetune_lr: float = 1e-4,
                       unfreeze_top: int | None = None, lr_decay: float = 1.0,
                       amp: bool = False, progress: bool = True, early_stopping: int | None = None):
    """The two-stage recipe: train the new ``head`` on a frozen base, then unfreeze and train gently.

    Args:
        blocks: the base's blocks, input to output (names of sub-modules of ``model``).
        head: name of the new classifier sub-module.
        unfreeze_top: how many of the top ``blocks`` to unfreeze in stage 2 (``None``: all).
        lr_decay: stage-2 learning rate divided by this per block below the top (1: no decay).

    Returns the joined :class:`~tlcourse.train.History`; each row has ``stage`` 1 or 2.
    Optimiser: Adam in both stages (a new one in stage 2, like recompiling in Keras).
    """
    if unfreeze_top is not None and not 0 <= unfreeze_top <= len(blocks):
        raise ValueError(f"unfreeze_top must be between 0 and {len(blocks)}, got {unfreeze_top}")
    freeze(model)
    unfreeze(model, [head])
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=head_lr)
    history = fit(model, train_loader, epochs=head_epochs, optimizer=opt, val_loader=val_loader,
                  amp=amp, progress=progress, desc="stage 1 (head)")
    for row in history.rows:
        row["stage"] = 1
    top = list(blocks) if unfreeze_top is None else list(blocks)[len(blocks) - unfreeze_top:]
    unfreeze(model, top)
    groups = discriminative_param_groups(model, [*blocks, head], lr=finetune_lr, decay=lr_decay)
    stage2 = fit(model, train_loader, epochs=finetune_epochs, optimizer=torch.optim.Adam(groups),
                 val_loader=val_loader, amp=amp, progress=progress, early_stopping=early_stopping,
                 desc="stage 2 (fine-tune)")
    for row in stage2.rows:
        row["stage"] = 2
    return history.extend(stage2)
