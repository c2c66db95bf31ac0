import numpy as np
import pytest
import torch
from torch import nn

from tlcourse.features import extract_features, extract_layer_features, linear_probe


def test_extract_features_is_batched_no_grad_and_eval_mode():
    net = nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.9))
    net.train()
    x = torch.randn(10, 3)
    feats = extract_features(net, x, batch_size=3)
    assert feats.shape == (10, 4) and feats.dtype == np.float32
    np.testing.assert_allclose(feats, net[0](x).detach().numpy(), rtol=1e-5, atol=1e-6)  # dropout off
    assert net.training  # mode restored


def test_layer_features_pool_and_flatten():
    conv = nn.Conv2d(1, 2, 1, bias=False)
    nn.init.ones_(conv.weight)
    net = nn.Sequential(conv, nn.Flatten())
    x = torch.arange(8.0).reshape(2, 1, 2, 2)
    avg = extract_layer_features(net, x, ["0"])["0"]
    np.testing.assert_allclose(avg, [[1.5, 1.5], [5.5, 5.5]])
    flat = extract_layer_features(net, x, ["0"], pool="flatten")["0"]
    assert flat.shape == (2, 8)
    with pytest.raises(ValueError, match="unknown layer"):
        extract_layer_features(net, x, ["9"])
    assert not net._forward_hooks and not conv._forward_hooks  # hooks removed


def test_linear_probe_separates_and_checks_inputs():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(300, 5))
    y = (z[:, 1] - z[:, 3] > 0).astype(int)
    result = linear_probe(z[:200], y[:200], z[200:], y[200:])
    assert result.accuracy > 0.95
    noise = linear_probe(rng.normal(size=(200, 5)), y[:200], rng.normal(size=(100, 5)), y[200:])
    assert noise.accuracy < 0.7
    with pytest.raises(ValueError, match="2-D"):
        linear_probe(z[:, 0], y, z, y)
    with pytest.raises(ValueError, match="rows"):
        linear_probe(z[:10], y[:11], z, y)
    with pytest.raises(ValueError, match="single class"):
        linear_probe(z[:10], np.zeros(10), z, y)


@pytest.mark.parametrize("classes", [2, 4])
def test_probe_as_linear_reproduces_the_probe_probabilities(classes):
    from sklearn.linear_model import LogisticRegression

    from tlcourse.features import probe_as_linear

    rng = np.random.default_rng(classes)
    z = rng.normal(size=(120, 5)) * rng.uniform(0.1, 10, size=5) + rng.normal(size=5) * 3
    y = np.arange(120) % classes
    probe = linear_probe(z, y, z, y)
    layer = probe_as_linear(probe)
    assert (layer.in_features, layer.out_features) == (5, classes)
    probs = torch.softmax(layer(torch.from_numpy(z).float()).double(), 1).detach().numpy()
    np.testing.assert_allclose(probs, probe.classifier.predict_proba(z), atol=1e-5)
    bare = LogisticRegression(max_iter=1000).fit(z, y)  # no scaler in front
    np.testing.assert_allclose(torch.softmax(probe_as_linear(bare, torch.float64)(torch.from_numpy(z)), 1)
                               .detach().numpy(), bare.predict_proba(z), atol=1e-8)
    with pytest.raises(ValueError, match="fitted linear_probe result or LogisticRegression"):
        probe_as_linear(LogisticRegression())


def test_extract_layer_features_grid_pooling_matches_adaptive_average():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 8 * 8, 2))
    x = torch.rand(4, 1, 8, 8)
    got = extract_layer_features(net, x, ["1", "3"], pool=2, batch_size=3)
    with torch.no_grad():
        maps = net[1](net[0](x))
    expected = maps.reshape(4, 3, 2, 4, 2, 4).mean((3, 5)).flatten(1)   # 4x4 blocks averaged
    np.testing.assert_allclose(got["1"], expected.numpy(), atol=1e-6)
    assert got["3"].shape == (4, 2)                                      # vectors are kept as they are
    small = extract_layer_features(net, x, ["1"], pool=16)["1"]          # a grid larger than the map
    np.testing.assert_allclose(small, maps.flatten(1).numpy(), atol=1e-6)
    for bad in (0, -1, True, "grid"):
        with pytest.raises(ValueError, match="grid size"):
            extract_layer_features(net, x, ["1"], pool=bad)
