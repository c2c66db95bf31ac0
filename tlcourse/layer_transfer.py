"""Layer-by-layer transferability, the experiment of Yosinski et al. (2014).

Yosinski, Clune, Bengio and Lipson (2014), "How transferable are features in deep neural
networks?", NeurIPS. Split the classes into two tasks A and B, train a base network on each
(``baseA``, ``baseB``), then for every depth ``n`` build a new network for B whose first ``n``
layers are copied and whose upper layers start from a random initialisation:

============  ===========================================================================
arm           first ``n`` layers
============  ===========================================================================
``AnB``       copied from ``baseA`` and frozen: how *general* layers 1..n of A are for B
``AnB+``      copied from ``baseA`` and fine-tuned with the rest: transfer as practised
``BnB``       copied from ``baseB`` (the B network itself) and frozen: the "selffer" control;
              a drop here is *co-adaptation* (upper layers that cannot be re-learnt on top of
              frozen lower ones), not specificity
``BnB+``      copied from ``baseB`` and fine-tuned
``baseline``  nothing copied: ``baseB`` itself (``n = 0``)
============  ===========================================================================

The paper (8-layer ImageNet CNN) found AnB flat for ``n = 1, 2`` (general layers) and falling
from ``n = 3`` on, for two reasons it separated with BnB: fragile co-adaptation of middle layers
(BnB dips at ``n = 3..5``) and specificity of upper layers (AnB keeps falling at ``n = 6, 7``
where BnB recovers); AnB+ matched or beat the baseline at every ``n``.

Every arm here gets the same budget (same epochs, batch size, optimiser and learning rate) and
its checkpoint is chosen on task B's validation split (lowest validation loss), so the test split
only scores. Within a seed every network trained on B starts from one initialisation (the copy
then overwrites its first ``n`` blocks), so arm-minus-baseline gaps are paired; for BnB this means
the upper blocks restart from baseB's own initial weights. :class:`TransferCNN` (chapter S06) and
:class:`TransferMLP` are small networks with the same ``block_names`` / ``head`` interface as
:class:`tlcourse.models.DigitCNN`, which works too (at about 20 times the FLOPs per image).

>>> torch.manual_seed(0) and None
>>> a, b = TransferMLP(16, (8, 8), 3), TransferMLP(16, (8, 8), 3)
>>> _ = transfer_first_layers(a, b, 1, freeze_copied=True)
>>> torch.equal(a.layer1[0].weight, b.layer1[0].weight), b.layer1[0].weight.requires_grad
(True, False)
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from .finetune import count_parameters, freeze
from .train import evaluate, fit, make_loader

__all__ = ["TransferMLP", "TransferCNN", "transfer_first_layers", "train_with_budget", "layer_transfer_curve",
           "paired_gaps", "ARMS"]

#: The arms of :func:`layer_transfer_curve`: (name, source network, copied layers frozen?).
ARMS = (("AnB", "A", True), ("AnB+", "A", False), ("BnB", "B", True), ("BnB+", "B", False))


class TransferMLP(nn.Module):
    """A fully-connected classifier whose hidden layers are the transferable blocks.

    ``layer1`` .. ``layerL``: linear (-> ``widths[i]``) + ReLU; ``head``: linear (-> ``num_classes``).
    Input (N, ...) is flattened to (N, ``in_features``); output logits (N, ``num_classes``).

    >>> net = TransferMLP(196, (64, 64), 5)
    >>> net.block_names, tuple(net(torch.zeros(2, 1, 14, 14)).shape)
    (('layer1', 'layer2', 'head'), (2, 5))
    """

    def __init__(self, in_features: int, widths: Sequence[int] = (128, 128, 128, 128), num_classes: int = 5):
        super().__init__()
        if in_features < 1 or num_classes < 1 or not widths or min(widths) < 1:
            raise ValueError(f"in_features, num_classes and every width must be >= 1 (and at least one "
                             f"hidden layer), got {in_features}, {num_classes}, {tuple(widths)}")
        self.in_features, self.widths, self.num_classes = in_features, tuple(widths), num_classes
        sizes = (in_features, *widths)
        for i in range(len(widths)):
            setattr(self, f"layer{i + 1}", nn.Sequential(nn.Linear(sizes[i], sizes[i + 1]), nn.ReLU()))
        self.head = nn.Linear(widths[-1], num_classes)
        self.block_names = tuple(f"layer{i + 1}" for i in range(len(widths))) + ("head",)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Last hidden layer (N, ``widths[-1]``)."""
        x = x.flatten(1)
        if x.shape[1] != self.in_features:
            raise ValueError(f"TransferMLP expects {self.in_features} input features, got {x.shape[1]}")
        for name in self.block_names[:-1]:
            x = getattr(self, name)(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class TransferCNN(nn.Module):
    """A four-block CNN for small grey images (14x14 by default), cheap enough for many runs:
    two convolutional blocks, two fully connected ones, a linear head.

    ==========  ================================================  ==================
    block       layers                                            output shape
    ==========  ================================================  ==================
    ``layer1``  conv 3x3 stride 2 (1 -> c1 = 16), ReLU              (N, 16, 7, 7)
    ``layer2``  conv 3x3 stride 2 (c1 -> c2 = 32), ReLU             (N, 32, 4, 4)
    ``layer3``  flatten, linear (512 -> 128), ReLU                  (N, 128)
    ``layer4``  linear (128 -> 64), ReLU                            (N, 64) = ``features``
    ``head``    linear (64 -> num_classes)                          (N, num_classes)
    ==========  ================================================  ==================

    (shapes for 14x14 inputs and the default ``channels``). About 0.3 MFLOPs per image (0.15 M
    multiply-adds), against about 6 for :class:`tlcourse.models.DigitCNN` on 28x28: 80 Adam steps on
    batches of 50 take about 0.3 s of one CPU core, so the 40 networks of a three-seed
    transferability curve fit in a chapter's budget.

    >>> net = TransferCNN(num_classes=5)
    >>> net.block_names, tuple(net(torch.zeros(2, 1, 14, 14)).shape)
    (('layer1', 'layer2', 'layer3', 'layer4', 'head'), (2, 5))
    """

    block_names = ("layer1", "layer2", "layer3", "layer4", "head")

    def __init__(self, num_classes: int = 5, in_channels: int = 1, image_size: int = 14,
                 channels: tuple[int, int] = (16, 32)):
        super().__init__()
        if num_classes < 1 or in_channels < 1 or image_size < 4:
            raise ValueError(f"num_classes, in_channels must be >= 1 and image_size >= 4, got "
                             f"{num_classes}, {in_channels}, {image_size}")
        self.num_classes, self.in_channels, self.image_size = num_classes, in_channels, image_size
        side = (image_size + 1) // 2
        side = (side + 1) // 2
        c1, c2 = channels
        # strided convolutions rather than max-pooling: the same down-sampling at a third of the CPU time
        self.layer1 = nn.Sequential(nn.Conv2d(in_channels, c1, 3, stride=2, padding=1), nn.ReLU())
        self.layer2 = nn.Sequential(nn.Conv2d(c1, c2, 3, stride=2, padding=1), nn.ReLU())
        self.layer3 = nn.Sequential(nn.Flatten(), nn.Linear(c2 * side * side, 128), nn.ReLU())
        self.layer4 = nn.Sequential(nn.Linear(128, 64), nn.ReLU())
        self.head = nn.Linear(64, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Last hidden layer (N, 64) of images ``x`` (N, in_channels, image_size, image_size)."""
        if x.ndim != 4 or tuple(x.shape[1:]) != (self.in_channels, self.image_size, self.image_size):
            raise ValueError(f"TransferCNN expects images of shape (N, {self.in_channels}, "
                             f"{self.image_size}, {self.image_size}), got {tuple(x.shape)}")
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def transfer_first_layers(source: nn.Module, target: nn.Module, n_layers: int,
                          freeze_copied: bool) -> nn.Module:
    """Copy the weights of the first ``n_layers`` blocks of ``source`` into ``target``.

    Both models must list their blocks, input to output, in ``block_names`` with the head last;
    only blocks below the head can be copied (``0 <= n_layers < len(block_names)``). The blocks of
    ``target`` above ``n_layers`` keep their own (random) initialisation. With ``freeze_copied``
    the copied blocks stop learning (:func:`tlcourse.finetune.freeze`; their BatchNorm layers, if
    any, then stay in inference mode under :func:`tlcourse.train.fit`). Returns ``target``.
    """
    names = tuple(getattr(source, "block_names", ()))
    if names != tuple(getattr(target, "block_names", ())) or not names:
        raise ValueError("source and target must have the same non-empty block_names")
    if not isinstance(n_layers, (int, np.integer)) or not 0 <= n_layers < len(names):
        raise ValueError(f"n_layers must be an integer in [0, {len(names) - 1}] (the head is never "
                         f"copied), got {n_layers!r}")
    copied = list(names[:n_layers])
    for name in copied:
        target.get_submodule(name).load_state_dict(source.get_submodule(name).state_dict())
    if freeze_copied and copied:
        freeze(target, copied)
    return target


def train_with_budget(model: nn.Module, x_train, y_train, x_val, y_val, *, epochs: int, lr: float,
                      batch_size: int, seed: int) -> dict:
    """Adam for exactly ``epochs`` epochs, keeping the weights of the lowest validation loss.

    Every arm of a comparison gets the same ``epochs``, ``batch_size`` and ``lr``, hence the same
    number of optimiser steps, reported as ``steps``; the checkpoint is chosen on the validation
    split only (early stopping with a patience of ``epochs``: it never stops, it only restores).
    Returns ``{"model", "steps", "best_epoch", "val_acc", "trainable"}``.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameter")
    torch.manual_seed(seed)
    history = fit(model, make_loader(x_train, y_train, batch_size, shuffle=True, seed=seed), epochs=epochs,
                  optimizer=torch.optim.Adam(params, lr=lr), val_loader=make_loader(x_val, y_val, 1024),
                  early_stopping=epochs, progress=False)
    steps = epochs * -(-len(x_train) // batch_size)
    val = evaluate(model, make_loader(x_val, y_val, 1024))["accuracy"]
    return {"model": model, "steps": steps, "best_epoch": history.best_epoch, "val_acc": val,
            "trainable": count_parameters(model)[0]}


def layer_transfer_curve(make_model: Callable[[], nn.Module], task_a: Sequence[torch.Tensor],
                         task_b: Sequence[torch.Tensor], depths: Sequence[int], seed: int = 0, *,
                         epochs: int = 30, source_epochs: int | None = None, lr: float = 1e-3,
                         batch_size: int = 32, arms: Sequence[str] = ("AnB", "AnB+", "BnB")) -> pd.DataFrame:
    """One seed of the Yosinski et al. (2014) experiment; one row per trained network.

    Args:
        make_model: returns a fresh, randomly initialised network for task B's classes (it is
            also used for task A, which must have the same number of classes), e.g.
            ``lambda: TransferCNN(5)``. It is called under ``torch.manual_seed``: baseA gets its
            own initialisation, and every network trained on B (baseB and each arm) starts from
            one shared initialisation, the first ``n`` blocks then overwritten by the copy, so
            an arm and the baseline differ in the copied blocks only (a paired comparison).
        task_a: ``(x_train, y_train, x_val, y_val)`` of the source task A.
        task_b: ``(x_train, y_train, x_val, y_val, x_test, y_test)`` of the target task B.
        depths: the ``n`` values, numbers of copied blocks (1 .. number of blocks below the head).
        seed: seeds initialisations and batch order.
        epochs: epochs of every network trained on B (baseB and every arm: equal budgets);
            ``source_epochs`` those of baseA (default ``epochs``).
        arms: which of :data:`ARMS` to run.

    Returns:
        A DataFrame with columns ``arm`` (``"baseA"``, ``"baseline"`` (= baseB), then ``arms``),
        ``n``, ``seed``, ``val_acc``, ``test_acc`` (on B, except baseA's: on A's validation split,
        and NaN test), ``steps``, ``best_epoch``, ``trainable``.
    """
    known = {name: (src, frozen) for name, src, frozen in ARMS}
    unknown = [a for a in arms if a not in known]
    if unknown:
        raise ValueError(f"unknown arms {unknown}; choose from {list(known)}")
    xa, ya, xa_val, ya_val = task_a
    xb, yb, xb_val, yb_val, xb_test, yb_test = task_b
    test_loader = make_loader(xb_test, yb_test, 1024)

    def fresh(offset: int) -> nn.Module:
        torch.manual_seed(10_000 * seed + offset)
        return make_model()

    rows = []
    base_a = train_with_budget(fresh(1), xa, ya, xa_val, ya_val, epochs=source_epochs or epochs, lr=lr,
                               batch_size=batch_size, seed=seed)
    rows.append({"arm": "baseA", "n": 0, "val_acc": base_a["val_acc"], "test_acc": float("nan"),
                 **{k: base_a[k] for k in ("steps", "best_epoch", "trainable")}})
    base_b = train_with_budget(fresh(2), xb, yb, xb_val, yb_val, epochs=epochs, lr=lr,
                               batch_size=batch_size, seed=seed)
    rows.append({"arm": "baseline", "n": 0, "val_acc": base_b["val_acc"],
                 "test_acc": evaluate(base_b["model"], test_loader)["accuracy"],
                 **{k: base_b[k] for k in ("steps", "best_epoch", "trainable")}})
    sources = {"A": copy.deepcopy(base_a["model"]), "B": copy.deepcopy(base_b["model"])}
    for n in depths:
        for arm in arms:
            source, frozen = known[arm]
            model = transfer_first_layers(sources[source], fresh(2), int(n), freeze_copied=frozen)
            run = train_with_budget(model, xb, yb, xb_val, yb_val, epochs=epochs, lr=lr,
                                    batch_size=batch_size, seed=seed)
            rows.append({"arm": arm, "n": int(n), "val_acc": run["val_acc"],
                         "test_acc": evaluate(run["model"], test_loader)["accuracy"],
                         **{k: run[k] for k in ("steps", "best_epoch", "trainable")}})
    frame = pd.DataFrame(rows)
    frame.insert(2, "seed", seed)
    return frame


def paired_gaps(frame: pd.DataFrame, reference: str = "baseline", metric: str = "test_acc") -> pd.DataFrame:
    """Each arm and depth against ``reference``, paired by seed: mean, sd, gap and its standard error.

    ``frame`` is the concatenation of :func:`layer_transfer_curve` results over seeds. For each
    (``arm``, ``n``) the per-seed difference ``metric(arm, n) - metric(reference)`` is averaged;
    ``se`` is its sample standard deviation over sqrt(number of seeds). ``verdict`` is
    ``"better"`` / ``"worse"`` when ``|gap| > 2 se``, else ``"within noise"``: the course's rule for
    saying "A beats B". Needs at least two seeds.

    >>> f = pd.DataFrame({"arm": ["baseline", "AnB"] * 3, "n": [0, 1] * 3, "seed": [0, 0, 1, 1, 2, 2],
    ...                   "test_acc": [0.80, 0.90, 0.70, 0.81, 0.75, 0.84]})
    >>> row = paired_gaps(f).iloc[0]
    >>> row.arm, round(float(row.gap), 3), row.verdict
    ('AnB', 0.1, 'better')
    """
    ref = frame[frame.arm == reference].set_index("seed")[metric]
    if ref.index.has_duplicates or len(ref) < 2:
        raise ValueError(f"need one {reference!r} row per seed and at least two seeds, got {len(ref)} rows")
    rows = []
    for (arm, n), group in frame[~frame.arm.isin([reference, "baseA"])].groupby(["arm", "n"], sort=False):
        values = group.set_index("seed")[metric]
        missing = set(ref.index) - set(values.index)
        if missing or values.index.has_duplicates:
            raise ValueError(f"arm {arm!r} at n={n} lacks seeds {sorted(missing)} or repeats one")
        gap = values - ref.loc[values.index]
        se = float(gap.std(ddof=1) / np.sqrt(len(gap)))
        mean_gap = float(gap.mean())
        verdict = "within noise" if abs(mean_gap) <= 2 * se else ("better" if mean_gap > 0 else "worse")
        rows.append({"arm": arm, "n": int(n), "mean": float(values.mean()), "sd": float(values.std(ddof=1)),
                     "gap": mean_gap, "se": se, "verdict": verdict})
    return pd.DataFrame(rows)
