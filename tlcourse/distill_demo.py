"""Small, fast knowledge-distillation experiments on scikit-learn's 8x8 digits (chapter T13).

Hinton, Vinyals & Dean (2015), "Distilling the Knowledge in a Neural Network", arXiv:1503.02531.
A wide MLP *teacher* is trained on a labelled transfer set; a narrow MLP *student* is trained on a
smaller labelled subset of it, either alone (cross-entropy) or against the teacher's stored logits
with :func:`tlcourse.distill.distillation_loss`::

    L = alpha * T**2 * KL(softmax(t / T) || softmax(s / T)) + (1 - alpha) * CE(s, y)

Both arms go through the same code path (:func:`tlcourse.distill.distill` with ``alpha = 0`` for the
student alone, which is exactly cross-entropy), so their budgets (epochs, optimiser steps, batch
size, learning rate) are equal by construction; :func:`train_student` returns the number of steps so
that a notebook can assert it.

- :func:`digits_splits` draws disjoint transfer / labelled / validation / test splits from a seed;
- :func:`mlp` builds a seeded MLP on flattened 8x8 images;
- :func:`train_teacher` and :func:`train_student` train them; :func:`accuracy` scores them;
- :func:`soft_term_gradient_norm` measures the size of the soft term's gradient, with or without
  the ``T**2`` factor (the paper's section 2.1).

>>> splits = digits_splits(seed=0)
>>> {name: len(y) for name, (x, y) in splits.items()}
{'transfer': 1000, 'labelled': 300, 'val': 300, 'test': 497}
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from .distill import distill, distillation_loss
from .train import fit, make_loader, predict

__all__ = ["digits_splits", "mlp", "train_teacher", "ShuffledBatches", "train_student", "accuracy", "soft_term_gradient_norm"]

N_TRANSFER, N_VAL = 1000, 300


def digits_splits(seed: int = 0, n_labelled: int = 300, withhold: int | None = None) -> dict:
    """Disjoint splits of the 1,797 sklearn digits (8x8, values in [0, 1]) drawn from ``seed``.

    A permutation ``perm`` of all images gives ``transfer = perm[:1000]`` (the teacher's labelled
    training set, and the inputs the student may see), ``val = perm[1000:1300]`` (every choice) and
    ``test = perm[1300:]`` (497 images, reported only). ``labelled`` is the student's training set:
    the first ``n_labelled`` images of ``transfer``, skipping every image of class ``withhold``
    when it is given (the student then never sees that class, neither its images nor its label).

    Returns ``{name: (x, y)}`` with ``x`` float32 (N, 64) and ``y`` int64 (N,).
    """
    from .data import load

    digits = load("sklearn_digits", split="all")
    x = torch.as_tensor(np.asarray(digits.images, dtype=np.float32)).flatten(1)
    y = torch.as_tensor(np.asarray(digits.labels, dtype=np.int64))
    perm = torch.as_tensor(np.random.default_rng(seed).permutation(len(y)))
    transfer, val, test = perm[:N_TRANSFER], perm[N_TRANSFER:N_TRANSFER + N_VAL], perm[N_TRANSFER + N_VAL:]
    pool = transfer if withhold is None else transfer[y[transfer] != withhold]
    if not 0 < n_labelled <= len(pool):
        raise ValueError(f"n_labelled must lie in [1, {len(pool)}], got {n_labelled}")
    labelled = pool[:n_labelled]
    return {name: (x[idx], y[idx]) for name, idx in
            (("transfer", transfer), ("labelled", labelled), ("val", val), ("test", test))}


def mlp(hidden: Sequence[int], seed: int, n_in: int = 64, n_classes: int = 10) -> nn.Sequential:
    """A ReLU MLP ``n_in -> hidden[0] -> ... -> n_classes`` whose initial weights depend only on ``seed``.

    >>> [p.shape for p in mlp([16], seed=0).parameters()]
    [torch.Size([16, 64]), torch.Size([16]), torch.Size([10, 16]), torch.Size([10])]
    """
    torch.manual_seed(seed)
    layers, width = [], n_in
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    return nn.Sequential(*layers, nn.Linear(width, n_classes))


def train_teacher(x: torch.Tensor, y: torch.Tensor, seed: int, hidden: Sequence[int] = (256, 256),
                  epochs: int = 40, lr: float = 1e-3, batch_size: int = 64) -> nn.Sequential:
    """A wide MLP trained with Adam on ``(x, y)`` for ``epochs`` epochs; returned in eval mode."""
    teacher = mlp(hidden, seed)
    fit(teacher, make_loader(x, y, batch_size, shuffle=True, seed=seed), epochs=epochs,
        optimizer=torch.optim.Adam(teacher.parameters(), lr=lr), progress=False)
    return teacher.eval()


class ShuffledBatches:
    """Re-iterable mini-batches ``(x, y, teacher_logits)`` of in-memory tensors, reshuffled every epoch.

    A lighter stand-in for a shuffling ``DataLoader`` over a ``TensorDataset`` (which indexes one
    example at a time): the same role, a quarter less time for these tiny MLPs. The order of every
    epoch depends only on ``seed``; ``len()`` is the number of batches per epoch.

    >>> b = ShuffledBatches(torch.arange(5.0), torch.arange(5), torch.zeros(5, 2), batch_size=2, seed=0)
    >>> len(b), [len(batch[0]) for batch in b], sorted(torch.cat([batch[1] for batch in b]).tolist())
    (3, [2, 2, 1], [0, 1, 2, 3, 4])
    """

    def __init__(self, *tensors: torch.Tensor, batch_size: int, seed: int):
        if not tensors or len({len(t) for t in tensors}) != 1 or len(tensors[0]) == 0:
            raise ValueError("ShuffledBatches needs non-empty tensors of the same length")
        self.tensors, self.batch_size = tensors, batch_size
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return -(-len(self.tensors[0]) // self.batch_size)

    def __iter__(self):
        order = torch.randperm(len(self.tensors[0]), generator=self.generator)
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            yield tuple(t[idx] for t in self.tensors)


def train_student(x: torch.Tensor, y: torch.Tensor, teacher_logits: torch.Tensor | None, *, seed: int,
                  temperature: float = 4.0, alpha: float = 0.9, hidden: Sequence[int] = (16,),
                  epochs: int = 100, lr: float = 1e-2, batch_size: int = 64) -> tuple[nn.Sequential, int]:
    """Train a small MLP on ``(x, y)`` with :func:`tlcourse.distill.distill`; return ``(student, steps)``.

    ``teacher_logits`` (N, C) are the teacher's stored logits for ``x`` (Hinton et al.'s transfer
    set labelled once). ``teacher_logits=None`` is the student alone: ``alpha`` is forced to 0, so
    the loss is exactly cross-entropy, through the same loop, batches and optimiser. ``steps``
    counts the optimiser steps, equal for every arm with the same data and settings.
    """
    if teacher_logits is None:
        teacher_logits, alpha = torch.zeros(len(y), 10), 0.0
    if len(teacher_logits) != len(y):
        raise ValueError(f"teacher_logits has {len(teacher_logits)} rows for {len(y)} examples")
    student = mlp(hidden, seed)
    loader = ShuffledBatches(x, y, teacher_logits.float(), batch_size=batch_size, seed=seed)
    distill(student, None, loader, epochs=epochs, optimizer=torch.optim.Adam(student.parameters(), lr=lr),
            temperature=temperature, alpha=alpha, progress=False)
    return student.eval(), epochs * len(loader)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of ``x`` (N, ...) whose top logit is the label ``y`` (N,)."""
    return (predict(model, x).argmax(1) == y).float().mean().item()


