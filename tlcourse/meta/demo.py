"""Helpers for chapter T14 (meta-learning): the pretrained-embedding baseline and the cost of MAML.

- :func:`train_classifier_embedding`: the "pretrain, then a simple classifier" baseline of
  Chen et al. (2019, "A Closer Look at Few-shot Classification", ICLR) and Tian et al. (2020,
  "Rethinking Few-Shot Image Classification: a Good Embedding Is All You Need?", ECCV): the
  embedding is trained by ordinary classification (cross-entropy over all training classes,
  through a linear head that is thrown away afterwards), with no episodes at all. At test time
  a new class is learned from the embeddings of its few support examples, for instance by the
  nearest centroid (:func:`tlcourse.meta.protonets.evaluate_protonet` does exactly that for any
  embedding).
- :class:`L2Normalize`: ``z / ||z||``, the feature normalisation Tian et al. found to matter for
  such probes; append it to an embedding to classify by cosine-like distances.
- :func:`autograd_graph_bytes`: the size of the autograd graph behind a loss (nodes, and bytes of
  the tensors it saved for the backward pass), the memory that second-order MAML pays for
  differentiating through the inner steps.
"""
from __future__ import annotations

import math
import time
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ..dann import StepHistory
from ..train import model_device

__all__ = ["train_classifier_embedding", "L2Normalize", "autograd_graph_bytes"]


class L2Normalize(nn.Module):
    """Divide each row by its Euclidean norm: (B, D) -> (B, D) with ``||z_b|| = 1``.

    >>> L2Normalize()(torch.tensor([[3.0, 4.0]]))
    tensor([[0.6000, 0.8000]])
    """

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return F.normalize(z, dim=-1)


def train_classifier_embedding(embed: nn.Module, images: torch.Tensor, labels, *,
                               classes: Sequence[int] | torch.Tensor, steps: int, batch_size: int,
                               lr: float = 1e-3, seed: int = 0, log_every: int = 50) -> StepHistory:
    """Train ``embed`` by ordinary classification over ``classes``: the pretrained baseline.

    A linear head ``Linear(D, len(classes))`` is put on top of ``embed`` (``D`` read from one
    forward pass); each of the ``steps`` Adam steps draws ``batch_size`` images uniformly (with
    replacement) among the images whose label is in ``classes`` and minimises the cross-entropy of
    ``head(embed(x))`` against the class index. The head is discarded: only ``embed`` is kept, for
    a nearest-centroid or linear probe on new classes. With ``batch_size = ways * (shots + queries)``
    and ``steps`` equal to a prototypical network's episodes, both see the same number of images
    and take the same number of optimiser steps.

    Args:
        embed: (B, *item) -> (B, D); trained in place and left in training mode.
        images: (M, *item); labels: (M,) integer class ids.
        classes: the training classes (e.g. ``omniglot_by_alphabet().train_classes``).
        steps, batch_size: optimiser steps and images per step, both ``>= 1``.
        lr: Adam learning rate (1e-3, as Snell et al. use for prototypical networks).
        seed: seeds the head's initialisation and the batches; the global state is restored.

    Returns:
        a :class:`~tlcourse.dann.StepHistory` with rows ``step``, ``loss``, ``accuracy`` (training
        batches since the previous row) and ``seconds``.

    >>> _ = torch.manual_seed(0)
    >>> x, y = torch.randn(60, 5), torch.arange(6).repeat(10)
    >>> net = nn.Linear(5, 4)
    >>> h = train_classifier_embedding(net, x, y, classes=[0, 1, 2], steps=4, batch_size=8, log_every=2)
    >>> h["step"]
    [2, 4]
    """
    for name, value in (("steps", steps), ("batch_size", batch_size), ("log_every", log_every)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be a positive finite number, got {lr!r}")
    labels = torch.as_tensor(labels)
    if not isinstance(images, torch.Tensor) or len(images) != len(labels) or labels.ndim != 1:
        raise ValueError(f"images (M, ...) and labels (M,) must have the same length, got "
                         f"{tuple(getattr(images, 'shape', ()))} and {tuple(labels.shape)}")
    pool = torch.unique(torch.as_tensor(classes).long().cpu())
    keep = torch.isin(labels.cpu(), pool)
    if len(pool) < 2 or not keep.any():
        raise ValueError("classes must name at least two class ids that occur in labels")
    rows = keep.nonzero().squeeze(1)
    target = torch.searchsorted(pool, labels.cpu()[rows].long())      # class index 0..C-1
    device = model_device(embed)
    generator = torch.Generator().manual_seed(seed)
    history = StepHistory()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        embed.train()
        with torch.no_grad():
            width = embed(images[rows[:2]].to(device)).shape[-1]
        head = nn.Linear(width, len(pool)).to(device)
        optimizer = torch.optim.Adam([*embed.parameters(), *head.parameters()], lr=lr)
        total_loss, total_acc, counted, start = 0.0, 0.0, 0, time.perf_counter()
        for step in range(steps):
            pick = torch.randint(len(rows), (batch_size,), generator=generator)
            x = images[rows[pick]].to(device)
            y = target[pick].to(device)
            logits = head(embed(x))
            loss = F.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total_loss += loss.item()
            total_acc += (logits.argmax(1) == y).float().mean().item()
            counted += 1
            if (step + 1) % log_every == 0 or step + 1 == steps:
                history.rows.append({"step": step + 1, "loss": total_loss / counted,
                                     "accuracy": total_acc / counted,
                                     "seconds": time.perf_counter() - start})
                total_loss, total_acc, counted, start = 0.0, 0.0, 0, time.perf_counter()
    return history


def autograd_graph_bytes(output: torch.Tensor) -> tuple[int, int]:
    """The autograd graph behind ``output``: its number of nodes and the bytes of the tensors it saved.

    Walks ``output.grad_fn`` and every node reachable through ``next_functions`` (the graph that
    ``output.backward()`` would traverse) and sums ``numel * element_size`` over the distinct tensors
    held in the nodes' ``_saved_*`` attributes (inputs of products, ReLU masks, ...), counting a
    tensor stored by several nodes once. This is the memory the graph keeps alive until the
    backward pass, measured without a memory profiler, so it works on the CPU and under
    :mod:`torch.func` (whose transforms refuse saved-tensor hooks). For second-order MAML the graph
    also holds every inner backward pass, so both numbers grow with the inner steps; for
    first-order MAML they do not.

    Returns:
        ``(nodes, bytes)``; ``(0, 0)`` for a tensor with no graph.

    >>> w = torch.ones(3, requires_grad=True)
    >>> autograd_graph_bytes((w * torch.ones(3)).sum())   # sum, mul, the leaf; mul saved 3 floats
    (3, 12)
    """
    if not isinstance(output, torch.Tensor):
        raise ValueError(f"output must be a tensor, got {type(output).__name__}")
    seen, stack, saved, total = set(), [output.grad_fn], set(), 0
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        for name in dir(node):
            if not name.startswith("_saved_"):
                continue
            try:
                value = getattr(node, name)
            except RuntimeError:          # freed by an earlier backward pass
                continue
            for t in value if isinstance(value, (tuple, list)) else (value,):
                if isinstance(t, torch.Tensor):
                    key = (t.data_ptr(), t.numel(), t.dtype)
                    if key not in saved:
                        saved.add(key)
                        total += t.numel() * t.element_size()
        stack.extend(child for child, _ in node.next_functions)
    return len(seen), total
