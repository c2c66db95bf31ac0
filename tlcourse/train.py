"""A small supervised training loop shared by every chapter.

``fit`` trains any classifier for a number of epochs with tqdm progress, records a
:class:`History`, optionally stops early on the validation loss (restoring the best weights) and
uses mixed precision when asked: float16 with a gradient scaler on CUDA, bfloat16 autocast on the
CPU (so the mixed-precision code path is exercised on machines without a GPU too).

The device is taken from the model's parameters; batches are moved there. Nothing in this module
mentions a device by name.
"""
from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F
from ._progress import tqdm

from .batchnorm import keep_frozen_batchnorm_in_eval

__all__ = ["History", "fit", "evaluate", "predict", "model_device", "make_loader", "index_batches",
           "channels_last"]


@dataclass
class History:
    """One row per epoch: ``epoch``, ``train_loss``, ``train_acc``, ``val_loss``, ``val_acc``, ``seconds``.

    ``best_epoch`` is the epoch whose weights the model holds after early stopping.
    """

    rows: list[dict] = field(default_factory=list)
    best_epoch: int | None = None
    stopped_early: bool = False

    def __getitem__(self, key: str) -> list:
        return [row.get(key) for row in self.rows]

    def __len__(self) -> int:
        return len(self.rows)

    def to_frame(self):
        """The history as a ``pandas.DataFrame`` indexed by epoch."""
        import pandas as pd

        return pd.DataFrame(self.rows).set_index("epoch")

    def extend(self, other: "History") -> "History":
        """Append another run (e.g. stage 2 of a two-stage fine-tune), renumbering its epochs."""
        offset = len(self.rows)
        for row in other.rows:
            self.rows.append({**row, "epoch": row["epoch"] + offset})
        return self


def model_device(model: nn.Module) -> torch.device:
    """The device of a model's first parameter (or buffer); CPU for a model with neither."""
    for tensor in list(model.parameters()) + list(model.buffers()):
        return tensor.device
    return torch.device("cpu")


