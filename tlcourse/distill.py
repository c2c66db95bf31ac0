"""Knowledge distillation: a student learns from a teacher's softened predictions.

Hinton, Vinyals & Dean (2015), "Distilling the Knowledge in a Neural Network", arXiv:1503.02531.
The teacher's logits ``t`` are softened with a temperature ``T``, ``q = softmax(t / T)``, and the
student's logits ``s`` are trained to match them while still fitting the hard labels ``y``::

    L = alpha * T**2 * KL(softmax(t / T) || softmax(s / T)) + (1 - alpha) * CE(s, y)

Why ``T**2``: the gradient of the soft term with respect to a student logit is
``(softmax(s / T) - softmax(t / T)) / T``, and for large ``T`` that difference itself shrinks like
``(s - t) / (C * T)``, so without a correction the soft term's gradients fall like ``1 / T**2``.
Multiplying by ``T**2`` keeps the relative weight of the soft and hard terms roughly independent of
the temperature, so ``alpha`` means the same thing whatever ``T`` is (section 2 of the paper).
Forgetting the factor is a classic bug: with ``T = 4`` the soft term silently gets 16x less weight.

- :func:`soft_targets` is ``softmax(t / T)``;
- :func:`distillation_loss` is ``L`` above, batch-mean, with the teacher detached;
- :func:`distill` trains a student against a frozen teacher and returns a
  :class:`tlcourse.train.History` with the same rows as :func:`tlcourse.train.fit`, plus how often
  the student agrees with the teacher.

>>> _ = torch.manual_seed(0)
>>> s, t, y = torch.randn(8, 10), torch.randn(8, 10), torch.randint(0, 10, (8,))
>>> float(distillation_loss(t, t, y, temperature=4.0, alpha=1.0))  # a perfect copy costs nothing
0.0
"""
from __future__ import annotations

import math
import time
from collections.abc import Iterable

import torch
from torch import nn
from torch.nn import functional as F
from ._progress import tqdm

from .batchnorm import keep_frozen_batchnorm_in_eval

from .train import History, _autocast, _check_loader, evaluate, model_device

__all__ = ["soft_targets", "distillation_loss", "distill"]


