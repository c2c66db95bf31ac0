"""Small in-house architectures: a digit CNN and the CIFAR-10 ResNets of He et al. (2016).

Both expose the same three things that transfer-learning code needs:

- ``block_names``: the names of the top-level blocks in forward order, so fine-tuning code can
  freeze "everything up to ``block2``" with ``model.get_submodule(name)``;
- ``features(x)``: the penultimate representation (what a linear probe or a new head sees);
- ``head``: the last linear layer, the part that is replaced for a new label set (for
  :class:`CifarResNet` it is called ``linear``, the name the published checkpoints use; ``head`` is
  an alias of it).

The pretrained versions are built in :mod:`tlcourse.zoo`; this module only defines the layers.

>>> tuple(DigitCNN()(torch.zeros(2, 1, 28, 28)).shape)
(2, 10)
>>> tuple(CifarResNet(depth=20).features(torch.zeros(2, 3, 32, 32)).shape)
(2, 64)
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["DigitCNN", "CifarResNet", "BasicBlockA"]


class DigitCNN(nn.Module):
    """A LeNet-like CNN with BatchNorm for 28x28 digits (LeCun et al., 1998; Ioffe & Szegedy, 2015).

    ==========  ==============================================  ======================
    block       layers                                          output shape
    ==========  ==============================================  ======================
    ``block1``  conv 5x5 (in -> 16), BN, ReLU, max-pool 2       (N, 16, 14, 14)
    ``block2``  conv 5x5 (16 -> 32), BN, ReLU, max-pool 2       (N, 32, 7, 7)
    ``block3``  flatten, linear (1568 -> 128), BN, ReLU         (N, 128) = ``features``
    ``head``    linear (128 -> num_classes)                     (N, num_classes) logits
    ==========  ==============================================  ======================

    Input: float images (N, in_channels, 28, 28) in [0, 1], white digit on black as in MNIST; no
    mean/std normalisation is needed because every block starts with BatchNorm-ed activations.
    Other sizes are rejected rather than silently resized (use :func:`tlcourse.data.resize`).
    215,546 parameters with the defaults, about 6 MFLOPs per image, so a few epochs on
    8,000 digits take seconds on a laptop CPU.

    >>> net = DigitCNN()
    >>> tuple(net(torch.zeros(2, 1, 28, 28)).shape), tuple(net.features(torch.zeros(2, 1, 28, 28)).shape)
    ((2, 10), (2, 128))
    >>> net.block_names
    ('block1', 'block2', 'block3', 'head')
    """

    block_names = ("block1", "block2", "block3", "head")
    input_size = (28, 28)
    feature_dim = 128

    def __init__(self, num_classes: int = 10, in_channels: int = 1):
        super().__init__()
        if num_classes < 1 or in_channels < 1:
            raise ValueError(f"num_classes and in_channels must be >= 1, got {num_classes} and "
                             f"{in_channels}")
        self.num_classes, self.in_channels = num_classes, in_channels
        self.block1 = nn.Sequential(
            nn.Conv2d(in_channels, 16, 5, padding=2, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
            nn.MaxPool2d(2))
        self.block2 = nn.Sequential(
            nn.Conv2d(16, 32, 5, padding=2, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
            nn.MaxPool2d(2))
        self.block3 = nn.Sequential(
            nn.Flatten(), nn.Linear(32 * 7 * 7, self.feature_dim, bias=False),
            nn.BatchNorm1d(self.feature_dim), nn.ReLU())
        self.head = nn.Linear(self.feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features (N, 128) of images ``x`` (N, in_channels, 28, 28)."""
        if x.ndim != 4 or tuple(x.shape[1:]) != (self.in_channels, *self.input_size):
            raise ValueError(f"DigitCNN expects images of shape (N, {self.in_channels}, 28, 28), "
                             f"got {tuple(x.shape)}")
        return self.block3(self.block2(self.block1(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, num_classes)."""
        return self.head(self.features(x))


class BasicBlockA(nn.Module):
    """Two 3x3 conv-BN layers with an identity shortcut, "option A" of He et al. (2016).

    out = relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)). When the block halves the
    resolution and doubles the width, option A keeps the shortcut parameter-free: it subsamples
    ``x[:, :, ::2, ::2]`` and pads the new channels with zeros (planes // 4 on each side).
    Shapes: (N, in_planes, H, W) -> (N, planes, H / stride, W / stride).
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = stride != 1 or in_planes != planes
        if self.downsample and (stride != 2 or planes != 2 * in_planes):
            raise ValueError("option-A shortcuts only halve the resolution and double the width, "
                             f"got {in_planes} -> {planes} channels with stride {stride}")
        self.pad = (planes - in_planes) // 2

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if not self.downsample:
            return x
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """The CIFAR-10 ResNet of He et al. (2016), "Deep Residual Learning", section 4.2.

    depth = 6n + 2 with n blocks per stage (ResNet-20/32/44/56: n = 3/5/7/9), option-A shortcuts,
    0.27M/0.46M/0.66M/0.85M parameters. Layer names follow akamaster/pytorch_resnet_cifar10 so its
    checkpoints load with ``strict=True``:

    ==========  ==================================================  ==================
    name        layers                                              output shape
    ==========  ==================================================  ==================
    ``conv1``   conv 3x3 (3 -> 16)                                  (N, 16, 32, 32)
    ``bn1``     BatchNorm, then ReLU                                (N, 16, 32, 32)
    ``layer1``  n basic blocks, 16 channels                         (N, 16, 32, 32)
    ``layer2``  n basic blocks, 32 channels, first with stride 2    (N, 32, 16, 16)
    ``layer3``  n basic blocks, 64 channels, first with stride 2    (N, 64, 8, 8)
    (pool)      global average pool                                 (N, 64) = ``features``
    ``linear``  linear (64 -> num_classes), alias ``head``          (N, num_classes)
    ==========  ==================================================  ==================

    Input: (N, 3, 32, 32) RGB in [0, 1] normalised with :attr:`MEAN` and :attr:`STD` (see
    :func:`tlcourse.zoo.cifar_resnet` for why these are the ImageNet constants).

    >>> net = CifarResNet(depth=20)
    >>> sum(p.numel() for p in net.parameters()), tuple(net(torch.zeros(2, 3, 32, 32)).shape)
    (269722, (2, 10))
    """

    block_names = ("conv1", "bn1", "layer1", "layer2", "layer3", "linear")
    input_size = (32, 32)
    feature_dim = 64
    #: Normalisation the akamaster checkpoints were trained with (their trainer.py uses the
    #: ImageNet statistics, not the CIFAR-10 ones (0.4914, 0.4822, 0.4465) / (0.2470, 0.2435, 0.2616)).
    MEAN = (0.485, 0.456, 0.406)
    STD = (0.229, 0.224, 0.225)

    def __init__(self, depth: int = 20, num_classes: int = 10):
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"depth must be 6n + 2 with n >= 1 (20, 32, 44, 56, ...), got {depth}")
        n = (depth - 2) // 6
        self.depth, self.num_classes = depth, num_classes
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = self._stage(16, 16, n, stride=1)
        self.layer2 = self._stage(16, 32, n, stride=2)
        self.layer3 = self._stage(32, 64, n, stride=2)
        self.linear = nn.Linear(64, num_classes)
        for m in self.modules():  # He et al. initialisation, as in the paper
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    @staticmethod
    def _stage(in_planes: int, planes: int, n: int, stride: int) -> nn.Sequential:
        return nn.Sequential(BasicBlockA(in_planes, planes, stride),
                             *[BasicBlockA(planes, planes) for _ in range(n - 1)])

    @property
    def head(self) -> nn.Linear:
        """The classifier, the same module as ``linear``."""
        return self.linear

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features (N, 64): global average of ``layer3`` for normalised ``x`` (N, 3, H, W)."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"CifarResNet expects images of shape (N, 3, 32, 32), got {tuple(x.shape)}")
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return out.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, num_classes)."""
        return self.linear(self.features(x))
