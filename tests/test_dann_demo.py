"""Tests of tlcourse.dann_demo: splits, the small CNN, the AdaBN control, the selection scores and
the shared training recipe, on tiny cases."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from tlcourse.dann_demo import (FEATURE_DIM, adabn, digit_shift, features, prediction_entropy,
                                selection_scores, small_cnn, train_arm)

TINY = dict(n_source=120, n_target=120, n_source_val=60, n_select=60)


@pytest.fixture(scope="module")
def shift():
    return digit_shift(seed=0, pair="usps_mnist", **TINY)


def test_digit_shift_sizes_and_determinism(shift):
    assert tuple(shift.source_x.shape) == (120, 1, 16, 16)
    assert len(shift.source_val_y) == 60 and len(shift.target_x) == 120 and len(shift.select_y) == 60
    assert tuple(shift.test_x.shape) == (2000, 1, 16, 16)  # MNIST test images 8,000-9,999
    again = digit_shift(seed=0, pair="usps_mnist", **TINY)
    assert torch.equal(again.source_x, shift.source_x) and torch.equal(again.target_x, shift.target_x)
    other = digit_shift(seed=1, pair="usps_mnist", **TINY)
    assert not torch.equal(other.source_x, shift.source_x)
    assert float(shift.source_x.min()) >= 0 and float(shift.source_x.max()) <= 1


def test_digit_shift_keeps_the_roles_disjoint(shift):
    flat = lambda x: {tuple(row.tolist()) for row in x.flatten(1)}  # noqa: E731
    assert not flat(shift.target_x) & flat(shift.select_x)
    assert not flat(shift.target_x) & flat(shift.test_x)
    assert not flat(shift.source_x) & flat(shift.source_val_x)


def test_digit_shift_rejects_bad_requests():
    with pytest.raises(ValueError, match="unknown pair"):
        digit_shift(pair="svhn_mnist")
    with pytest.raises(ValueError, match="too many images"):
        digit_shift(pair="usps_mnist", n_source=7000, n_source_val=1000)


def test_small_cnn_shapes_and_seeding():
    state = torch.random.get_rng_state()
    g, c = small_cnn(seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global stream is untouched
    g2, _ = small_cnn(seed=3)
    assert all(torch.equal(a, b) for a, b in zip(g.state_dict().values(), g2.state_dict().values()))
    assert tuple(c(g(torch.zeros(5, 1, 16, 16))).shape) == (5, 10)
    assert tuple(g.eval()(torch.zeros(2, 1, 16, 16)).shape) == (2, FEATURE_DIM)


def test_adabn_reestimates_the_statistics_on_the_given_images_only():
    model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
    x = torch.randn(100, 3) * 2 + 5
    before = {k: v.clone() for k, v in model.state_dict().items()}
    adapted = adabn(model, x, batch_size=25)  # four equal batches: the exact mean
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # input untouched
    h = model[0](x).detach()
    assert torch.allclose(adapted[1].running_mean, h.mean(0), atol=1e-5)
    assert not adapted.training and torch.equal(adapted[0].weight, model[0].weight)
    with pytest.raises(ValueError, match="BatchNorm"):
        adabn(nn.Linear(3, 3), x)


def test_prediction_entropy_limits():
    uniform = nn.Linear(4, 10)
    nn.init.zeros_(uniform.weight), nn.init.zeros_(uniform.bias)
    assert math.isclose(prediction_entropy(uniform, torch.randn(8, 4)), math.log(10), rel_tol=1e-9)
    sure = nn.Linear(4, 10)
    nn.init.zeros_(sure.weight)
    with torch.no_grad():
        sure.bias.copy_(torch.tensor([50.0] + [0.0] * 9))
    assert prediction_entropy(sure, torch.randn(8, 4)) < 1e-12


@pytest.mark.parametrize("method", ["source_only", "dann", "cdan"])
def test_train_arm_takes_the_same_budget_for_every_method(shift, method):
    arm = train_arm(shift, method, seed=0, steps=6, batch_size=16, log_every=3)
    assert arm.steps == 6 and arm.source_batch == 16
    assert not arm.g.training
    if method == "source_only":
        assert arm.history is None
    else:
        assert arm.history["step"] == [3, 6] and 0 <= arm.history.rows[-1]["domain_acc"] <= 1
    assert features(arm.g, shift.target_x[:5]).shape == (5, FEATURE_DIM)


def test_train_arm_rejects_an_unknown_method(shift):
    with pytest.raises(ValueError, match="unknown method"):
        train_arm(shift, "adda", seed=0)


def test_selection_scores_reports_every_rule(shift):
    arm = train_arm(shift, "source_only", seed=0, steps=4, batch_size=16)
    scores = selection_scores(arm.model, shift, n_pad=60)
    assert sorted(scores) == ["oracle_acc", "pad", "source_val_acc", "target_entropy", "test_acc"]
    assert 0 <= scores["pad"] <= 2 and 0 <= scores["test_acc"] <= 1
    assert 0 <= scores["target_entropy"] <= math.log(10) + 1e-9


def test_source_only_sees_the_same_source_batches_as_dann(shift):
    """The source-only arm and the adversarial arms draw the same cycled sequence of batches."""
    from tlcourse.dann_demo import _OneBatchPerEpoch
    from tlcourse.train import make_loader

    loader = make_loader(shift.source_x, shift.source_y, 50, shuffle=True, seed=0)  # 3 batches a pass
    wrapped = _OneBatchPerEpoch(loader)
    ours = [next(iter(wrapped))[1] for _ in range(7)]
    again = make_loader(shift.source_x, shift.source_y, 50, shuffle=True, seed=0)
    cycled = [b[1] for _ in range(3) for b in again][:7]
    assert all(torch.equal(a, b) for a, b in zip(ours, cycled))
