"""Bridge (intermediate) domains for a large shift, and the MNIST -> MNIST-M splits of chapter G06.

*Intermediate fine-tuning* (domain bridging) trains a source model on a labelled domain that lies
"between" source and target before fine-tuning it on the few labelled target images:

    direct:   theta_S --(target labels, F steps)--------------------------------> theta_T
    bridged:  theta_S --(bridge labels, B steps)--> theta_B --(target labels, F steps)--> theta_T

It is a sequence of ordinary supervised stages (:func:`train_stages`); whether it helps depends on
where the bridge sits, so it must be measured against direct fine-tuning with the same budget
(intermediate-task studies find it can also hurt: Pruksachatkun et al., 2020, ACL). Gradual domain
adaptation (Kumar, Ma & Liang, 2020, ICML) studies a whole path of intermediate domains.

The bridge built here, :func:`colour_bridge`, is labelled *source* digits recoloured with the
MNIST-M recipe of Ganin & Lempitsky (2015): an MNIST-M image is ``|p - d|`` per channel, with
``d`` the grey digit and ``p`` a colour photo patch. Replacing the textured patch by a flat colour
``c`` (the mean colour of the frame of a real, *unlabelled* MNIST-M image, :func:`frame_colours`)
gives images with the target's colours and polarity but without its texture:

    bridge[n, k, i, j] = | c[n, k] - d[n, 0, i, j] |        d in [0, 1], c in [0, 1]^3

No target label is used to build it.

>>> d = torch.tensor([[[[0.0, 1.0]]]])            # one 1x2 grey "digit": background, stroke
>>> colour_bridge(d, torch.tensor([[0.2, 0.5, 0.9]]))[0, :, 0]
tensor([[0.2000, 0.8000],
        [0.5000, 0.5000],
        [0.9000, 0.1000]])
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .dann import dann_lr
from .train import model_device

__all__ = ["frame_colours", "colour_bridge", "train_stages", "Stage", "MnistmShift", "mnist_to_mnistm", "dann_snapshots",
           "few_labels"]


def frame_colours(images: torch.Tensor, border: int = 2) -> torch.Tensor:
    """Mean colour (N, C) of the outer ``border`` pixels of each image (N, C, H, W).

    On MNIST-M the frame is almost always background (the digit sits in the centre), so this is the
    background colour of each image, read without its label.

    >>> x = torch.zeros(1, 3, 4, 4); x[:, 0] = 1.0; x[:, :, 1:3, 1:3] = 0.5
    >>> frame_colours(x, border=1)
    tensor([[1., 0., 0.]])
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise ValueError(f"images must be a tensor (N, C, H, W), got {getattr(images, 'shape', type(images))}")
    h, w = images.shape[-2:]
    if not (1 <= border and 2 * border < min(h, w)):
        raise ValueError(f"border must be >= 1 and leave an inner region, got {border} for {h}x{w} images")
    mask = torch.ones(h, w, dtype=torch.bool, device=images.device)
    mask[border:h - border, border:w - border] = False
    return images[:, :, mask].mean(2)


def colour_bridge(digits: torch.Tensor, colours: torch.Tensor) -> torch.Tensor:
    """The MNIST-M recipe with a flat background: ``|c - d|`` per channel, (N, 1, H, W) x (N, C) -> (N, C, H, W).

    ``digits`` are grey images in [0, 1] (0 = background), ``colours`` one background colour per
    image in [0, 1]. A light background gives a dark digit, as on MNIST-M. Dtype and device follow
    ``digits``.
    """
    if not isinstance(digits, torch.Tensor) or digits.ndim != 4 or digits.shape[1] != 1:
        raise ValueError(f"digits must be grey images (N, 1, H, W), got {getattr(digits, 'shape', type(digits))}")
    if not isinstance(colours, torch.Tensor) or colours.ndim != 2 or len(colours) != len(digits):
        raise ValueError(f"colours must be (N, C) with N = {len(digits)}, got "
                         f"{getattr(colours, 'shape', type(colours))}")
    for name, t in (("digits", digits), ("colours", colours)):
        if t.numel() and not (0.0 <= float(t.min()) and float(t.max()) <= 1.0):
            raise ValueError(f"{name} must lie in [0, 1], got [{float(t.min()):.3g}, {float(t.max()):.3g}]")
    c = colours.to(digits)[:, :, None, None]
    return (c - digits).abs()


@dataclass(frozen=True)
class Stage:
    """One supervised stage: labelled images ``x`` (N, ...), labels ``y`` (N,), ``steps`` SGD steps."""

    name: str
    x: torch.Tensor
    y: torch.Tensor
    steps: int


