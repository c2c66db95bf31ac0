"""Tests of tlcourse.keras_zoo: the Keras digit CNN's shapes and counts, freezing, and its cache."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

# Loading Triton (torch._dynamo) after TensorFlow segfaults this environment; the other order works.
# Later tests in the same worker build torch optimizers, which import torch._dynamo.
import torch._dynamo  # noqa: E402,F401

keras = pytest.importorskip("keras")

from tlcourse import keras_zoo  # noqa: E402
from tlcourse.keras_zoo import (  # noqa: E402
    keras_digit_cnn, keras_parameter_counts, pretrained_keras_digit_cnn, to_channels_last)

# Keras' TensorFlow backend converts its variables with np.array(x), which NumPy 2 warns about.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")
TINY = dict(epochs=1, n_train=256, batch_size=64)  # four batches: enough to move every weight


def test_architecture_shapes_and_counts():
    net = keras_digit_cnn()
    base = net.get_layer("base")
    assert base.output_shape == (None, 128)
    assert net.output_shape == (None, 10)
    # The PyTorch DigitCNN's 215,546 weights plus 4 x (16 + 32 + 128) BatchNorm moving statistics.
    assert net.count_params() == 215_546 + 2 * (16 + 32 + 128) == 215_898
    assert keras_parameter_counts(net) == (215_546, 352)
    x = np.random.default_rng(0).random((3, 28, 28, 1), dtype=np.float32)
    probs = keras.ops.convert_to_numpy(net(x, training=False))
    assert probs.shape == (3, 10) and np.allclose(probs.sum(1), 1, atol=1e-5)
    assert keras_digit_cnn(num_classes=19, in_channels=3).output_shape == (None, 19)
    with pytest.raises(ValueError, match="num_classes"):
        keras_digit_cnn(num_classes=0)


def test_freezing_the_base_leaves_only_the_new_head_trainable():
    base = keras_digit_cnn().get_layer("base")
    base.trainable = False
    model = keras.Sequential([base, keras.layers.Dense(19, activation="softmax")])
    model.build((None, 28, 28, 1))
    assert keras_parameter_counts(model) == (128 * 19 + 19, 215_546 - 1_290 + 352)


def test_frozen_batchnorm_runs_in_inference_mode():
    """trainable = False: BatchNorm neither updates its moving statistics nor uses batch statistics."""
    base = keras_digit_cnn().get_layer("base")
    base.trainable = False
    x = np.random.default_rng(1).random((8, 28, 28, 1), dtype=np.float32) * 5
    before = base.get_layer("bn1").moving_mean.numpy().copy()
    np.testing.assert_allclose(keras.ops.convert_to_numpy(base(x, training=True)), keras.ops.convert_to_numpy(base(x, training=False)), atol=1e-5)
    np.testing.assert_array_equal(base.get_layer("bn1").moving_mean.numpy(), before)


def test_to_channels_last():
    t = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    out = to_channels_last(t)
    assert out.shape == (2, 4, 5, 3) and out.dtype == np.float32 and out.flags["C_CONTIGUOUS"]
    assert out[1, 2, 3, 0] == t[1, 0, 2, 3]
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        to_channels_last(np.zeros((28, 28)))


def test_pretrained_is_cached_and_reloaded(tmp_path):
    first = pretrained_keras_digit_cnn(seed=0, cache_dir=tmp_path, **TINY)
    info = first.source_info
    assert not info["loaded_from_cache"] and 0 <= info["heldout_accuracy"] <= 1
    assert info["n_heldout"] == 10_000 - TINY["n_train"]
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == [f"keras_digit_cnn-emnist_digits-{info['hash']}.json",
                     f"keras_digit_cnn-emnist_digits-{info['hash']}.weights.h5"]
    saved = json.loads((tmp_path / files[0]).read_text())
    assert saved["recipe"]["train_subset"] == "images[:256]" and saved["seed"] == 0
    second = pretrained_keras_digit_cnn(seed=0, cache_dir=tmp_path, **TINY)
    assert second.source_info["loaded_from_cache"] and second.source_info["hash"] == info["hash"]
    for a, b in zip(first.weights, second.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    # A different seed or recipe is a different cache entry.
    other = pretrained_keras_digit_cnn(seed=1, cache_dir=tmp_path, **TINY)
    assert other.source_info["hash"] != info["hash"] and not other.source_info["loaded_from_cache"]


def test_training_moves_the_weights(tmp_path):
    keras.utils.set_random_seed(0)
    fresh = keras_digit_cnn()
    keras.utils.set_random_seed(0)
    trained = pretrained_keras_digit_cnn(seed=0, cache_dir=tmp_path, **TINY)
    conv_fresh = fresh.get_layer("base").get_layer("conv1").kernel.numpy()
    conv_trained = trained.get_layer("base").get_layer("conv1").kernel.numpy()
    assert not np.allclose(conv_fresh, conv_trained)


def test_corrupt_cache_is_retrained_with_a_warning(tmp_path):
    info = pretrained_keras_digit_cnn(seed=0, cache_dir=tmp_path, **TINY).source_info
    weights = tmp_path / f"keras_digit_cnn-emnist_digits-{info['hash']}.weights.h5"
    weights.write_bytes(b"not an HDF5 file")
    with pytest.warns(UserWarning, match="could not be read"):
        again = pretrained_keras_digit_cnn(seed=0, cache_dir=tmp_path, **TINY)
    assert not again.source_info["loaded_from_cache"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert pretrained_keras_digit_cnn(seed=0, cache_dir=tmp_path, **TINY).source_info["loaded_from_cache"]


def test_default_cache_folder_follows_tlcourse_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TLCOURSE_CACHE", str(tmp_path))
    model = pretrained_keras_digit_cnn(seed=0, **TINY)
    assert model.source_info["cache_path"].startswith(str(tmp_path / "models"))


@pytest.mark.parametrize("kwargs, match", [
    (dict(epochs=0), "epochs"), (dict(n_train=0), "n_train"), (dict(seed=-1), "seed"),
    (dict(seed=True), "seed"), (dict(source="cifar10"), "unknown source"),
    (dict(n_train=10_000), "leaves no held-out"),
])
def test_bad_arguments_raise(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        pretrained_keras_digit_cnn(cache_dir=tmp_path, **{**TINY, **kwargs})


def test_module_exports():
    assert set(keras_zoo.__all__) == {"keras_digit_cnn", "pretrained_keras_digit_cnn",
                                      "keras_parameter_counts", "to_channels_last", "import_keras"}


def test_import_keras_returns_keras_with_torch_compiler_loaded_first():
    import sys

    keras = keras_zoo.import_keras()
    assert keras.__name__ == "keras" and hasattr(keras, "layers")
    assert "torch._dynamo" in sys.modules
