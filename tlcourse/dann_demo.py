"""Small, fast domain-adaptation experiments on MNIST -> USPS digits (chapter S02).

A CPU-sized version of ``benchmarks/dann_digits.py``: images at 16x16 (USPS's own size, MNIST
downsampled), a few thousand images per domain and a small BatchNorm CNN, so that one method trains
in a few seconds. Four arms share the network, the optimiser (SGD, momentum 0.9, weight decay 5e-4,
Ganin et al.'s annealed rate :func:`tlcourse.dann.dann_lr`), the number of steps and the source
batches:

- *source only*: :func:`tlcourse.train.fit` on the labelled source images;
- *target BN* (AdaBN, Li et al., 2016/2018): the source-only network with its BatchNorm statistics
  re-estimated on the unlabelled target images (:func:`adabn`), no weight changes;
- *DANN* (Ganin et al., 2016) and *CDAN* (Long et al., 2018): :func:`tlcourse.dann.train_dann`.

Splits (:func:`digit_shift`) keep every image in one role only: labelled source train and source
validation (MNIST), unlabelled target for adaptation, a labelled target *selection* split that only
the "oracle" model-selection rule may read, and the USPS test set, reported only.

>>> shift = digit_shift(seed=0, n_source=200, n_target=200, n_source_val=100, n_select=100)
>>> tuple(shift.source_x.shape), tuple(shift.test_x.shape)
((200, 1, 16, 16), (2007, 1, 16, 16))
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .adapt import adapt_batchnorm
from .dann import DomainDiscriminator, StepHistory, dann_lr, train_dann
from .divergence import proxy_a_distance
from .train import fit, make_loader, predict

__all__ = ["DigitShift", "digit_shift", "small_cnn", "Arm", "train_arm", "adabn", "accuracy",
           "features", "prediction_entropy", "selection_scores", "METHODS", "PAIRS", "FEATURE_DIM"]

METHODS = ("source_only", "dann", "cdan")
FEATURE_DIM = 64


@dataclass(frozen=True)
class DigitShift:
    """Images (N, 1, 16, 16) in [0, 1] and int64 labels of one MNIST -> USPS problem.

    ``target_x`` is unlabelled (adaptation); ``select_x, select_y`` are labelled target images that
    only an oracle that peeks at target labels may use; ``test_x, test_y`` are reported only.
    """

    source_x: torch.Tensor
    source_y: torch.Tensor
    source_val_x: torch.Tensor
    source_val_y: torch.Tensor
    target_x: torch.Tensor
    select_x: torch.Tensor
    select_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor


PAIRS = ("mnist_usps", "usps_mnist")


def digit_shift(seed: int = 0, pair: str = "mnist_usps", n_source: int = 3000, n_target: int = 3000,
                n_source_val: int = 1000, n_select: int = 1000, size: int = 16) -> DigitShift:
    """Disjoint source/target splits of one digit pair drawn from ``seed``, images resized to ``size``.

    ``"mnist_usps"``: source = the 10,000 MNIST test images (a permutation gives ``n_source`` to
    train, the next ``n_source_val`` to validate); target = the 7,291 USPS training images
    (``n_target`` unlabelled for adaptation, the next ``n_select`` labelled for the oracle); test =
    the 2,007 USPS test images. ``"usps_mnist"``: source = USPS train; target pool = MNIST test
    images 0-7,999; test = MNIST test images 8,000-9,999 (fixed, never drawn into another split).
    """
    from .data import load, resize

    if pair not in PAIRS:
        raise ValueError(f"unknown pair {pair!r}; choose one of {PAIRS}")
    mnist, usps = load("mnist", "test").to_tensors(), load("usps", "train").to_tensors()
    if pair == "mnist_usps":
        (xs, ys), (xt, yt), (xe, ye) = mnist, usps, load("usps", "test").to_tensors()
    else:
        xm, ym = mnist
        (xs, ys), (xt, yt), (xe, ye) = usps, (xm[:8000], ym[:8000]), (xm[8000:], ym[8000:])
    if n_source + n_source_val > len(xs) or n_target + n_select > len(xt):
        raise ValueError(f"too many images: n_source + n_source_val <= {len(xs)} and n_target + n_select "
                         f"<= {len(xt)} for {pair}, got {n_source + n_source_val} and {n_target + n_select}")
    xs, xt, xe = (resize(x, size).clamp_(0.0, 1.0) if x.shape[-1] != size else x for x in (xs, xt, xe))
    rng = np.random.default_rng(seed)
    ps, pt = torch.as_tensor(rng.permutation(len(xs))), torch.as_tensor(rng.permutation(len(xt)))
    s_tr, s_val = ps[:n_source], ps[n_source:n_source + n_source_val]
    t_ad, t_sel = pt[:n_target], pt[n_target:n_target + n_select]
    return DigitShift(xs[s_tr], ys[s_tr], xs[s_val], ys[s_val], xt[t_ad], xt[t_sel], yt[t_sel], xe, ye)


def small_cnn(seed: int, in_channels: int = 1, width: int = 16) -> tuple[nn.Module, nn.Module]:
    """(feature extractor G, linear classifier C) for 16x16 digits, weights drawn from ``seed``.

    G: conv 3x3 (-> width/2), BN, ReLU, pool; conv 3x3 (-> width), BN, ReLU, pool; linear
    (width * 16 -> 64), BN, ReLU: (N, C, 16, 16) -> (N, 64). C: linear 64 -> 10. BatchNorm is there
    on purpose: it is what makes the target-BN control (:func:`adabn`) matter.
    """
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    g = nn.Sequential(
        nn.Conv2d(in_channels, width // 2, 3, padding=1, bias=False), nn.BatchNorm2d(width // 2), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(width // 2, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(width * 16, FEATURE_DIM, bias=False), nn.BatchNorm1d(FEATURE_DIM), nn.ReLU())
    c = nn.Linear(FEATURE_DIM, 10)
    torch.random.set_rng_state(gen_state)
    return g, c


class _OneBatchPerEpoch:
    """Wrap a loader so that each iteration yields the next single batch of an endless cycle over it
    (a new pass, reshuffled, whenever one ends), as :func:`tlcourse.dann.train_dann` draws them."""

    def __init__(self, loader):
        self.loader, self._it = loader, iter(())

    def __len__(self) -> int:
        return 1

    def __iter__(self):
        try:
            yield next(self._it)
        except StopIteration:
            self._it = iter(self.loader)
            yield next(self._it)


@dataclass
class Arm:
    """A trained arm: feature extractor ``g``, classifier ``c``, the optimiser ``steps`` it took, the
    source images it saw per step, and (DANN/CDAN) the :class:`~tlcourse.dann.StepHistory`."""

    method: str
    g: nn.Module
    c: nn.Module
    steps: int
    source_batch: int
    history: StepHistory | None = None

    @property
    def model(self) -> nn.Module:
        return nn.Sequential(self.g, self.c)


def train_arm(shift: DigitShift, method: str, *, seed: int, steps: int = 400, batch_size: int = 48,
              lr: float = 0.02, disc_hidden: int = 64, log_every: int = 25) -> Arm:
    """Train one of :data:`METHODS` on ``shift`` with the shared recipe; see the module docstring.

    Every arm starts from ``small_cnn(seed)``, draws the same sequence of source batches (loader
    seeded by ``seed``, cycled) and takes exactly ``steps`` SGD steps of ``batch_size`` source images
    (DANN/CDAN add as many target images), with the rate annealed by ``dann_lr`` at every step.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")
    g, c = small_cnn(seed)
    source_loader = make_loader(shift.source_x, shift.source_y, batch_size, shuffle=True, seed=seed)
    if method == "source_only":
        model = nn.Sequential(g, c)
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
        # fit() steps its scheduler once per "epoch": make every epoch one batch, so the rate is annealed
        # at every step exactly as train_dann does, over the same sequence of source batches.
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: dann_lr(min(k / steps, 1.0)) / dann_lr(0.0))
        fit(model, _OneBatchPerEpoch(source_loader), epochs=steps, optimizer=opt, scheduler=sched, progress=False)
        return Arm(method, g.eval(), c.eval(), steps, batch_size)
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    d = DomainDiscriminator(FEATURE_DIM * (10 if method == "cdan" else 1), hidden=disc_hidden, dropout=0.0)
    torch.random.set_rng_state(gen_state)
    target_loader = make_loader(shift.target_x, torch.zeros(len(shift.target_x), dtype=torch.long),
                                batch_size, shuffle=True, seed=seed + 1)
    opt = torch.optim.SGD([*g.parameters(), *c.parameters(), *d.parameters()], lr=lr, momentum=0.9,
                          weight_decay=5e-4)
    history = train_dann(g, c, d, source_loader, target_loader, steps=steps, optimizer=opt,
                         lr_schedule=lambda p: dann_lr(p, lr0=lr), conditioning="cdan" if method == "cdan" else "none",
                         log_every=log_every, progress=False, seed=seed)
    return Arm(method, g.eval(), c.eval(), history.rows[-1]["step"], batch_size, history)