def train_stages(g: nn.Module, c: nn.Module, stages: list[Stage], *, seed: int, batch_size: int = 32,
                 lr: float = 0.02) -> dict[str, int]:
    """Train ``nn.Sequential(g, c)`` on each stage in turn; returns ``{stage name: steps taken}``.

    Each stage is a fresh SGD (momentum 0.9, weight decay 5e-4, the recipe of
    :mod:`tlcourse.dann_demo`) whose rate is annealed at every step by
    :func:`tlcourse.dann.dann_lr` from ``lr``; batches of ``batch_size`` are drawn with replacement
    of passes (a new shuffle from ``seed`` whenever one ends), so a stage of 5 labelled images and
    one of 5,000 take the same number of steps. Modules are trained in place and left in eval mode.

    >>> g, c = nn.Sequential(nn.Flatten(), nn.Linear(4, 8)), nn.Linear(8, 2)
    >>> x, y = torch.randn(10, 1, 2, 2), torch.randint(0, 2, (10,))
    >>> train_stages(g, c, [Stage("a", x, y, 3), Stage("b", x, y, 2)], seed=0, batch_size=4)
    {'a': 3, 'b': 2}
    """
    model = nn.Sequential(g, c)
    device = model_device(model)
    taken: dict[str, int] = {}
    gen = torch.Generator().manual_seed(seed)
    fork = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=fork):
        torch.manual_seed(seed)
        for stage in stages:
            if not isinstance(stage.steps, int) or stage.steps < 0:
                raise ValueError(f"stage {stage.name!r}: steps must be an integer >= 0, got {stage.steps!r}")
            if len(stage.x) != len(stage.y) or len(stage.x) == 0:
                raise ValueError(f"stage {stage.name!r} needs as many labels as images, and at least one, "
                                 f"got {len(stage.x)} and {len(stage.y)}")
            opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
            model.train()
            order, pos = torch.randperm(len(stage.x), generator=gen), 0
            for step in range(stage.steps):
                for group in opt.param_groups:
                    group["lr"] = dann_lr(step / stage.steps, lr0=lr)
                if pos + batch_size > len(order):  # a new pass: BatchNorm never sees a batch of one
                    order, pos = torch.randperm(len(stage.x), generator=gen), 0
                idx = order[pos:pos + batch_size]
                pos += batch_size
                loss = F.cross_entropy(model(stage.x[idx].to(device)), stage.y[idx].to(device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            taken[stage.name] = stage.steps
    model.eval()
    return taken


def few_labels(labels: torch.Tensor, per_class: int, seed: int) -> torch.Tensor:
    """Indices of ``per_class`` examples of every class in ``labels``, drawn from ``seed``, sorted.

    >>> few_labels(torch.tensor([0, 1, 0, 1, 0, 1]), 2, seed=0).tolist()
    [1, 2, 4, 5]
    """
    rng = np.random.default_rng(seed)
    out = []
    for k in torch.unique(labels).tolist():
        where = torch.nonzero(labels == k).flatten().numpy()
        if len(where) < per_class:
            raise ValueError(f"class {k} has {len(where)} examples, fewer than per_class = {per_class}")
        out.append(rng.choice(where, per_class, replace=False))
    return torch.as_tensor(np.sort(np.concatenate(out)))


@dataclass(frozen=True)
class MnistmShift:
    """MNIST (source) -> MNIST-M (target) at ``size`` x ``size``, three channels, every image in one role.

    ``source_*``: labelled MNIST (grey repeated to RGB) for training and validation; ``source_digits``
    the same training digits as one grey channel (for :func:`colour_bridge`); ``target_x`` unlabelled
    MNIST-M for adaptation; ``few_x, few_y`` the few labelled target images fine-tuning may use;
    ``select_x, select_y`` labelled target images only the oracle model-selection rule reads;
    ``test_x, test_y`` MNIST-M images reported only (the same for every seed); ``usps_x, usps_y``
    labelled USPS digits (RGB), the bridge that does not lie between the domains.
    """

    source_x: torch.Tensor
    source_y: torch.Tensor
    source_digits: torch.Tensor
    source_val_x: torch.Tensor
    source_val_y: torch.Tensor
    target_x: torch.Tensor
    few_x: torch.Tensor
    few_y: torch.Tensor
    select_x: torch.Tensor
    select_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    usps_x: torch.Tensor
    usps_y: torch.Tensor


_MNISTM_TEST = (7001, 9001)  # fixed test images; item i of MNIST-M is MNIST test image i


def mnist_to_mnistm(seed: int = 0, n_source: int = 3000, n_source_val: int = 1000, n_target: int = 1900,
                    few_per_class: int = 10, n_select: int = 1000, n_usps: int = 3000,
                    size: int = 16) -> MnistmShift:
    """Disjoint MNIST -> MNIST-M splits drawn from ``seed``; see :class:`MnistmShift`.

    MNIST-M item i is MNIST test image i on a photo background, so the two index ranges are kept
    apart: the source draws from MNIST images 0-3,999 and 9,001-9,999, the target pool from MNIST-M
    images 4,000-7,000, the test set is MNIST-M 7,001-9,000. The few labelled target images are
    ``few_per_class`` per class, taken from the target pool after the ``n_target`` unlabelled ones.
    """
    from .data import load, resize, to_rgb

    xs, ys = load("mnist", "test").to_tensors()
    xm, ym = load("mnist_m", "test").to_tensors()
    xu, yu = load("usps", "train").to_tensors()
    if len(xm) != 9001:
        raise ValueError(f"expected the 9,001 MNIST-M test images, got {len(xm)}")
    rng = np.random.default_rng(seed)
    src_pool = np.concatenate([np.arange(0, 4000), np.arange(9001, 10000)])
    tgt_pool = np.arange(4000, _MNISTM_TEST[0])
    if n_source + n_source_val > len(src_pool):
        raise ValueError(f"n_source + n_source_val must be <= {len(src_pool)}")
    ps, pt = src_pool[rng.permutation(len(src_pool))], tgt_pool[rng.permutation(len(tgt_pool))]
    s_tr, s_val = ps[:n_source], ps[n_source:n_source + n_source_val]
    t_ad, rest = pt[:n_target], pt[n_target:]
    few = rest[few_labels(ym[rest], few_per_class, seed).numpy()]
    rest = np.setdiff1d(rest, few)
    if n_select > len(rest):
        raise ValueError(f"only {len(rest)} target images are left for n_select = {n_select}")
    sel = rest[rng.permutation(len(rest))[:n_select]]
    pu = rng.permutation(len(xu))[:n_usps]

    def small(x):
        return resize(x, size).clamp_(0.0, 1.0) if x.shape[-1] != size else x.clone()

    test = np.arange(*_MNISTM_TEST)
    digits = small(xs[s_tr])
    as_t = torch.as_tensor
    return MnistmShift(to_rgb(digits), ys[as_t(s_tr)], digits, to_rgb(small(xs[s_val])), ys[as_t(s_val)],
                       small(xm[t_ad]), small(xm[few]), ym[as_t(few)], small(xm[sel]), ym[as_t(sel)],
                       small(xm[test]), ym[as_t(test)], to_rgb(small(xu[pu])), yu[as_t(pu)])


def dann_snapshots(g: nn.Module, c: nn.Module, d: nn.Module, source_loader, target_loader, *, steps: int,
                   every: int, lr: float = 0.02, lambda_max: float = 1.0, seed: int = 0) -> list[tuple[int, nn.Module]]:
    """One DANN run of ``steps`` steps (:func:`tlcourse.dann.train_dann`), with a copy of the model every ``every`` steps.

    The run is split into ``steps // every`` calls of ``train_dann`` that share the optimiser (SGD,
    momentum 0.9, weight decay 5e-4) and continue one global schedule, so the snapshots are those of
    a single run: ``lambda_p = lambda_max * dann_lambda(p)`` and ``lr_p = dann_lr(p, lr0=lr)`` with
    ``p = global step / steps``. Returns ``[(step, nn.Sequential(g, c) copy in eval mode), ...]``;
    the last one has taken exactly ``steps`` steps. These are the candidates (epoch and lambda) a
    model-selection rule chooses among (chapter G06).
    """
    import copy

    from .dann import dann_lambda, train_dann

    if every < 1 or steps % every:
        raise ValueError(f"every must divide steps, got steps={steps}, every={every}")
    opt = torch.optim.SGD([*g.parameters(), *c.parameters(), *d.parameters()], lr=lr, momentum=0.9,
                          weight_decay=5e-4)
    out = []
    for k in range(steps // every):
        start = k * every

        def global_p(q, start=start):
            return (start + q * every) / steps

        for group in opt.param_groups:  # train_dann scales the rate it finds by lr_schedule(q) / lr_schedule(0)
            group["lr"] = dann_lr(global_p(0.0), lr0=lr)
        train_dann(g, c, d, source_loader, target_loader, steps=every, optimizer=opt,
                   lambda_schedule=lambda q: lambda_max * dann_lambda(global_p(q)),
                   lr_schedule=lambda q: dann_lr(global_p(q), lr0=lr), log_every=every, progress=False,
                   seed=seed + k)
        out.append((start + every, copy.deepcopy(nn.Sequential(g, c)).eval()))
    return out