def index_batches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless shuffled index batches over ``range(n)``, reshuffled every pass by ``generator``.

    A last batch of a single example joins the previous one: BatchNorm cannot normalise a batch
    of one. For the step-counted loops of the chapters (equal budgets in steps, not epochs).

    >>> [b.tolist() for b, _ in zip(index_batches(5, 2, torch.Generator().manual_seed(0)), range(2))]
    [[4, 0], [1, 3, 2]]
    """
    if n < 1 or batch_size < 1:
        raise ValueError(f"index_batches needs n >= 1 and batch_size >= 1, got n={n}, batch_size={batch_size}")
    while True:
        order = torch.randperm(n, generator=generator)
        cuts = list(range(0, n, batch_size))
        if len(cuts) > 1 and n - cuts[-1] == 1:
            cuts.pop()
        for i, start in enumerate(cuts):
            yield order[start:cuts[i + 1] if i + 1 < len(cuts) else n]


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """Images (N, C, H, W) in channels-last memory order, anything else unchanged: the same values,
    and on a CPU about 30 % faster through convolutions when the model is channels-last too
    (``model.to(memory_format=torch.channels_last)``). Slices ``x[i:j]`` keep the order."""
    return x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x


def make_loader(x: torch.Tensor, y: torch.Tensor, batch_size: int = 128, shuffle: bool = False,
                seed: int = 0) -> torch.utils.data.DataLoader:
    """A ``DataLoader`` over in-memory tensors ``x`` (N, ...) and ``y`` (N,); shuffling uses ``seed``.

    >>> loader = make_loader(torch.zeros(10, 3), torch.zeros(10, dtype=torch.long), batch_size=4)
    >>> [len(b[0]) for b in loader]
    [4, 4, 2]
    """
    if len(x) != len(y):
        raise ValueError(f"x and y must have the same length, got {len(x)} and {len(y)}")
    if len(x) == 0:
        raise ValueError("cannot build a loader over an empty dataset")
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch_size,
                                       shuffle=shuffle, generator=generator)


def _autocast(device: torch.device, amp: bool):
    if not amp:
        return torch.autocast(device_type=device.type, enabled=False)
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype)


def _check_loader(loader: Iterable, name: str) -> None:
    try:
        n = len(loader)  # type: ignore[arg-type]
    except TypeError:
        return
    if n == 0:
        raise ValueError(f"{name} is empty: it yields no batches (check the dataset and batch size)")


def fit(model: nn.Module, train_loader: Iterable, *, epochs: int, optimizer: torch.optim.Optimizer,
        loss_fn: Callable | None = None, val_loader: Iterable | None = None,
        scheduler=None, early_stopping: int | None = None, amp: bool = False,
        progress: bool = True, max_steps: int | None = None, desc: str = "train",
        frozen_bn_eval: bool = True, regulariser: Callable[[nn.Module], torch.Tensor] | None = None
        ) -> History:
    """Train ``model`` and return its :class:`History`.

    Args:
        model: any classifier mapping a batch ``x`` (N, ...) to logits (N, C).
        train_loader: yields ``(x, y)`` with ``y`` (N,) integer classes.
        epochs: number of passes over ``train_loader``.
        optimizer: built over the parameters that should learn (frozen ones are simply left out
            or have ``requires_grad=False``).
        loss_fn: ``loss_fn(logits, y)``; defaults to cross-entropy.
        val_loader: evaluated after every epoch when given.
        scheduler: stepped once per epoch when given.
        early_stopping: patience in epochs on the validation loss; the best weights are restored.
        amp: mixed precision (float16 + GradScaler on CUDA, bfloat16 autocast elsewhere).
        max_steps: stop after this many optimiser steps in total (quick smoke runs).
        frozen_bn_eval: keep BatchNorm layers whose parameters are all frozen in inference mode
            (see :mod:`tlcourse.finetune`). ``False`` reproduces the classic mistake of letting a
            frozen base's running statistics drift; it exists for the chapter that shows it.
        regulariser: ``regulariser(model)``, a scalar tensor added to the training loss of every
            step (for example :func:`tlcourse.l2sp.l2sp_regulariser`); the validation loss, which
            early stopping watches, is ``loss_fn`` alone. ``train_loss`` reports the sum.

    >>> _ = torch.manual_seed(0)
    >>> x, y = torch.randn(64, 2), torch.randint(0, 2, (64,))
    >>> net = nn.Linear(2, 2)
    >>> h = fit(net, make_loader(x, y, 16), epochs=2, progress=False,
    ...         optimizer=torch.optim.SGD(net.parameters(), lr=0.1))
    >>> len(h), sorted(h.rows[0])
    (2, ['epoch', 'seconds', 'train_acc', 'train_loss'])
    """
    if epochs < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}")
    if early_stopping is not None and val_loader is None:
        raise ValueError("early_stopping needs a val_loader to watch")
    _check_loader(train_loader, "train_loader")
    loss_fn = loss_fn or F.cross_entropy
    device = model_device(model)
    scaler = torch.amp.GradScaler("cuda", enabled=amp and device.type == "cuda")
    history = History()
    best_loss, best_state, bad_epochs, steps = float("inf"), None, 0, 0

    for epoch in range(1, epochs + 1):
        model.train()
        if frozen_bn_eval:
            keep_frozen_batchnorm_in_eval(model)  # a frozen BatchNorm keeps its source statistics
        start = time.perf_counter()
        total_loss, correct, seen = 0.0, 0, 0
        bar = tqdm(train_loader, desc=f"{desc} {epoch}/{epochs}", disable=not progress, leave=False)
        for x, y in bar:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            with _autocast(device, amp):
                logits = model(x)
                loss = loss_fn(logits.float(), y)
            if regulariser is not None:
                loss = loss + regulariser(model)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"training loss became {loss.item()} at epoch {epoch}: lower the learning rate")
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            total_loss += loss.item() * len(y)
            correct += (logits.argmax(1) == y).sum().item()
            seen += len(y)
            steps += 1
            bar.set_postfix(loss=f"{total_loss / seen:.3f}")
            if max_steps is not None and steps >= max_steps:
                break
        if scheduler is not None:
            scheduler.step()
        row = {"epoch": epoch, "train_loss": total_loss / max(seen, 1), "train_acc": correct / max(seen, 1)}
        if val_loader is not None:
            metrics = evaluate(model, val_loader, loss_fn=loss_fn, amp=amp)
            row.update(val_loss=metrics["loss"], val_acc=metrics["accuracy"])
        row["seconds"] = time.perf_counter() - start
        history.rows.append(row)

        if early_stopping is not None:
            if row["val_loss"] < best_loss - 1e-6:
                best_loss, bad_epochs, history.best_epoch = row["val_loss"], 0, epoch
                best_state = copy.deepcopy(model.state_dict())
            else:
                bad_epochs += 1
                if bad_epochs >= early_stopping:
                    history.stopped_early = True
                    break
        if max_steps is not None and steps >= max_steps:
            break

    if best_state is not None:
        model.load_state_dict(best_state)
    elif history.rows:
        history.best_epoch = history.rows[-1]["epoch"]
    return history


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 512, amp: bool = False) -> torch.Tensor:
    """Logits (N, C) of ``model`` on ``x`` (N, ...) in eval mode, batched, on the model's device.

    Returned on the CPU as float32.
    """
    device = model_device(model)
    was_training = model.training
    model.eval()
    outs = []
    for i in range(0, len(x), batch_size):
        with _autocast(device, amp):
            outs.append(model(x[i:i + batch_size].to(device)).float().cpu())
    model.train(was_training)
    if not outs:
        raise ValueError("predict got an empty input")
    return torch.cat(outs)


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, loss_fn: Callable | None = None,
             amp: bool = False) -> dict[str, float]:
    """Mean loss and accuracy of ``model`` over ``loader`` in eval mode: ``{"loss", "accuracy"}``."""
    _check_loader(loader, "loader")
    loss_fn = loss_fn or F.cross_entropy
    device = model_device(model)
    was_training = model.training
    model.eval()
    total_loss, correct, seen = 0.0, 0, 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        with _autocast(device, amp):
            logits = model(x).float()
        total_loss += loss_fn(logits, y).item() * len(y)
        correct += (logits.argmax(1) == y).sum().item()
        seen += len(y)
    model.train(was_training)
    if seen == 0:
        raise ValueError("loader yielded no examples")
    return {"loss": total_loss / seen, "accuracy": correct / seen}