def _check_temperature(temperature) -> float:
    try:
        value = float(temperature)
    except (TypeError, ValueError):
        raise ValueError(f"temperature must be a positive number, got {temperature!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"temperature must be a positive finite number, got {temperature!r}")
    return value


def _check_alpha(alpha) -> float:
    try:
        value = float(alpha)
    except (TypeError, ValueError):
        raise ValueError(f"alpha must be a number in [0, 1], got {alpha!r}") from None
    if not 0.0 <= value <= 1.0:  # also rejects NaN
        raise ValueError(f"alpha must lie in [0, 1] (the weight of the soft term), got {alpha!r}")
    return value


def _check_logits(logits, name: str) -> None:
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
        shape = tuple(getattr(logits, "shape", ())) or type(logits).__name__
        raise ValueError(f"{name} must be a tensor of shape (N, C), got {shape}")
    if not logits.is_floating_point():
        raise ValueError(f"{name} must be floating point, got {logits.dtype}")
    if logits.shape[0] == 0 or logits.shape[1] == 0:
        raise ValueError(f"{name} must have at least one row and one class, got {tuple(logits.shape)}")


def _compute_dtype(logits: torch.Tensor) -> torch.dtype:
    # Softmax/KL in at least float32: bfloat16 logits from autocast lose too much in exp().
    return torch.promote_types(logits.dtype, torch.float32)


def soft_targets(teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """The teacher's softened class probabilities ``softmax(teacher_logits / T)``, shape (N, C).

    Higher ``T`` spreads probability over the wrong classes ("dark knowledge"): the relative
    sizes of those small probabilities say which classes the teacher finds similar. ``T = 1`` is the
    ordinary softmax; ``T -> inf`` tends to the uniform distribution. Gradients flow through (use
    ``teacher_logits.detach()`` if the teacher must not learn); the result is computed in at least
    float32 on the logits' device.

    >>> soft_targets(torch.tensor([[2.0, 0.0, 0.0]]), temperature=1.0).round(decimals=3)
    tensor([[0.7870, 0.1070, 0.1070]])
    >>> soft_targets(torch.tensor([[2.0, 0.0, 0.0]]), temperature=4.0).round(decimals=3)
    tensor([[0.4520, 0.2740, 0.2740]])
    """
    temperature = _check_temperature(temperature)
    _check_logits(teacher_logits, "teacher_logits")
    return F.softmax(teacher_logits.to(_compute_dtype(teacher_logits)) / temperature, dim=1)


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                      temperature: float = 4.0, alpha: float = 0.9) -> torch.Tensor:
    """Hinton et al. (2015) knowledge-distillation loss, a scalar averaged over the batch.

    ``alpha * T**2 * KL(softmax(t / T) || softmax(s / T)) + (1 - alpha) * CE(s, y)``

    where ``KL(q || p) = sum_c q_c (log q_c - log p_c)`` is summed over classes and averaged over the
    N examples (PyTorch's ``reduction="batchmean"``), and ``CE`` is the mean cross-entropy of the
    student on the hard labels at temperature 1. The ``T**2`` factor keeps the soft term's gradient
    scale comparable across temperatures (see the module docstring). The teacher's logits are
    detached: no gradient ever reaches the teacher. With ``alpha = 0`` the result is exactly
    ``F.cross_entropy(s, y)``; with ``alpha = 1`` the labels are still checked but not used.

    Args:
        student_logits: (N, C) float, the student's raw scores.
        teacher_logits: (N, C) float, the teacher's raw scores for the same inputs.
        labels: (N,) integer classes in ``[0, C)``.
        temperature: ``T > 0``; Hinton et al. used values from 1 to 20, 2-8 is typical.
        alpha: weight of the soft term in ``[0, 1]``.

    Raises:
        ValueError: on a non-positive or non-finite temperature, ``alpha`` outside ``[0, 1]``,
            logits that are not (N, C) or whose shapes differ, or labels that are not (N,) integers
            in ``[0, C)``.

    >>> s = torch.tensor([[1.0, 0.0, -1.0], [0.0, 2.0, 0.0]])
    >>> t = torch.tensor([[3.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    >>> y = torch.tensor([0, 1])
    >>> round(distillation_loss(s, t, y, temperature=2.0, alpha=0.5).item(), 4)  # 0.5*4*0.0866 + 0.5*0.3236
    0.3351
    >>> bool(distillation_loss(s, t, y, alpha=0.0) == F.cross_entropy(s, y))
    True
    """
    temperature = _check_temperature(temperature)
    alpha = _check_alpha(alpha)
    _check_logits(student_logits, "student_logits")
    _check_logits(teacher_logits, "teacher_logits")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student_logits and teacher_logits must have the same shape (N, C), got "
                         f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}")
    n, num_classes = student_logits.shape
    if not isinstance(labels, torch.Tensor) or labels.shape != (n,):
        shape = tuple(getattr(labels, "shape", ())) or type(labels).__name__
        raise ValueError(f"labels must be a tensor of shape (N,) = ({n},), got {shape}")
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise ValueError(f"labels must be integer class indices, got {labels.dtype}")
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes}) for {num_classes} classes, "
                         f"got values in [{low}, {high}]")

    dtype = _compute_dtype(student_logits)
    student = student_logits.to(dtype)
    loss = student.new_zeros(())
    if alpha > 0:
        log_p_student = F.log_softmax(student / temperature, dim=1)
        log_q_teacher = F.log_softmax(teacher_logits.detach().to(dtype) / temperature, dim=1)
        # kl_div(input=log p, target=log q, log_target=True) = sum q (log q - log p) = KL(q || p)
        kl = F.kl_div(log_p_student, log_q_teacher, reduction="batchmean", log_target=True)
        loss = loss + alpha * temperature ** 2 * kl
    if alpha < 1:
        hard = F.cross_entropy(student, labels.long())
        loss = hard if alpha == 0 else loss + (1 - alpha) * hard
    return loss


