"""L2-SP: fine-tuning regularised towards the pretrained starting point (Li, Grandvalet & Davoine, 2018).

X. Li, Y. Grandvalet and F. Davoine (2018), "Explicit inductive bias for transfer learning with
convolutional networks", ICML. Plain weight decay pulls every weight towards zero, which is not
where a fine-tuned network started; L2-SP pulls the *shared* weights (those copied from the source)
back towards their pretrained values ``w_s^0`` and decays only the new head towards zero::

    Omega(w) = alpha / 2 * ||w_s - w_s^0||^2  +  beta / 2 * ||w_head||^2

``w_s`` is every parameter that has a pretrained value (a key of ``reference``), ``w_head`` every
other trainable parameter (the freshly initialised classifier). ``alpha`` and ``beta`` are
hyper-parameters, chosen per task on validation data.

How it plugs into the course's training loop: :func:`tlcourse.train.fit` takes a
``regulariser(model)`` that it adds to the training loss of every step; :func:`l2sp_regulariser`
returns the L2-SP one. The validation loss that ``fit`` and :func:`tlcourse.train.evaluate`
compute (and early stopping watches) stays the plain cross-entropy. :func:`fit_with_l2sp` is that call with the course's usual budget: Adam, a fixed
number of epochs for every arm, the checkpoint of the lowest validation loss (or the last one).

>>> torch.manual_seed(0) and None
>>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
>>> ref = starting_point(net, head="2")
>>> sorted(ref)
['0.bias', '0.weight']
>>> l2sp_penalty(net, ref, alpha=0.1, beta=0.0, head="2").item()   # at the starting point
0.0
"""
from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn
from torch.nn import functional as F

from .train import History, evaluate, fit, make_loader

__all__ = ["starting_point", "l2sp_penalty", "l2sp_regulariser", "fit_with_l2sp", "accuracy"]


def _is_head(name: str, head: str | None) -> bool:
    return head is not None and (name == head or name.startswith(head + "."))


def starting_point(model: nn.Module, head: str | None = "head") -> dict[str, torch.Tensor]:
    """Detached copies of the pretrained (shared) parameters, ``{name: tensor}``: ``w_s^0``.

    Every named parameter of ``model`` except those of the sub-module ``head`` (the new
    classifier, which has no pretrained value). Take it right after loading the source weights
    and before any training step. Frozen parameters are included (their penalty stays 0).
    """
    names = [n for n, _ in model.named_parameters()]
    if head is not None and not any(_is_head(n, head) for n in names):
        raise ValueError(f"model has no parameters under head {head!r}; its parameters are {names[:6]}...")
    return {n: p.detach().clone() for n, p in model.named_parameters() if not _is_head(n, head)}


def l2sp_penalty(model: nn.Module, reference: Mapping[str, torch.Tensor], *, alpha: float,
                 beta: float = 0.0, head: str | None = "head") -> torch.Tensor:
    """``alpha/2 * sum_s ||w_s - w_s^0||^2 + beta/2 * sum_head ||w||^2`` as a scalar tensor.

    Args:
        model: the network being fine-tuned.
        reference: :func:`starting_point` of the same network, ``{name: w_s^0}``; each tensor must
            have the shape of the parameter of that name.
        alpha: strength of the pull towards the starting point (``alpha >= 0``).
        beta: weight decay of the trainable parameters that have no starting point, i.e. the
            head (``beta >= 0``).
        head: name of the new classifier sub-module; only used to check that ``reference`` does
            not contain it.

    The gradient with respect to a shared weight is ``alpha * (w_s - w_s^0)``, with respect to a
    head weight ``beta * w``. Frozen parameters (``requires_grad=False``) are skipped. The result
    has the dtype and device of the model's parameters.
    """
    if alpha < 0 or beta < 0:
        raise ValueError(f"alpha and beta must be >= 0, got alpha={alpha}, beta={beta}")
    params = dict(model.named_parameters())
    unknown = [n for n in reference if n not in params]
    if unknown:
        raise ValueError(f"reference has parameters the model lacks: {unknown[:4]}")
    in_head = [n for n in reference if _is_head(n, head)]
    if in_head:
        raise ValueError(f"reference contains head parameters {in_head[:4]}: the new head has no "
                         "starting point (take it with starting_point(model, head=...))")
    first = next(iter(params.values()))
    shared = first.new_zeros(())
    other = first.new_zeros(())
    for name, p in params.items():
        if not p.requires_grad:
            continue
        if name in reference:
            w0 = reference[name]
            if w0.shape != p.shape:
                raise ValueError(f"reference[{name!r}] has shape {tuple(w0.shape)}, the parameter {tuple(p.shape)}")
            shared = shared + (p - w0.to(p.device, p.dtype)).pow(2).sum()
        else:
            other = other + p.pow(2).sum()
    return 0.5 * alpha * shared + 0.5 * beta * other


