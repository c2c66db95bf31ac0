"""A Keras source model that works offline: the digit CNN of :mod:`tlcourse.models` in Keras 3.

Most tutorials show feature extraction with ``keras.applications`` (``VGG16(weights="imagenet",
include_top=False)``), which downloads its weights on first use. This module gives the Keras half
of the course a pretrained source without internet: :func:`pretrained_keras_digit_cnn` trains a
small CNN on EMNIST digits once and caches its weights, exactly like
:func:`tlcourse.zoo.pretrained_digit_cnn` does for PyTorch.

The model is ``Sequential([base, head])``: ``base`` (a ``Sequential`` named ``"base"``) maps a
(N, 28, 28, 1) image to a (N, 128) feature vector and ``head`` is ``Dense(10, softmax)``. So the
transfer recipe reads as it does with ``keras.applications``::

    base = pretrained_keras_digit_cnn().get_layer("base")   # the model without its top
    base.trainable = False                                  # freeze: weights and BatchNorm
    model = keras.Sequential([base, keras.layers.Dense(19, activation="softmax")])

Keras 3 runs on TensorFlow, PyTorch or JAX; nothing here depends on the backend. Images are
channels-last (N, H, W, C), the Keras default; :func:`to_channels_last` converts the course's
(N, C, H, W) arrays. When TensorFlow and PyTorch share a process, load torch's compiler stack
first (``import torch._dynamo`` before ``import keras``); the functions here do it for you, and
:func:`import_keras` does it for a notebook.

>>> net = keras_digit_cnn()
>>> net.get_layer("base").output_shape, net.count_params()
((None, 128), 215898)
"""
from __future__ import annotations

import json
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

__all__ = ["keras_digit_cnn", "pretrained_keras_digit_cnn", "keras_parameter_counts",
           "to_channels_last", "import_keras"]

#: Bump when the training code changes in a way the recipe does not show.
KERAS_RECIPE_VERSION = 1


def import_keras():
    """Import and return Keras, loading torch's compiler stack first when PyTorch is installed.

    Notebooks that use both frameworks call ``keras = import_keras()`` instead of ``import keras``.

    torch imports Triton (through ``torch._dynamo``) the first time a torch optimizer is built.
    In the course environment (torch 2.14 with Triton 3.8, TensorFlow 2.21) loading Triton
    *after* TensorFlow kills the process with a segmentation fault; the other order works. Both
    libraries ship their own LLVM, the likely culprit.
    """
    try:
        import torch._dynamo  # noqa: F401
    except ImportError:
        pass
    import keras

    return keras


_import_keras = import_keras


def to_channels_last(images) -> np.ndarray:
    """(N, C, H, W) images (NumPy array or torch tensor) as a float32 (N, H, W, C) NumPy array.

    >>> to_channels_last(np.zeros((2, 1, 28, 28))).shape
    (2, 28, 28, 1)
    """
    array = images.detach().cpu().numpy() if hasattr(images, "detach") else np.asarray(images)
    if array.ndim != 4:
        raise ValueError(f"expected a batch of shape (N, C, H, W), got {array.shape}")
    return np.ascontiguousarray(array.transpose(0, 2, 3, 1), dtype=np.float32)


def keras_digit_cnn(num_classes: int = 10, in_channels: int = 1):
    """The Keras twin of :class:`tlcourse.models.DigitCNN`, randomly initialised.

    ==========  =================================================  ==============
    part        layers                                             output shape
    ==========  =================================================  ==============
    ``base``    conv 5x5 (16, no bias), BN, ReLU, max-pool 2       (N, 14, 14, 16)
                conv 5x5 (32, no bias), BN, ReLU, max-pool 2       (N, 7, 7, 32)
                flatten, dense 128 (no bias), BN, ReLU             (N, 128)
    ``head``    dense ``num_classes``, softmax                     (N, num_classes)
    ==========  =================================================  ==============

    Same weights as the PyTorch model (215,546 with 10 classes) plus the BatchNorm moving means
    and variances, which Keras counts as non-trainable parameters: 215,898 in all, 352 of them
    non-trainable. BatchNorm uses ``momentum=0.9`` (PyTorch's 0.1): with the Keras default of
    0.99 the moving statistics are still far from the data after a few hundred steps, and the
    model predicts one class in inference mode although it trained well.
    """
    keras = _import_keras()
    layers = keras.layers

    if num_classes < 1 or in_channels < 1:
        raise ValueError(f"num_classes and in_channels must be >= 1, got {num_classes} and {in_channels}")
    base = keras.Sequential([
        keras.Input((28, 28, in_channels)),
        layers.Conv2D(16, 5, padding="same", use_bias=False, name="conv1"),
        layers.BatchNormalization(momentum=0.9, name="bn1"), layers.ReLU(name="relu1"),
        layers.MaxPooling2D(name="pool1"),
        layers.Conv2D(32, 5, padding="same", use_bias=False, name="conv2"),
        layers.BatchNormalization(momentum=0.9, name="bn2"), layers.ReLU(name="relu2"),
        layers.MaxPooling2D(name="pool2"),
        layers.Flatten(name="flatten"), layers.Dense(128, use_bias=False, name="dense"),
        layers.BatchNormalization(momentum=0.9, name="bn3"), layers.ReLU(name="relu3"),
    ], name="base")
    return keras.Sequential([base, layers.Dense(num_classes, activation="softmax", name="head")],
                            name="keras_digit_cnn")


def keras_parameter_counts(model) -> tuple[int, int]:
    """``(trainable, non_trainable)`` parameter counts, the two numbers ``model.summary()`` prints.

    Non-trainable includes the BatchNorm moving statistics, so it is not zero even for a model
    that nothing froze.

    >>> keras_parameter_counts(keras_digit_cnn())
    (215546, 352)
    """
    def size(weights):
        return int(sum(np.prod(w.shape) for w in weights))

    return size(model.trainable_weights), size(model.non_trainable_weights)


