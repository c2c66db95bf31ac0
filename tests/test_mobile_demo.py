"""Tests of tlcourse.mobile_demo: photo preparation, the cut EfficientNet and its pooled features,
the folded probe, and the exercise's photos."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from tlcourse import zoo
from tlcourse.features import extract_layer_features, linear_probe
from tlcourse.mobile_demo import (EXERCISE_SIZES, OnDeviceClassifier, block_channels, block_stride,
                                  exercise_photos, fit_on_device_classifier, photos, pooled_block_features)


@pytest.fixture(scope="module")
def backbone():
    torch.manual_seed(0)
    return zoo.efficientnet_lite0(pretrained=False)


def test_photos_are_rgb_at_the_size_and_in_range():
    x = photos(torch.rand(3, 1, 32, 32), 64)
    assert x.shape == (3, 3, 64, 64) and x.dtype == torch.float32
    assert 0 <= float(x.min()) and float(x.max()) <= 1
    assert torch.equal(x[:, 0], x[:, 2])                     # grey copied to the three channels
    with pytest.raises(ValueError, match="multiple of 32"):
        photos(torch.rand(1, 3, 32, 32), 48)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        photos(255 * torch.rand(1, 3, 32, 32), 64)             # the camera's raw scale is refused


def test_block_shapes_match_the_network(backbone):
    # the paper's stages: strides 8, 16, 16, 32 and widths 40, 80, 112, 192 at these blocks
    assert [block_stride(backbone, b) for b in (4, 7, 10, 14)] == [8, 16, 16, 32]
    assert [block_channels(backbone, f"_blocks.{b}") for b in (4, 7, 10, 14)] == [40, 80, 112, 192]
    with torch.no_grad():
        x = torch.zeros(1, 3, 64, 64)
        h = backbone._swish(backbone._bn0(backbone._conv_stem(x)))
        for block in backbone._blocks[:11]:
            h = block(h)
    assert h.shape == (1, 112, 4, 4)
    with pytest.raises(ValueError, match="block must be"):
        block_channels(backbone, 16)


def test_features_equal_the_hooked_layer_features(backbone):
    x = torch.rand(5, 3, 64, 64)
    for block, grid in ((7, 2), (10, 1), (14, 2)):
        ours = pooled_block_features(backbone, x, block, grid)
        hooked = extract_layer_features(backbone, (x - 0.5) / 0.5, [f"_blocks.{block}"], pool=grid)[f"_blocks.{block}"]
        assert ours.shape == hooked.shape == (5, block_channels(backbone, block) * grid * grid)
        assert np.allclose(ours, hooked, atol=1e-5)


def test_classifier_is_frozen_shares_weights_and_checks_its_head(backbone):
    net = OnDeviceClassifier(backbone, 7, nn.Linear(80 * 4, 3), image_size=64, grid=2)
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    assert net.blocks[0] is backbone._blocks[0]
    assert net(torch.rand(2, 3, 64, 64)).shape == (2, 3)
    with pytest.raises(ValueError, match="320 inputs"):
        OnDeviceClassifier(backbone, 7, nn.Linear(80, 3), image_size=64, grid=2)
    with pytest.raises(ValueError, match="must divide"):
        OnDeviceClassifier(backbone, 7, nn.Linear(80 * 9, 3), image_size=64, grid=3)


def test_folded_probe_predicts_like_the_probe(backbone):
    rng = np.random.default_rng(0)
    x = torch.rand(30, 3, 64, 64)
    y = rng.integers(0, 3, 30)
    x[y == 1, 0] *= 0.3                                     # make the classes a little separable
    net = fit_on_device_classifier(backbone, x, y, block=7)
    z = pooled_block_features(backbone, x, 7)
    probe = linear_probe(z, y, z, y)
    with torch.no_grad():
        ours = net(x).argmax(1).numpy()
    assert (ours == probe.classifier.predict(z)).all()


def test_exercise_photos_are_fixed_balanced_and_disjoint():
    a, b = exercise_photos(), exercise_photos()
    for name, per_class in EXERCISE_SIZES.items():
        x, y = a[name]
        assert x.shape == (10 * per_class, 3, 64, 64) and np.bincount(y).tolist() == [per_class] * 10
        assert torch.equal(x, b[name][0])
    train, test = a["train"][0].flatten(1), a["test"][0].flatten(1)
    assert not (torch.cdist(train[:50], test).min(1).values == 0).any()