def l2sp_regulariser(reference: Mapping[str, torch.Tensor], *, alpha: float, beta: float = 0.0,
                     head: str | None = "head") -> Callable[[nn.Module], torch.Tensor]:
    """The ``regulariser`` of :func:`tlcourse.train.fit` for L2-SP: ``model -> l2sp_penalty(model, ...)``.

    ``fit`` adds it to the training loss only, so the validation loss stays the plain loss.

    >>> net = nn.Linear(2, 2)
    >>> with torch.no_grad():
    ...     _ = net.weight.fill_(1.0), net.bias.fill_(0.0)
    >>> l2sp_regulariser({}, alpha=0.0, beta=2.0, head=None)(net).item()   # beta/2 * |w|^2 = 1 * 4
    4.0
    """
    if alpha < 0 or beta < 0:
        raise ValueError(f"alpha and beta must be >= 0, got alpha={alpha}, beta={beta}")

    def regulariser(model: nn.Module) -> torch.Tensor:
        return l2sp_penalty(model, reference, alpha=alpha, beta=beta, head=head)

    return regulariser


def fit_with_l2sp(model: nn.Module, x: torch.Tensor, y: torch.Tensor, x_val: torch.Tensor,
                  y_val: torch.Tensor, *, epochs: int, lr: float, batch_size: int = 32, seed: int = 0,
                  alpha: float = 0.0, beta: float = 0.0, reference: Mapping[str, torch.Tensor] | None = None,
                  head: str | None = "head", keep: str = "best") -> tuple[nn.Module, History, int]:
    """Adam on the trainable parameters for ``epochs`` epochs, optionally with the L2-SP penalty.

    ``alpha = beta = 0`` is plain fine-tuning (or training from scratch, or a head on a frozen
    base: freeze first), so every arm of a comparison goes through this one loop with one budget.
    ``reference`` defaults to :func:`starting_point` of ``model`` as passed in. ``keep="best"``
    restores the weights of the epoch with the lowest validation loss (early stopping chosen on
    validation data, never stopping before ``epochs``), ``keep="last"`` keeps the final weights.
    ``x`` (N, ...), ``y`` (N,) integer classes; the same for the validation split.

    Returns ``(model, history, steps)``: the history has ``val_loss`` and ``val_acc`` per epoch (the
    validation curve), ``steps`` the optimiser steps taken (the budget, equal for equal epochs,
    data size and batch size).
    """
    if keep not in ("best", "last"):
        raise ValueError(f"keep must be 'best' or 'last', got {keep!r}")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameter")
    if reference is None:
        reference = starting_point(model, head=head) if alpha > 0 else {}
    torch.manual_seed(seed)
    history = fit(model, make_loader(x, y, batch_size, shuffle=True, seed=seed), epochs=epochs,
                  optimizer=torch.optim.Adam(params, lr=lr),
                  regulariser=(l2sp_regulariser(reference, alpha=alpha, beta=beta, head=head)
                               if alpha > 0 or beta > 0 else None),
                  val_loader=make_loader(x_val, y_val, 1024),
                  early_stopping=epochs if keep == "best" else None, progress=False)
    steps = epochs * -(-len(x) // batch_size)
    model.eval()
    return model, history, steps


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Accuracy of ``model`` on ``x`` (N, ...) and ``y`` (N,), in eval mode."""
    return evaluate(model, make_loader(x, y, 1024))["accuracy"]
