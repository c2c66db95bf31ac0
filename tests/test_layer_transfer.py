"""Tests of tlcourse.layer_transfer: copying and freezing the first n blocks, equal budgets,
checkpoints chosen on validation, the arms of the Yosinski et al. (2014) curve and paired gaps."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from tlcourse.layer_transfer import (ARMS, TransferCNN, TransferMLP, layer_transfer_curve, paired_gaps,
                                     train_with_budget, transfer_first_layers)
from tlcourse.models import DigitCNN


def _task(n, seed, classes=3, shape=(1, 14, 14)):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    x = torch.rand(n, *shape, generator=g) * 0.3
    x[:, :, : shape[1] // 2] += y.view(-1, 1, 1, 1) * 0.3   # a learnable, class-dependent brightness
    return x, y


@pytest.mark.parametrize("make", [lambda: TransferMLP(196, (8, 8, 8), 3), lambda: TransferCNN(3)],
                         ids=["mlp", "cnn"])
def test_copy_and_freeze_first_blocks(make):
    torch.manual_seed(0)
    source, target = make(), make()
    untouched = {k: v.clone() for k, v in target.state_dict().items()}
    transfer_first_layers(source, target, 2, freeze_copied=True)
    for name in target.block_names:
        same = all(torch.equal(a, b) for a, b in zip(source.get_submodule(name).parameters(),
                                                     target.get_submodule(name).parameters()))
        frozen = not any(p.requires_grad for p in target.get_submodule(name).parameters())
        assert same == frozen == (name in target.block_names[:2]), name
    # the blocks above the copy keep the target's own initialisation
    top = target.block_names[-1]
    assert torch.equal(target.get_submodule(top).weight, untouched[f"{top}.weight"])


def test_fine_tuned_copy_keeps_learning():
    torch.manual_seed(0)
    a, b = TransferMLP(196, (8, 8), 3), TransferMLP(196, (8, 8), 3)
    transfer_first_layers(a, b, 2, freeze_copied=False)
    assert all(p.requires_grad for p in b.parameters())


def test_copy_rejects_head_and_mismatched_models():
    a, b = TransferMLP(196, (8, 8), 3), TransferMLP(196, (8, 8), 3)
    with pytest.raises(ValueError, match="head is never"):
        transfer_first_layers(a, b, 3, freeze_copied=True)
    with pytest.raises(ValueError, match="same non-empty block_names"):
        transfer_first_layers(a, TransferMLP(196, (8, 8, 8), 3), 1, freeze_copied=True)


def test_works_with_the_digit_cnn_and_keeps_frozen_batchnorm_statistics():
    torch.manual_seed(0)
    source, target = DigitCNN(3), DigitCNN(3)
    transfer_first_layers(source, target, 2, freeze_copied=True)
    before = target.block1[1].running_mean.clone()
    x, y = _task(16, 0, shape=(1, 28, 28))
    train_with_budget(target, x, y, x, y, epochs=1, lr=1e-3, batch_size=8, seed=0)
    assert torch.equal(target.block1[1].running_mean, before)


def test_frozen_blocks_do_not_move_during_training():
    torch.manual_seed(0)
    source, target = TransferCNN(3), TransferCNN(3)
    transfer_first_layers(source, target, 3, freeze_copied=True)
    x, y = _task(40, 1)
    train_with_budget(target, x, y, x, y, epochs=3, lr=1e-2, batch_size=10, seed=0)
    for name in ("layer1", "layer2", "layer3"):
        for p, q in zip(source.get_submodule(name).parameters(), target.get_submodule(name).parameters()):
            assert torch.equal(p, q)


def test_budget_counts_steps_and_restores_the_best_validation_checkpoint():
    torch.manual_seed(0)
    x, y = _task(30, 2)
    run = train_with_budget(TransferMLP(196, (8,), 3), x, y, x, y, epochs=4, lr=1e-2, batch_size=8, seed=0)
    assert run["steps"] == 4 * 4 and 1 <= run["best_epoch"] <= 4 and 0 <= run["val_acc"] <= 1


def test_curve_gives_equal_budgets_and_every_arm():
    xa, ya = _task(60, 3)
    xb, yb = _task(30, 4)
    frame = layer_transfer_curve(lambda: TransferCNN(3), (xa, ya, xa, ya), (xb, yb, xb, yb, xb, yb),
                                 depths=[1, 2], seed=0, epochs=2, batch_size=10,
                                 arms=[name for name, _, _ in ARMS])
    assert list(frame.arm.unique()) == ["baseA", "baseline", "AnB", "AnB+", "BnB", "BnB+"]
    assert frame[frame.arm != "baseA"].steps.nunique() == 1
    assert frame[frame.arm == "baseA"].test_acc.isna().all()
    frozen = frame[frame.arm == "AnB"].set_index("n").trainable
    tuned = frame[frame.arm == "AnB+"].set_index("n").trainable
    assert (frozen < tuned).all() and frozen[2] < frozen[1]
    with pytest.raises(ValueError, match="unknown arms"):
        layer_transfer_curve(lambda: TransferCNN(3), (xa, ya, xa, ya), (xb, yb, xb, yb, xb, yb),
                             depths=[1], arms=["AnA"])


def test_curve_is_reproducible():
    xa, ya = _task(40, 5)
    xb, yb = _task(20, 6)
    run = lambda: layer_transfer_curve(lambda: TransferMLP(196, (8, 8), 3), (xa, ya, xa, ya),  # noqa: E731
                                       (xb, yb, xb, yb, xb, yb), depths=[1], seed=1, epochs=2, batch_size=10)
    pd.testing.assert_frame_equal(run(), run())


def test_paired_gaps_uses_the_paired_standard_error():
    # A constant +0.01 gap over seeds has se 0 and is "better", though the arms' sds overlap.
    base = [0.70, 0.80, 0.90]
    frame = pd.DataFrame({"arm": ["baseline"] * 3 + ["AnB+"] * 3 + ["AnB"] * 3, "n": [0] * 3 + [1] * 6,
                          "seed": [0, 1, 2] * 3,
                          "test_acc": base + [b + 0.01 for b in base] + [0.9, 0.7, 0.8]})
    gaps = paired_gaps(frame).set_index("arm")
    assert gaps.loc["AnB+", "verdict"] == "better" and gaps.loc["AnB+", "se"] == pytest.approx(0, abs=1e-12)
    assert gaps.loc["AnB", "verdict"] == "within noise"
    assert gaps.loc["AnB", "gap"] == pytest.approx(0.0, abs=1e-12)
    assert gaps.loc["AnB", "se"] == pytest.approx(np.std([0.2, -0.1, -0.1], ddof=1) / np.sqrt(3))


def test_paired_gaps_needs_matching_seeds():
    frame = pd.DataFrame({"arm": ["baseline", "baseline", "AnB"], "n": [0, 0, 1], "seed": [0, 1, 0],
                          "test_acc": [0.8, 0.7, 0.9]})
    with pytest.raises(ValueError, match="lacks seeds"):
        paired_gaps(frame)
    with pytest.raises(ValueError, match="at least two seeds"):
        paired_gaps(frame[frame.seed == 0])


def test_models_reject_wrong_inputs():
    with pytest.raises(ValueError, match="196 input features"):
        TransferMLP(196, (8,), 3)(torch.zeros(2, 1, 10, 10))
    with pytest.raises(ValueError, match="expects images"):
        TransferCNN(3)(torch.zeros(2, 1, 28, 28))
    with pytest.raises(ValueError):
        TransferMLP(196, (), 3)
