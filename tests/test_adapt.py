"""Tests of tlcourse.adapt: target BatchNorm statistics (AdaBN) on tiny models whose statistics are
computed here by hand."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from tlcourse.adapt import adapt_batchnorm, batchnorm_layers, batchnorm_statistics


def tiny_cnn(dropout: float = 0.5) -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 3, 3, bias=False), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(),
                        nn.Dropout(dropout), nn.Linear(3 * 4 * 4, 5), nn.BatchNorm1d(5), nn.ReLU(),
                        nn.Linear(5, 2))
    # a "source-trained" model: non-trivial affine parameters and running statistics
    for m in (net[1], net[6]):
        m.weight.data.uniform_(0.5, 2.0)
        m.bias.data.normal_()
        m.running_mean.normal_()
        m.running_var.uniform_(0.5, 2.0)
    return net.eval()


def target_images(n: int = 64) -> torch.Tensor:
    return torch.randn(n, 1, 6, 6, generator=torch.Generator().manual_seed(1)) * 3 + 2


def expected_statistics(net, x):
    """The pool's mean and unbiased variance of each BatchNorm input, computed layer by layer with
    the layers below already normalised by the pool's statistics (and no dropout)."""
    h = net[0](x)
    m1, v1 = h.mean((0, 2, 3)), h.var((0, 2, 3), unbiased=True)
    h = (h - m1[None, :, None, None]) / torch.sqrt(h.var((0, 2, 3), unbiased=False) + 1e-5)[None, :, None, None]
    h = torch.relu(h * net[1].weight[None, :, None, None] + net[1].bias[None, :, None, None])
    h = net[5](h.flatten(1))
    return {"1": (m1, v1), "6": (h.mean(0), h.var(0, unbiased=True))}


def test_running_statistics_equal_the_target_statistics():
    net, x = tiny_cnn(), target_images()
    adapted = adapt_batchnorm(net, x)
    stats = batchnorm_statistics(adapted)
    with torch.no_grad():
        want = expected_statistics(net, x)
    for name in ("1", "6"):
        assert torch.allclose(stats[name][0], want[name][0], atol=1e-5)
        assert torch.allclose(stats[name][1], want[name][1], rtol=1e-4)


def test_nothing_else_changes_and_the_input_model_is_untouched():
    net, x = tiny_cnn(), target_images()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    adapted = adapt_batchnorm(net, x)
    for key, value in net.state_dict().items():
        assert torch.equal(value, before[key]), f"the input model's {key} changed"
    for key, value in adapted.state_dict().items():
        if "running_" in key or "num_batches_tracked" in key:
            continue
        assert torch.equal(value, before[key]), f"{key} changed: AdaBN must change only the statistics"
    assert not any(m.training for m in adapted.modules()), "the adapted model must be in eval mode"
    assert [m.momentum for _, m in batchnorm_layers(adapted)] == [0.1, 0.1], "momentum must be restored"


def test_dropout_stays_off_while_the_statistics_are_collected():
    x = target_images()
    with_dropout, without = adapt_batchnorm(tiny_cnn(0.9), x), adapt_batchnorm(tiny_cnn(0.0), x)
    for (a_mean, a_var), (b_mean, b_var) in zip(batchnorm_statistics(with_dropout).values(),
                                                batchnorm_statistics(without).values()):
        assert torch.allclose(a_mean, b_mean, atol=1e-6) and torch.allclose(a_var, b_var, atol=1e-6)


def test_equal_batches_give_the_exact_mean_and_the_average_batch_variance():
    net, x = tiny_cnn(), target_images(64)
    one = batchnorm_statistics(adapt_batchnorm(net, x))["1"]
    four = batchnorm_statistics(adapt_batchnorm(net, x, batch_size=16))["1"]
    assert torch.allclose(four[0], one[0], atol=1e-5)       # first layer: a linear map of the images
    h = net[0](x).detach()
    per_batch = torch.stack([h[i:i + 16].var((0, 2, 3)) for i in range(0, 64, 16)]).mean(0)
    assert torch.allclose(four[1], per_batch, rtol=1e-4)


def test_inplace_adapts_the_model_itself_and_predictions_change():
    net, x = tiny_cnn(), target_images()
    logits_before = net(x).detach()
    same = adapt_batchnorm(net, x, inplace=True)
    assert same is net
    assert not torch.allclose(net(x), logits_before)
    assert torch.allclose(net(x), net(x))  # eval mode: deterministic


def test_fails_loudly_on_bad_input():
    with pytest.raises(ValueError, match="BatchNorm"):
        adapt_batchnorm(nn.Sequential(nn.Linear(2, 2)), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="non-empty"):
        adapt_batchnorm(tiny_cnn(), torch.zeros(0, 1, 6, 6))
    with pytest.raises(ValueError, match="batch_size"):
        adapt_batchnorm(tiny_cnn(), target_images(), batch_size=1)
