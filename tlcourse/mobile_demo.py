"""Chapter T17's pipeline: a few labelled photos, a cut pretrained mobile backbone, one file to ship.

A phone app that sorts photos into a handful of classes has few labels and a tight budget of
megabytes and milliseconds. The recipe measured in T17:

1. :func:`photos`: the photos at the backbone's input size, RGB in [0, 1] (MNIST-M's colour
   digits on natural-image backgrounds stand in for document photos: 10 classes, real images).
2. Features of a frozen ImageNet EfficientNet-Lite0 (:func:`tlcourse.zoo.efficientnet_lite0`) at
   the output of several blocks, average-pooled to a ``grid`` x ``grid`` map
   (:func:`tlcourse.features.extract_layer_features` with ``pool=grid``); a linear probe on each,
   the block chosen on a validation split.
3. :class:`OnDeviceClassifier`: what ships. The preprocessing (x - 0.5) / 0.5, the backbone up to
   the chosen block, the same pooling, and the probe folded into one ``nn.Linear``
   (:func:`tlcourse.features.probe_as_linear`). Blocks after the cut are dropped, which is itself
   a compression: fewer weights and less compute than the whole network.
4. Export and quantisation with :mod:`tlcourse.export`.

Putting the preprocessing *inside* the exported model fixes the input contract in one place,
which is the choice ``keras.applications.MobileNetV3Small`` makes with its built-in ``Rescaling``
layer (``include_preprocessing=True``: it expects raw 0-255 pixels). The classic bug is the
mismatch: scaling the pixels to [0, 1] before a model that scales them again.

>>> net = OnDeviceClassifier(zoo.efficientnet_lite0(pretrained=False), block=4, head=nn.Linear(40 * 4, 10),
...                          image_size=64, grid=2)
>>> tuple(net(torch.rand(2, 3, 64, 64)).shape)
(2, 10)
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from . import zoo  # noqa: F401  (the docstring example builds a backbone with it)
from .zoo import EFFICIENTNET_LITE0_MEAN, EFFICIENTNET_LITE0_STD

__all__ = ["photos", "block_channels", "block_stride", "OnDeviceClassifier", "BLOCK_LAYERS",
           "pooled_block_features", "fit_on_device_classifier", "exercise_photos", "EXERCISE_SIZES"]

#: The output of each of EfficientNet-Lite0's seven stages: ``_blocks.0`` (16 channels, stride 2),
#: ``2`` (24, 4), ``4`` (40, 8), ``7`` (80, 16), ``10`` (112, 16), ``14`` (192, 32), ``15`` (320, 32).
BLOCK_LAYERS = ("_blocks.0", "_blocks.2", "_blocks.4", "_blocks.7", "_blocks.10", "_blocks.14", "_blocks.15")


def photos(images: torch.Tensor, image_size: int = 64) -> torch.Tensor:
    """(N, C, H, W) images in [0, 1] (grey or RGB) as float32 RGB (N, 3, image_size, image_size) in [0, 1].

    Bilinear resizing with antialiasing; no normalisation (that is the model's job, see
    :class:`OnDeviceClassifier`).

    >>> tuple(photos(torch.rand(2, 1, 32, 32), 64).shape)
    (2, 3, 64, 64)
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected a (N, 1 or 3, H, W) tensor, got {getattr(images, 'shape', type(images))}")
    if not isinstance(image_size, int) or image_size < 32 or image_size % 32:
        raise ValueError(f"image_size must be a multiple of 32 (the backbone's total stride), got {image_size!r}")
    x = images.float()
    if x.min() < 0 or x.max() > 1:
        raise ValueError(f"pixels must be in [0, 1], got [{x.min():.3g}, {x.max():.3g}]")
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    if tuple(x.shape[-2:]) != (image_size, image_size):
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", antialias=True, align_corners=False)
    return x.clamp(0, 1).contiguous()


def _index(block: int | str) -> int:
    if isinstance(block, str):
        block = int(block.removeprefix("_blocks."))
    if isinstance(block, bool) or not isinstance(block, (int, np.integer)) or not 0 <= block <= 15:
        raise ValueError(f"block must be 0-15 or '_blocks.<i>', got {block!r}")
    return int(block)


def block_channels(backbone: nn.Module, block: int | str) -> int:
    """Channels of the output of ``_blocks.<block>`` of an EfficientNet."""
    return int(backbone._blocks[_index(block)]._block_args.output_filters)


def block_stride(backbone: nn.Module, block: int | str) -> int:
    """Total stride of the backbone from the input to the output of ``_blocks.<block>``."""
    stride = backbone._conv_stem.stride[0]
    for b in backbone._blocks[:_index(block) + 1]:
        stride *= b._depthwise_conv.stride[0]
    return int(stride)