def soft_term_gradient_norm(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float,
                            t_squared: bool = True) -> float:
    """Frobenius norm of the gradient of the soft term with respect to the student's logits (N, C).

    The soft term is ``T**2 * KL(softmax(t / T) || softmax(s / T))`` averaged over the batch
    (:func:`tlcourse.distill.distillation_loss` with ``alpha = 1``), or the bare KL when
    ``t_squared=False``. Its gradient is ``T * (softmax(s / T) - softmax(t / T)) / N`` (with the
    factor) or that divided by ``T**2`` (without it): for ``T`` much larger than the logits the bare
    KL's gradient falls like ``1 / T**2`` while the scaled one tends to a constant,
    ``(s - t - mean differences) / (C * N)``.

    >>> s, t = torch.tensor([[1.0, 0.0, -1.0]]), torch.tensor([[0.0, 1.0, 0.0]])
    >>> big = [soft_term_gradient_norm(s, t, T) for T in (50.0, 100.0)]
    >>> abs(big[0] / big[1] - 1) < 0.01          # with T**2: about constant
    True
    >>> bare = [soft_term_gradient_norm(s, t, T, t_squared=False) for T in (50.0, 100.0)]
    >>> round(bare[0] / bare[1], 1)               # without it: 1 / T**2, so doubling T divides by 4
    4.0
    """
    s = student_logits.detach().float().clone().requires_grad_(True)
    labels = torch.zeros(len(s), dtype=torch.long)  # unused with alpha = 1
    loss = distillation_loss(s, teacher_logits.detach().float(), labels, temperature=temperature, alpha=1.0)
    if not t_squared:
        loss = loss / float(temperature) ** 2
    (grad,) = torch.autograd.grad(loss, s)
    return grad.norm().item()
