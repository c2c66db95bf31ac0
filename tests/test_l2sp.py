"""Tests of tlcourse.l2sp: the L2-SP penalty's value and gradient by hand on a tiny model, its
plumbing into tlcourse.train.fit (training mode only), and the training function's budget."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from tlcourse.l2sp import fit_with_l2sp, l2sp_penalty, l2sp_regulariser, starting_point
from tlcourse.train import evaluate, fit, make_loader


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Linear(2, 2)
        self.head = nn.Linear(2, 2)

    def forward(self, x):
        return self.head(torch.relu(self.body(x)))


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    return Tiny()


def test_penalty_is_zero_at_the_starting_point_and_excludes_the_head(tiny):
    ref = starting_point(tiny)
    assert sorted(ref) == ["body.bias", "body.weight"]
    assert l2sp_penalty(tiny, ref, alpha=3.0).item() == 0.0


def test_value_and_gradient_by_hand(tiny):
    ref = starting_point(tiny)
    with torch.no_grad():
        tiny.body.weight.copy_(ref["body.weight"] + torch.tensor([[1.0, -2.0], [0.0, 0.5]]))
        tiny.body.bias.copy_(ref["body.bias"] + torch.tensor([3.0, 0.0]))
        tiny.head.weight.copy_(torch.tensor([[1.0, 0.0], [2.0, -1.0]]))
        tiny.head.bias.copy_(torch.tensor([0.0, 1.0]))
    alpha, beta = 0.2, 0.1
    # shared: 1 + 4 + 0 + 0.25 + 9 = 14.25; head: 1 + 4 + 1 + 1 = 7
    value = l2sp_penalty(tiny, ref, alpha=alpha, beta=beta)
    assert value.item() == pytest.approx(0.5 * alpha * 14.25 + 0.5 * beta * 7.0)
    value.backward()
    assert torch.allclose(tiny.body.weight.grad, alpha * torch.tensor([[1.0, -2.0], [0.0, 0.5]]))
    assert torch.allclose(tiny.body.bias.grad, alpha * torch.tensor([3.0, 0.0]))
    assert torch.allclose(tiny.head.weight.grad, beta * tiny.head.weight.detach())


def test_frozen_parameters_are_skipped(tiny):
    ref = starting_point(tiny)
    with torch.no_grad():
        tiny.body.weight.add_(1.0)
    tiny.body.weight.requires_grad_(False)
    assert l2sp_penalty(tiny, ref, alpha=1.0).item() == 0.0


def test_bad_inputs_fail_loudly(tiny):
    ref = starting_point(tiny)
    with pytest.raises(ValueError, match="alpha and beta"):
        l2sp_penalty(tiny, ref, alpha=-1.0)
    with pytest.raises(ValueError, match="head parameters"):
        l2sp_penalty(tiny, starting_point(tiny, head=None), alpha=1.0)
    with pytest.raises(ValueError, match="lacks"):
        l2sp_penalty(tiny, {"nope.weight": torch.zeros(1)}, alpha=1.0)
    with pytest.raises(ValueError, match="shape"):
        l2sp_penalty(tiny, {"body.weight": torch.zeros(3)}, alpha=1.0)
    with pytest.raises(ValueError, match="no parameters under head"):
        starting_point(tiny, head="classifier")


def test_regulariser_adds_the_penalty_to_the_training_loss_only(tiny):
    ref = starting_point(tiny)
    with torch.no_grad():
        tiny.body.weight.add_(1.0)
    reg = l2sp_regulariser(ref, alpha=1.0)
    assert reg(tiny).item() == pytest.approx(0.5 * 4.0)
    x, y = torch.randn(8, 2), torch.tensor([0, 1] * 4)
    plain = F.cross_entropy(tiny(x), y).item()
    # fit with a zero learning rate: the reported training loss is CE + penalty, the validation loss CE.
    history = fit(tiny, make_loader(x, y, 8), epochs=1, optimizer=torch.optim.SGD(tiny.parameters(), lr=0.0),
                  val_loader=make_loader(x, y, 8), regulariser=reg, progress=False)
    assert history.rows[0]["train_loss"] == pytest.approx(plain + 2.0, rel=1e-5)
    assert history.rows[0]["val_loss"] == pytest.approx(plain, rel=1e-5)
    with pytest.raises(ValueError, match="alpha and beta must be >= 0"):
        l2sp_regulariser(ref, alpha=-1.0)


def test_large_alpha_keeps_the_shared_weights_near_the_start():
    torch.manual_seed(0)
    x, y = torch.randn(64, 2), torch.randint(0, 2, (64,))
    moved = {}
    for alpha in (0.0, 100.0):
        torch.manual_seed(1)
        net = Tiny()
        ref = starting_point(net)
        model, history, steps = fit_with_l2sp(net, x, y, x, y, epochs=5, lr=0.05, batch_size=16, seed=0,
                                              alpha=alpha, keep="last")
        moved[alpha] = (model.body.weight.detach() - ref["body.weight"]).norm().item()
        assert steps == 20 and len(history) == 5 and "val_acc" in history.rows[0]
    assert moved[100.0] < 0.2 * moved[0.0]


def test_fit_keeps_the_best_validation_checkpoint():
    torch.manual_seed(0)
    x, y = torch.randn(32, 2), torch.randint(0, 2, (32,))
    model, history, _ = fit_with_l2sp(Tiny(), x, y, x, y, epochs=4, lr=0.05, batch_size=8, seed=0)
    best = min(history["val_loss"])
    assert evaluate(model, make_loader(x, y, 64))["loss"] == pytest.approx(best, rel=1e-5)
    with pytest.raises(ValueError, match="keep"):
        fit_with_l2sp(Tiny(), x, y, x, y, epochs=1, lr=0.1, keep="first")