@torch.no_grad()
def adabn(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> nn.Module:
    """A copy of ``model`` whose BatchNorm running mean/variance are re-estimated on images ``x``.

    AdaBN (Li et al., 2016/2018): :func:`tlcourse.adapt.adapt_batchnorm` with S02's batch size
    (the cumulative average over the batches of ``x``: choose ``batch_size`` to divide ``len(x)``
    for an exact per-image mean). The input model is not modified; returned in eval mode.
    """
    return adapt_batchnorm(model, x, batch_size)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy of ``model`` (eval mode) on ``x`` (N, ...) with labels ``y`` (N,)."""
    return float((predict(model, x).argmax(1) == y).float().mean())


def features(g: nn.Module, x: torch.Tensor) -> np.ndarray:
    """Features (N, D) of ``g`` in eval mode, as float64 NumPy (for PCA or a domain classifier)."""
    return predict(g, x).double().numpy()


def prediction_entropy(model: nn.Module, x: torch.Tensor) -> float:
    """Mean entropy (nats) of the predicted class distribution on ``x``: low = confident.

    An unsupervised model-selection signal (used e.g. by Morerio et al., 2018): it needs no labels,
    but a model can be confidently wrong, so it is a heuristic, not a guarantee.
    """
    logp = F.log_softmax(predict(model, x).double(), dim=1)
    return float(-(logp.exp() * logp).sum(1).mean())


def selection_scores(model: nn.Module, shift: DigitShift, seed: int = 0, n_pad: int = 1000) -> dict:
    """What each model-selection rule sees about one trained ``model`` (an ``nn.Sequential(g, c)``).

    ``source_val_acc`` (labelled source validation), ``target_entropy`` (unlabelled target),
    ``pad`` (proxy A-distance between source-validation and target features of ``model[0]``,
    a domain classifier on held-out data) are all legal without target labels; ``oracle_acc``
    reads the labelled target selection split (peeking); ``test_acc`` is reported only.
    """
    g = model[0]
    n = min(n_pad, len(shift.source_val_x), len(shift.target_x))
    pad = proxy_a_distance(features(g, shift.source_val_x[:n]), features(g, shift.target_x[:n]), seed=seed)
    return {"source_val_acc": accuracy(model, shift.source_val_x, shift.source_val_y),
            "target_entropy": prediction_entropy(model, shift.target_x),
            "pad": pad.distance,
            "oracle_acc": accuracy(model, shift.select_x, shift.select_y),
            "test_acc": accuracy(model, shift.test_x, shift.test_y)}