def distill(student: nn.Module, teacher: nn.Module | None, train_loader: Iterable, *, epochs: int,
            optimizer: torch.optim.Optimizer, temperature: float, alpha: float,
            val_loader: Iterable | None = None, progress: bool = True, amp: bool = False) -> History:
    """Train ``student`` on :func:`distillation_loss` against a frozen ``teacher``; return its History.

    Each batch ``(x, y)`` of ``train_loader`` goes through the teacher (in eval mode, under
    ``torch.no_grad``) and through the student; the student takes one optimiser step on
    ``alpha * T**2 * KL(teacher || student) + (1 - alpha) * CE(student, y)``. The teacher is put back
    in the mode it was in afterwards and never changes. Both models must already sit on the same
    device (the student's device is used; nothing is moved behind your back).

    **Stored teacher logits.** A batch may also be a triple ``(x, y, teacher_logits)``: the stored
    logits (N, C) are then used instead of calling the teacher, and ``teacher`` may be ``None``.
    This is Hinton et al.'s *transfer set* labelled once by the teacher; it saves one teacher
    forward pass per batch and epoch, which dominates when the teacher is much larger than the
    student. Compute the logits in eval mode (e.g. with :func:`tlcourse.train.predict`).

    The rows match :func:`tlcourse.train.fit`: ``epoch``, ``train_loss`` (the distillation loss),
    ``train_acc`` (student vs. labels), ``train_agreement`` (fraction of training examples where the
    student's and the teacher's top class agree), ``val_loss``/``val_acc`` (plain cross-entropy and
    accuracy of the student, when ``val_loader`` is given) and ``seconds``.

    Args:
        student: maps ``x`` (N, ...) to logits (N, C); it is trained.
        teacher: maps the same ``x`` to logits (N, C); it is only evaluated. ``None`` when every
            batch carries stored teacher logits.
        train_loader: yields ``(x, y)`` with ``y`` (N,) integer classes, or ``(x, y, teacher_logits)``.
        epochs: passes over ``train_loader`` (``>= 0``).
        optimizer: over the student's trainable parameters.
        temperature, alpha: as in :func:`distillation_loss`.
        val_loader: labelled ``(x, y)`` batches for the student's validation metrics.
        amp: mixed precision as in :func:`tlcourse.train.fit` (float16 + GradScaler on CUDA,
            bfloat16 autocast elsewhere); the loss is computed in float32.

    >>> _ = torch.manual_seed(0)
    >>> from tlcourse.train import make_loader
    >>> x = torch.randn(64, 4)
    >>> teacher, student = nn.Linear(4, 3), nn.Linear(4, 3)
    >>> y = teacher(x).argmax(1)
    >>> h = distill(student, teacher, make_loader(x, y, 16), epochs=3, temperature=2.0, alpha=0.9,
    ...             optimizer=torch.optim.SGD(student.parameters(), lr=0.5), progress=False)
    >>> len(h), sorted(h.rows[0])
    (3, ['epoch', 'seconds', 'train_acc', 'train_agreement', 'train_loss'])
    >>> h["train_agreement"][-1] > h["train_agreement"][0]
    True
    """
    temperature = _check_temperature(temperature)
    alpha = _check_alpha(alpha)
    if epochs < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}")
    if student is teacher:
        raise ValueError("student and teacher must be different modules")
    _check_loader(train_loader, "train_loader")
    device = model_device(student)
    teacher_device = device if teacher is None else model_device(teacher)
    if device != teacher_device:
        raise ValueError(f"student is on {device} but teacher is on {teacher_device}: move them to the "
                         "same device first (e.g. teacher.to(tlcourse.train.model_device(student)))")
    scaler = torch.amp.GradScaler("cuda", enabled=amp and device.type == "cuda")
    history = History()

    teacher_was_training = teacher is not None and teacher.training
    if teacher is not None:
        teacher.eval()  # dropout off and BatchNorm running statistics frozen: the teacher is fixed
    try:
        for epoch in range(1, epochs + 1):
            student.train()
            keep_frozen_batchnorm_in_eval(student)
            start = time.perf_counter()
            total_loss, correct, agree, seen = 0.0, 0, 0, 0
            bar = tqdm(train_loader, desc=f"distill {epoch}/{epochs}", disable=not progress, leave=False)
            for batch in bar:
                if len(batch) == 3:
                    x, y, teacher_logits = batch
                    teacher_logits = teacher_logits.to(device, non_blocking=True).float()
                elif teacher is None:
                    raise ValueError("teacher is None, so every batch must be (x, y, teacher_logits); "
                                     f"got a batch of {len(batch)} items")
                else:
                    x, y = batch
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                if len(batch) != 3:
                    with torch.no_grad(), _autocast(device, amp):
                        teacher_logits = teacher(x).float()
                optimizer.zero_grad(set_to_none=True)
                with _autocast(device, amp):
                    logits = student(x)
                loss = distillation_loss(logits.float(), teacher_logits, y, temperature, alpha)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"distillation loss became {loss.item()} at epoch {epoch}: "
                                             "lower the learning rate")
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                predicted = logits.detach().argmax(1)
                total_loss += loss.item() * len(y)
                correct += (predicted == y).sum().item()
                agree += (predicted == teacher_logits.argmax(1)).sum().item()
                seen += len(y)
                bar.set_postfix(loss=f"{total_loss / seen:.3f}")
            row = {"epoch": epoch, "train_loss": total_loss / max(seen, 1),
                   "train_acc": correct / max(seen, 1), "train_agreement": agree / max(seen, 1)}
            if val_loader is not None:
                metrics = evaluate(student, val_loader, amp=amp)
                row.update(val_loss=metrics["loss"], val_acc=metrics["accuracy"])
            row["seconds"] = time.perf_counter() - start
            history.rows.append(row)
    finally:
        if teacher is not None:
            teacher.train(teacher_was_training)
    if history.rows:
        history.best_epoch = history.rows[-1]["epoch"]
    return history