class OnDeviceClassifier(nn.Module):
    """Preprocessing, EfficientNet up to ``block``, ``grid`` x ``grid`` average pool, linear head.

    Input: (N, 3, image_size, image_size) RGB in [0, 1], the camera's pixels divided by 255.
    Normalised inside with EfficientNet-Lite's mean = std = 0.5, so the file that ships carries its
    own preprocessing. The pooling is a fixed ``avg_pool2d`` whose kernel is the feature map's side
    divided by ``grid`` (it is what :func:`tlcourse.features.extract_layer_features` computes with
    ``pool=grid`` for this input size, and unlike ``adaptive_avg_pool2d`` it exports to ONNX).
    ``head``: an ``nn.Linear`` from ``channels * grid**2`` to the classes, e.g.
    ``probe_as_linear(probe)``. The backbone's modules are shared, not copied, and stay frozen.
    """

    def __init__(self, backbone: nn.Module, block: int | str, head: nn.Linear, image_size: int = 64,
                 grid: int = 2):
        super().__init__()
        self.block = _index(block)
        side = image_size // block_stride(backbone, self.block)
        if not isinstance(grid, int) or grid < 1 or side % grid:
            raise ValueError(f"grid={grid!r} must divide the {side}x{side} map of block {self.block} "
                             f"at image_size={image_size}")
        width = block_channels(backbone, self.block) * grid * grid
        if not isinstance(head, nn.Linear) or head.in_features != width:
            raise ValueError(f"head must be an nn.Linear with {width} inputs (block {self.block}: "
                             f"{block_channels(backbone, self.block)} channels x {grid}x{grid}), got {head}")
        self.stem, self.bn0, self.act = backbone._conv_stem, backbone._bn0, backbone._swish
        self.blocks = nn.ModuleList(backbone._blocks[:self.block + 1])
        self.kernel, self.image_size, self.grid = side // grid, image_size, grid
        self.head = head
        self.register_buffer("mean", torch.tensor(EFFICIENTNET_LITE0_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(EFFICIENTNET_LITE0_STD).view(1, 3, 1, 1))
        for p in self.parameters():
            p.requires_grad_(False)
        self.eval()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) in [0, 1] -> pooled block features (N, channels * grid**2)."""
        x = self.act(self.bn0(self.stem((x - self.mean) / self.std)))
        for block in self.blocks:
            x = block(x)
        return F.avg_pool2d(x, self.kernel).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@torch.no_grad()
def pooled_block_features(backbone: nn.Module, x: torch.Tensor, block: int | str, grid: int = 2,
                          batch_size: int = 128) -> np.ndarray:
    """What :meth:`OnDeviceClassifier.features` computes, for photos ``x`` (N, 3, S, S) in [0, 1].

    Runs only the blocks up to ``block`` (cheaper than the whole network). Returns float32
    (N, channels * grid**2) on the CPU.
    """
    width = block_channels(backbone, block) * grid * grid
    trunk = OnDeviceClassifier(backbone, block, nn.Linear(width, 1), image_size=x.shape[-1], grid=grid)
    return torch.cat([trunk.features(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]).numpy()


def fit_on_device_classifier(backbone: nn.Module, x_train: torch.Tensor, y_train, block: int | str,
                             grid: int = 2, C: float = 1.0) -> OnDeviceClassifier:
    """A linear probe on the pooled block features of ``x_train``, folded into the shipped model.

    The probe is :func:`tlcourse.features.linear_probe` (standardise, then L2 logistic
    regression with inverse strength ``C``); :func:`tlcourse.features.probe_as_linear` folds the
    standardisation into the layer. Deterministic: the same photos give the same model.
    """
    from .features import linear_probe, probe_as_linear

    y_train = np.asarray(y_train)
    z = pooled_block_features(backbone, x_train, block, grid)
    probe = linear_probe(z, y_train, z, y_train, C=C)
    return OnDeviceClassifier(backbone, block, probe_as_linear(probe), image_size=x_train.shape[-1], grid=grid)


#: The exercise's photos per class: test first (fixed), then the labelled training photos.
EXERCISE_SIZES = {"test": 30, "train": 20}


def exercise_photos(image_size: int = 64, seed: int = 0) -> dict[str, tuple[torch.Tensor, np.ndarray]]:
    """Exercise T17's photos: ``{"train": (x, y), "test": (x, y)}``, MNIST-M, class-balanced.

    ``x`` (N, 3, image_size, image_size) in [0, 1] from :func:`photos`; 20 training and 30 test
    photos per class (:data:`EXERCISE_SIZES`), disjoint, drawn by
    :func:`tlcourse.exercise_data.balanced_splits` with ``seed``. The notebook and its checks
    both call this, so they agree on the test photos.
    """
    from .data import load
    from .exercise_data import balanced_splits

    x, y = load("mnist_m").to_tensors()
    y = y.numpy()
    parts = balanced_splits(y, EXERCISE_SIZES, seed=seed)
    return {name: (photos(x[idx], image_size), y[idx]) for name, idx in parts.items()}