def _save_weights(model, path: Path) -> None:
    """Write to a temporary file in the same folder, then rename: never a truncated cache file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".weights.h5")
    os.close(fd)
    try:
        model.save_weights(tmp, overwrite=True)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def pretrained_keras_digit_cnn(source: str = "emnist_digits", seed: int = 0, epochs: int = 2, *,
                               n_train: int = 8000, batch_size: int = 64, lr: float = 1e-3,
                               cache_dir: str | os.PathLike | None = None):
    """:func:`keras_digit_cnn` trained on a digit dataset, trained once and then cached.

    Recipe: the first ``n_train`` images of ``source`` (its ``train`` split when it has one,
    else ``test``; resized to 28x28 when needed), ``epochs`` epochs of Adam (``lr``) on
    ``sparse_categorical_crossentropy`` (integer labels) in batches of ``batch_size``, shuffled by
    ``model.fit`` after ``keras.utils.set_random_seed(seed)``; the remaining images are held out
    and scored. The default recipe reaches about 98 % on the 2,000 held-out EMNIST digits in a
    few seconds on a CPU. Keras does not promise bit-identical weights across machines or thread
    counts, so two caches built on different machines may differ in the last digits.

    Cache: ``<cache_dir or $TLCOURSE_CACHE/models>/keras_digit_cnn-<source>-<hash12>.weights.h5``
    plus a ``.json`` with the recipe and scores, where ``hash12`` is
    :func:`tlcourse.zoo.recipe_hash` of the recipe, the SHA-256 of the data files and the seed. A
    second call with the same arguments loads the file. An unreadable cache file is retrained with
    a warning; an unwritable cache folder only warns.

    Returns the model with a ``source_info`` dict attribute (recipe, hash, cache path, held-out
    accuracy, training seconds, ``loaded_from_cache``).
    """
    from . import data
    from .zoo import _atomic_write, _dataset_sha256, models_cache_dir, recipe_hash

    for label, value in (("epochs", epochs), ("n_train", n_train), ("batch_size", batch_size)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{label} must be an integer >= 1, got {value!r}")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    data_sha256 = _dataset_sha256(source)
    splits = data.datasets()[source]
    split = "train" if "train" in splits else splits[0]
    recipe = {
        "architecture": "keras_digit_cnn", "keras_recipe_version": KERAS_RECIPE_VERSION,
        "source": source, "split": split, "input_size": [28, 28],
        "train_subset": f"images[:{n_train}]", "heldout_subset": f"images[{n_train}:]",
        "epochs": int(epochs), "batch_size": int(batch_size),
        "optimizer": {"name": "Adam", "lr": float(lr)}, "loss": "sparse_categorical_crossentropy",
        "seeding": "keras.utils.set_random_seed(seed)",
    }
    key = recipe_hash(recipe, data_sha256, seed)
    name = f"keras_digit_cnn-{source}"
    folder = Path(cache_dir).expanduser() if cache_dir is not None else models_cache_dir()
    path = folder / f"{name}-{key}.weights.h5"
    info_path = folder / f"{name}-{key}.json"

    if path.is_file() and info_path.is_file():
        try:
            info = json.loads(info_path.read_text(encoding="utf-8"))
            model = keras_digit_cnn(info["num_classes"], info["in_channels"])
            model.load_weights(str(path))
            model.source_info = {**info, "cache_path": str(path), "loaded_from_cache": True}
            return model
        except Exception as err:  # noqa: BLE001 - any unreadable cache file is rebuilt, loudly
            warnings.warn(f"cached Keras model {path} could not be read ({type(err).__name__}: "
                          f"{err}); training it again and overwriting the file", stacklevel=2)

    images = data.load(source, split)
    x, y = images.images, images.labels
    if x.shape[-2:] != (28, 28):
        x = data.resize(x, 28)
    if n_train >= len(x):
        raise ValueError(f"n_train={n_train} leaves no held-out images: {source} {split} has "
                         f"{len(x)} images; use a smaller n_train")
    x = to_channels_last(x)
    keras = _import_keras()
    keras.utils.set_random_seed(int(seed))
    model = keras_digit_cnn(len(images.classes), x.shape[-1])
    model.compile(optimizer=keras.optimizers.Adam(lr), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    start = time.perf_counter()
    history = model.fit(x[:n_train], y[:n_train], batch_size=batch_size, epochs=epochs,
                        shuffle=True, verbose=0)
    seconds = time.perf_counter() - start
    loss, accuracy = model.evaluate(x[n_train:], y[n_train:], batch_size=1000, verbose=0)
    info = {
        "name": name, "hash": key, "recipe": recipe, "data_sha256": data_sha256, "seed": int(seed),
        "classes": list(images.classes), "num_classes": len(images.classes),
        "in_channels": int(x.shape[-1]), "n_heldout": len(x) - n_train,
        "heldout_accuracy": float(accuracy), "heldout_loss": float(loss),
        "train_seconds": round(seconds, 2),
        "history": {k: [float(v) for v in vals] for k, vals in history.history.items()},
        "keras_version": keras.__version__, "keras_backend": keras.backend.backend(),
    }
    try:
        _save_weights(model, path)
        _atomic_write(info_path, lambda f: f.write(json.dumps(info, indent=2, sort_keys=True).encode()))
    except OSError as err:
        warnings.warn(f"could not cache the trained Keras model at {path} ({err}); it will be "
                      "trained again next time: set TLCOURSE_CACHE to a writable folder", stacklevel=2)
    model.source_info = {**info, "cache_path": str(path), "loaded_from_cache": False}
    return model
