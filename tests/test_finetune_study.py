"""Tests of tlcourse.finetune_study: step budgets, BatchNorm handling, gradient cosines and their
references, paired statistics and the Keras checks used by chapter T07."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from tlcourse.finetune import freeze, unfreeze
from tlcourse.compare import mean_sd, paired_gap
from tlcourse.finetune_study import (accuracy, base_gradient, body_features, freeze_batchnorm, gradient_cosines,
                                     train_steps, with_statistics_of)
from tlcourse.models import DigitCNN

BODY = ["block1", "block2", "block3"]


def _data(n=64, classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 28, 28, generator=g) + 1.5, torch.randint(0, classes, (n,), generator=g)


def _net(seed=0, classes=4):
    torch.manual_seed(seed)
    return DigitCNN(num_classes=classes)


def _bn_buffers(model):
    return {k: v.clone() for k, v in model.state_dict().items() if "running" in k}


def test_train_steps_runs_exactly_the_budget_and_monitors():
    x, y = _data()
    model = _net()
    rows = train_steps(model, x, y, lr=1e-3, steps=7, batch_size=16, every=2,
                       monitor=lambda m: {"training": m.training})
    assert [r["step"] for r in rows] == [2, 4, 6]
    assert not any(r["training"] for r in rows), "the monitor sees the model in eval mode"
    assert not model.training


def test_train_steps_leaves_frozen_parts_and_their_statistics_alone():
    x, y = _data()
    model = unfreeze(freeze(_net()), "head")
    before, buffers = copy.deepcopy(model.state_dict()), _bn_buffers(model)
    train_steps(model, x, y, lr=1e-2, steps=5, batch_size=16)
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items() if not k.startswith("head"))
    assert all(torch.equal(after[k], v) for k, v in buffers.items())
    assert not torch.equal(after["head.weight"], before["head.weight"])


def test_train_steps_with_bn_in_training_mode_moves_the_statistics():
    x, y = _data()
    model = unfreeze(freeze(_net()), "head")
    buffers = _bn_buffers(model)
    train_steps(model, x, y, lr=1e-2, steps=3, batch_size=16, frozen_bn_eval=False)
    moved = [k for k, v in _bn_buffers(model).items() if not torch.equal(v, buffers[k]) and "mean" in k]
    assert moved, "training mode updates the running statistics of a frozen base"


def test_train_steps_same_seed_same_result_and_errors():
    x, y = _data()
    a, b = _net(), _net()
    train_steps(a, x, y, lr=1e-3, steps=4, seed=3)
    train_steps(b, x, y, lr=1e-3, steps=4, seed=3)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    with pytest.raises(ValueError, match="no trainable"):
        train_steps(freeze(_net()), x, y, lr=1e-3, steps=1)
    with pytest.raises(ValueError):
        train_steps(_net(), x, y, lr=1e-3, steps=0)


def test_feature_head_equals_head_on_frozen_base():
    """Training a head on body_features is the computation of training it on the frozen base."""
    x, y = _data()
    model = _net()
    feats = body_features(model, x)
    assert feats.shape == (len(x), 128)
    on_features, on_base = copy.deepcopy(model), unfreeze(freeze(copy.deepcopy(model)), "head")
    train_steps(on_features.head, feats, y, lr=1e-2, steps=6, batch_size=16, seed=1)
    train_steps(on_base, x, y, lr=1e-2, steps=6, batch_size=16, seed=1)
    assert torch.allclose(on_features.head.weight, on_base.head.weight, atol=1e-5)
    assert 0.0 <= accuracy(on_base, x, y) <= 1.0


def test_base_gradient_and_cosines():
    x, y = _data()
    model = _net()
    before = copy.deepcopy(model.state_dict())
    g = base_gradient(model, x, y, BODY)
    assert g.ndim == 1 and g.numel() == sum(p.numel() for b in BODY for p in getattr(model, b).parameters())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items()), "model left unchanged"
    same = gradient_cosines([model, _net(1)], [model, model], x, y, BODY, batch_size=16)
    assert same["random_vs_trained"] == pytest.approx(1.0, abs=1e-5)
    assert same["trained_vs_trained"] == pytest.approx(1.0, abs=1e-5)
    assert same["random_directions"] == pytest.approx(math.sqrt(2 / (math.pi * same["d"])))
    assert all(-1 <= same[k] <= 1 for k in ("random_vs_random", "two_minibatches"))
    with pytest.raises(ValueError):
        gradient_cosines([model], [model, model], x, y, BODY)


def test_freeze_batchnorm_and_with_statistics_of():
    x, y = _data()
    model = freeze_batchnorm(_net())
    bn = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert bn and not any(p.requires_grad for m in bn for p in m.parameters())
    assert model.block1[0].weight.requires_grad
    buffers = _bn_buffers(model)
    train_steps(model, x, y, lr=1e-2, steps=3, batch_size=16)
    assert all(torch.equal(v, buffers[k]) for k, v in _bn_buffers(model).items())

    reference, drifted = _net(), _net()
    drifted.train()
    with torch.no_grad():
        drifted(x)  # moves the running statistics only
    restored = with_statistics_of(drifted, reference)
    assert all(torch.equal(v, _bn_buffers(reference)[k]) for k, v in _bn_buffers(restored).items())
    assert not torch.equal(_bn_buffers(drifted)["block1.1.running_mean"], _bn_buffers(reference)["block1.1.running_mean"])


def test_paired_gap_and_mean_sd():
    g = paired_gap([0.7, 0.8, 0.9], [0.6, 0.7, 0.8])
    assert g["mean"] == pytest.approx(0.1) and g["real"], "a constant gap is real"
    noisy = paired_gap([0.70, 0.60, 0.75], [0.65, 0.66, 0.70])
    assert not noisy["real"] and noisy["se"] == pytest.approx(np.std([0.05, -0.06, 0.05], ddof=1) / math.sqrt(3))
    assert not paired_gap([0.7], [0.6])["real"]
    with pytest.raises(ValueError):
        paired_gap([0.1, 0.2], [0.1])
    assert mean_sd([0.5, 0.6, 0.7]) == "60.0 ± 10.0"


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")
def test_keras_trainable_checks():
    import torch._dynamo  # noqa: F401  (before TensorFlow: Triton after TF segfaults here)

    pytest.importorskip("keras")
    from tlcourse.finetune_study import keras_trainable_checks

    out = keras_trainable_checks(seed=0)
    assert out["unfrozen, not recompiled"] == (0.0, 0.0)
    assert out["unfrozen, recompiled"][0] > 0 and out["unfrozen, recompiled"][1] > 0
    assert out["BN trainable=False"][1] == 0 < out["BN trainable=False"][0]
    assert out["base(x, training=False)"][1] > 0
    assert out["unfrozen, BN trainable=False"][1] == 0 < out["unfrozen, BN trainable=False"][0]
