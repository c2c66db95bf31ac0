"""Siamese networks and similarity learning for one-shot recognition.

A siamese network (Bromley et al., 1993; Koch, Zemel & Salakhutdinov, 2015) passes two inputs
through the *same* embedding ``f`` (one set of weights, two branches) and compares the outputs
by a distance ``d(x1, x2) = ||f(x1) - f(x2)||_2``. It is trained on pairs labelled *same class*
or *different class*, on source classes; what transfers to new classes is the distance, not any
class-specific weight. Two losses are written here, for embeddings of shape (P, D):

- :func:`contrastive_loss` (Hadsell, Chopra & LeCun, 2006), on pairs with ``same`` in {0, 1}::

      L = mean_p [ same_p * d_p^2 / 2 + (1 - same_p) * max(0, margin - d_p)^2 / 2 ]

  same-class pairs are pulled together; different-class pairs are pushed apart only while they
  are closer than ``margin`` (Hadsell et al. write Y = 0 for a *similar* pair; here ``same = 1``
  means similar).
- :func:`triplet_loss` (Schroff, Kalenichenko & Philbin, 2015, FaceNet), on (anchor, positive,
  negative) triplets with squared distances::

      L = mean_t max(0, ||f(a) - f(p)||^2 - ||f(a) - f(n)||^2 + margin)

  a triplet stops contributing once the negative is ``margin`` farther than the positive.

Two uses at test time, which must not be confused:

- **verification** (is this pair the same class?): accept when ``d <= threshold``. The threshold
  is chosen on *held-out* classes (validation), e.g. at the equal error rate of the ROC curve
  (:func:`verification_roc`), then applied unchanged to the test pairs (:func:`verification_rates`);
- **N-way one-shot classification**: a query gets the class of its *nearest* support example
  (:func:`nearest_support_accuracy`); no threshold is involved (one would only serve to reject a
  query that matches none of the N classes, the open-set case).

Sampling is explicit (:func:`sample_pairs`, :func:`sample_triplets`, each with a ``seed`` and a
``classes=`` pool so test classes never reach training); Omniglot loading, the alphabet split
and the episode sampler come from :mod:`tlcourse.meta.episodes`, the 4-block embedding from
:func:`tlcourse.meta.protonets.conv4_embedding`.

>>> z1, z2 = torch.tensor([[0.0, 0.0], [0.0, 0.0]]), torch.tensor([[3.0, 4.0], [0.3, 0.4]])
>>> pair_distances(z1, z2)
tensor([5.0000, 0.5000])
>>> contrastive_loss(z1, z2, torch.tensor([1, 0]), margin=1.0)   # (25/2 + 0.5**2/2) / 2
tensor(6.3125)
"""
from __future__ import annotations

import math
import numbers
import time
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..dann import StepHistory
from ..train import model_device
from .episodes import EpisodeAccuracy, _check_count, _check_labels, _generator, evaluate_episodes

__all__ = ["Pairs", "Triplets", "VerificationROC", "VerificationRates", "pair_distances",
           "contrastive_loss", "triplet_loss", "sample_pairs", "sample_triplets", "train_siamese",
           "embed_images", "verification_roc", "verification_rates", "nearest_support_accuracy"]


class Pairs(NamedTuple):
    """Row indices of pairs, ``first`` (P,) and ``second`` (P,), and ``same`` (P,) in {0, 1}."""

    first: torch.Tensor
    second: torch.Tensor
    same: torch.Tensor


class Triplets(NamedTuple):
    """Row indices (T,) of anchors, positives (the anchor's class) and negatives (another class)."""

    anchor: torch.Tensor
    positive: torch.Tensor
    negative: torch.Tensor


def _check_margin(margin) -> float:
    if isinstance(margin, bool) or not isinstance(margin, numbers.Real) or not margin > 0 \
            or not math.isfinite(margin):
        raise ValueError(f"margin must be a positive finite number, got {margin!r}")
    return float(margin)


def _check_pair(a: torch.Tensor, b: torch.Tensor, names=("z1", "z2")) -> None:
    for name, t in zip(names, (a, b)):
        if not isinstance(t, torch.Tensor) or t.ndim != 2:
            shape = tuple(getattr(t, "shape", ())) or type(t).__name__
            raise ValueError(f"{name} must be embeddings of shape (P, D), got {shape}")
    if a.shape != b.shape:
        raise ValueError(f"{names[0]} and {names[1]} must have the same shape (P, D), got "
                         f"{tuple(a.shape)} and {tuple(b.shape)}")


def pair_distances(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """Euclidean distance of each pair of rows: (P, D), (P, D) -> (P,).

    >>> pair_distances(torch.tensor([[1.0, 1.0]]), torch.tensor([[1.0, 1.0]]))
    tensor([0.])
    """
    _check_pair(z1, z2)
    # sqrt of a sum of squares plus a tiny epsilon: the gradient of sqrt is infinite at 0
    return ((z1 - z2).pow(2).sum(-1) + 1e-12).sqrt() * (z1 != z2).any(-1)


def contrastive_loss(z1: torch.Tensor, z2: torch.Tensor, same, margin: float = 1.0) -> torch.Tensor:
    """Contrastive loss of Hadsell et al. (2006), averaged over the P pairs.

    ``L = mean[ same * d**2 / 2 + (1 - same) * relu(margin - d)**2 / 2 ]`` with
    ``d = ||z1 - z2||``. Shapes: z1, z2 (P, D); same (P,) with 1 for a same-class pair and 0 for a
    different-class one (bool, int or float). A different-class pair at ``d >= margin`` costs 0.

    >>> z = torch.zeros(1, 2)
    >>> far = torch.tensor([[2.0, 0.0]])
    >>> contrastive_loss(z, far, [0], margin=1.0), contrastive_loss(z, far, [0], margin=3.0)
    (tensor(0.), tensor(0.5000))
    """
    margin = _check_margin(margin)
    _check_pair(z1, z2)
    y = torch.as_tensor(same, device=z1.device)
    if y.shape != z1.shape[:1]:
        raise ValueError(f"same must hold one 0/1 label per pair, shape ({z1.shape[0]},), got {tuple(y.shape)}")
    y = y.to(z1.dtype)
    if ((y != 0) & (y != 1)).any():
        raise ValueError("same must be 0 (different classes) or 1 (same class) for every pair")
    d = pair_distances(z1, z2)
    return (y * d.pow(2) + (1 - y) * F.relu(margin - d).pow(2)).mean() / 2


def triplet_loss(anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor,
                 margin: float = 0.2) -> torch.Tensor:
    """Triplet loss of Schroff et al. (2015, FaceNet), averaged over the T triplets.

    ``L = mean relu(||a - p||**2 - ||a - n||**2 + margin)``, squared Euclidean distances, shapes
    (T, D) each. FaceNet L2-normalises the embeddings and uses ``margin = 0.2``.

    >>> a, p, n = torch.zeros(1, 1), torch.ones(1, 1), torch.full((1, 1), 2.0)
    >>> triplet_loss(a, p, n, margin=0.2), triplet_loss(a, n, p, margin=0.2)   # 1 - 4 + .2; 4 - 1 + .2
    (tensor(0.), tensor(3.2000))
    """
    margin = _check_margin(margin)
    _check_pair(anchor, positive, ("anchor", "positive"))
    _check_pair(anchor, negative, ("anchor", "negative"))
    return F.relu((anchor - positive).pow(2).sum(-1) - (anchor - negative).pow(2).sum(-1) + margin).mean()


def _class_rows(labels, classes) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The pool of classes (sorted) and the row indices of each; each class needs 2 rows."""
    labels = _check_labels(labels)
    present = torch.unique(labels)
    pool = present if classes is None else torch.unique(torch.as_tensor(classes).long().cpu())
    missing = pool[~torch.isin(pool, present)]
    if len(missing):
        raise ValueError(f"classes {missing[:5].tolist()} have no examples in labels; pass only class "
                         "ids that occur in labels")
    if len(pool) < 2:
        raise ValueError(f"need at least 2 classes to form different-class pairs, got {len(pool)}")
    rows = [torch.nonzero(labels == c).squeeze(1) for c in pool.tolist()]
    small = [c for c, r in zip(pool.tolist(), rows) if len(r) < 2]
    if small:
        raise ValueError(f"class {small[0]} has a single example: a same-class pair needs two")
    return pool, rows


def _draw(pool_rows: list[torch.Tensor], n: int, generator: torch.Generator):
    """n (anchor, positive, negative) row triples: two distinct rows of one class, one of another."""
    k = len(pool_rows)
    cls = torch.randint(k, (n,), generator=generator)
    other = (cls + torch.randint(1, k, (n,), generator=generator)) % k      # any class but cls
    anchor, positive, negative = [], [], []
    for c, o in zip(cls.tolist(), other.tolist()):
        rows = pool_rows[c]
        i, j = torch.randperm(len(rows), generator=generator)[:2].tolist()
        anchor.append(rows[i])
        positive.append(rows[j])
        negative.append(pool_rows[o][torch.randint(len(pool_rows[o]), (1,), generator=generator)].squeeze())
    return torch.stack(anchor), torch.stack(positive), torch.stack(negative)


def sample_pairs(labels, n_pairs: int, *, classes: Sequence[int] | torch.Tensor | None = None,
                 seed: int | torch.Generator = 0) -> Pairs:
    """Draw ``n_pairs`` pairs among the rows whose label is in ``classes``: half same, half different.

    The first ``n_pairs // 2`` pairs are same-class (two *distinct* drawings of one class drawn
    uniformly), the rest different-class (the second class drawn uniformly among the others), so
    the classes are balanced as in Koch et al. (2015). Returns CPU int64 row indices (P,) and
    ``same`` (P,) in {0, 1}.

    >>> pairs = sample_pairs(torch.tensor([0, 0, 1, 1, 2, 2]), 4, seed=0)
    >>> pairs.same.tolist()
    [1, 1, 0, 0]
    >>> labels = torch.tensor([0, 0, 1, 1, 2, 2])
    >>> bool((labels[pairs.first] == labels[pairs.second]).eq(pairs.same.bool()).all())
    True
    """
    n_pairs = _check_count("n_pairs", n_pairs, minimum=2)
    _, rows = _class_rows(labels, classes)
    generator = _generator(seed)
    n_same = n_pairs // 2
    a, p, n = _draw(rows, n_pairs, generator)
    second = torch.cat([p[:n_same], n[n_same:]])
    same = torch.cat([torch.ones(n_same, dtype=torch.long), torch.zeros(n_pairs - n_same, dtype=torch.long)])
    return Pairs(a, second, same)


def sample_triplets(labels, n_triplets: int, *, classes: Sequence[int] | torch.Tensor | None = None,
                    seed: int | torch.Generator = 0) -> Triplets:
    """Draw ``n_triplets`` random (anchor, positive, negative) triplets among ``classes``.

    Anchor and positive are two distinct drawings of a class drawn uniformly, the negative a
    drawing of another class (no hard-negative mining: FaceNet mines "semi-hard" negatives within
    each batch, which this sampler leaves to the caller).

    >>> labels = torch.tensor([0, 0, 1, 1, 2, 2])
    >>> t = sample_triplets(labels, 5, seed=1)
    >>> bool((labels[t.anchor] == labels[t.positive]).all() and (labels[t.anchor] != labels[t.negative]).all())
    True
    """
    n_triplets = _check_count("n_triplets", n_triplets)
    _, rows = _class_rows(labels, classes)
    return Triplets(*_draw(rows, n_triplets, _generator(seed)))


def train_siamese(embed: nn.Module, images: torch.Tensor, labels, *, classes, steps: int,
                  pairs_per_step: int, loss: str = "contrastive", margin: float = 1.0,
                  lr: float = 1e-3, seed: int = 0, log_every: int = 50) -> StepHistory:
    """Train ``embed`` as a siamese network with Adam, on pairs (or triplets) drawn from ``classes``.

    Each of the ``steps`` steps draws ``pairs_per_step`` balanced pairs (:func:`sample_pairs`) and
    minimises :func:`contrastive_loss`; with ``loss="triplet"`` it draws ``pairs_per_step``
    triplets (:func:`sample_triplets`) and minimises :func:`triplet_loss` instead. Both branches
    are the same module: the images of a step go through ``embed`` in one batch, so one set of
    weights (and one BatchNorm batch) serves both sides. ``classes`` is the training pool; pass the
    background classes only. Images per step: ``2 * pairs_per_step`` (pairs) or
    ``3 * pairs_per_step`` (triplets). ``seed`` fixes the pairs; the global random state is
    restored. Initialise ``embed`` under your own seed. Left in training mode.

    Returns a :class:`~tlcourse.dann.StepHistory`: ``step``, ``loss`` (mean since the previous
    row), ``images`` (images per step) and ``seconds``.

    >>> _ = torch.manual_seed(0)
    >>> x, y = torch.randn(40, 6), torch.arange(8).repeat(5)
    >>> h = train_siamese(nn.Linear(6, 3), x, y, classes=range(6), steps=4, pairs_per_step=8, log_every=2)
    >>> h["step"], h["images"]
    ([2, 4], [16, 16])
    """
    steps, log_every = _check_count("steps", steps), _check_count("log_every", log_every)
    pairs_per_step = _check_count("pairs_per_step", pairs_per_step, minimum=2)
    if loss not in ("contrastive", "triplet"):
        raise ValueError(f"loss must be 'contrastive' or 'triplet', got {loss!r}")
    margin = _check_margin(margin)
    if not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be a positive finite number, got {lr!r}")
    labels = _check_labels(labels)
    if not isinstance(images, torch.Tensor) or len(images) != len(labels):
        raise ValueError(f"images (M, ...) and labels (M,) must have the same length, got "
                         f"{tuple(getattr(images, 'shape', ()))} and {tuple(labels.shape)}")
    _, rows = _class_rows(labels, classes)
    device = model_device(embed)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(embed.parameters(), lr=lr)
    history = StepHistory()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        embed.train()
        total, counted, start = 0.0, 0, time.perf_counter()
        for step in range(steps):
            a, p, n = _draw(rows, pairs_per_step, generator)
            if loss == "contrastive":
                half = pairs_per_step // 2
                second = torch.cat([p[:half], n[half:]])
                same = (torch.arange(pairs_per_step) < half).to(device)
                z = embed(images[torch.cat([a, second])].to(device))
                value = contrastive_loss(z[:pairs_per_step], z[pairs_per_step:], same, margin)
            else:
                z = embed(images[torch.cat([a, p, n])].to(device))
                value = triplet_loss(*z.split(pairs_per_step), margin=margin)
            if not torch.isfinite(value):
                raise FloatingPointError(f"siamese loss became {value.item()} at step {step}: lower the learning rate")
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            optimizer.step()
            total, counted = total + value.item(), counted + 1
            if (step + 1) % log_every == 0 or step + 1 == steps:
                history.rows.append({"step": step + 1, "loss": total / counted, "images": len(z),
                                     "seconds": time.perf_counter() - start})
                total, counted, start = 0.0, 0, time.perf_counter()
    return history


@torch.no_grad()
def embed_images(embed: nn.Module, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Embeddings (M, D) of ``images`` (M, ...) in evaluation mode, on the CPU; mode restored after.

    >>> embed_images(nn.Flatten(), torch.ones(3, 1, 2, 2)).shape
    torch.Size([3, 4])
    """
    batch_size = _check_count("batch_size", batch_size)
    device, was_training = model_device(embed), embed.training
    embed.eval()
    try:
        return torch.cat([embed(images[i:i + batch_size].to(device)).cpu()
                          for i in range(0, len(images), batch_size)])
    finally:
        embed.train(was_training)


class VerificationROC(NamedTuple):
    """ROC of a verifier that accepts ``d <= threshold``: false and true accept rates (n,) at each
    distance threshold (n,), the area under the curve, the equal error rate and its threshold."""

    far: np.ndarray
    tar: np.ndarray
    thresholds: np.ndarray
    auc: float
    eer: float
    eer_threshold: float


def _check_scores(distances, same) -> tuple[np.ndarray, np.ndarray]:
    d = np.asarray(distances.detach().cpu() if isinstance(distances, torch.Tensor) else distances, dtype=float)
    y = np.asarray(same.detach().cpu() if isinstance(same, torch.Tensor) else same)
    if d.ndim != 1 or y.shape != d.shape or not np.isfinite(d).all():
        raise ValueError(f"distances and same must be 1-d, finite and of the same length, got shapes "
                         f"{d.shape} and {y.shape}")
    if not np.isin(y, (0, 1)).all() or len(np.unique(y)) != 2:
        raise ValueError("same must hold 0 (different) and 1 (same class), with both present")
    return d, y.astype(int)


def verification_roc(distances, same) -> VerificationROC:
    """ROC curve, AUC and equal error rate of "same class when ``d <= threshold``".

    Uses ``sklearn.metrics.roc_curve(same, -distances, drop_intermediate=False)`` (a smaller distance is a higher score)
    and ``roc_auc_score``. The equal error rate (EER) is where the false accept rate (different
    pairs accepted) equals the false reject rate (same pairs rejected, ``1 - tar``); it is read at
    the ROC point that minimises ``|far - (1 - tar)|`` and reported as their mean. The threshold
    is a distance. Choose it on held-out *validation* classes, then apply it to the test pairs
    with :func:`verification_rates`.

    >>> roc = verification_roc([0.1, 0.2, 0.9, 0.3, 0.8, 1.0], [1, 1, 1, 0, 0, 0])
    >>> round(roc.auc, 3), round(roc.eer, 3), roc.eer_threshold
    (0.778, 0.333, 0.3)
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    d, y = _check_scores(distances, same)
    far, tar, scores = roc_curve(y, -d, drop_intermediate=False)   # keep every threshold
    thresholds = -scores            # the first sklearn threshold is +inf: accept nothing
    i = int(np.argmin(np.abs(far - (1 - tar))))
    return VerificationROC(far, tar, thresholds, float(roc_auc_score(y, -d)),
                           float((far[i] + 1 - tar[i]) / 2), float(thresholds[i]))


class VerificationRates(NamedTuple):
    """At one threshold: false accept rate, false reject rate and accuracy over the pairs."""

    far: float
    frr: float
    accuracy: float


def verification_rates(distances, same, threshold: float) -> VerificationRates:
    """False accept rate, false reject rate and accuracy of accepting pairs with ``d <= threshold``.

    >>> verification_rates([0.1, 0.5, 0.2, 0.9], [1, 1, 0, 0], threshold=0.3)
    VerificationRates(far=0.5, frr=0.5, accuracy=0.5)
    """
    d, y = _check_scores(distances, same)
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) or math.isnan(threshold):
        raise ValueError(f"threshold must be a number (a distance), got {threshold!r}")
    accept = d <= threshold
    return VerificationRates(float(accept[y == 0].mean()), float((~accept[y == 1]).mean()),
                             float((accept == (y == 1)).mean()))


def nearest_support_accuracy(embeddings: torch.Tensor, labels, *, ways: int, shots: int = 1,
                             queries: int = 1, episodes: int = 1000, classes=None,
                             seed: int | torch.Generator = 0) -> EpisodeAccuracy:
    """N-way K-shot accuracy of the nearest support example, on precomputed embeddings (M, D).

    Each episode (:func:`tlcourse.meta.episodes.evaluate_episodes`, drawn from ``classes``: the
    test classes) gives N classes with K support embeddings each; a query takes the class of the
    support embedding at the smallest Euclidean distance (the argmin; no threshold). With K = 1
    this is the one-shot protocol of Lake et al. (2015) and Koch et al. (2015). Chance is 1/N.

    >>> z = torch.eye(4).repeat_interleave(3, 0)          # 4 classes, 3 identical points each
    >>> nearest_support_accuracy(z, torch.arange(4).repeat_interleave(3), ways=4, episodes=5).mean
    1.0
    """
    shots = _check_count("shots", shots)
    if not isinstance(embeddings, torch.Tensor) or embeddings.ndim != 2:
        shape = tuple(getattr(embeddings, "shape", ())) or type(embeddings).__name__
        raise ValueError(f"embeddings must be a tensor of shape (M, D), got {shape}; embed the images first")

    def predict(zs: torch.Tensor, ys: torch.Tensor, zq: torch.Tensor) -> torch.Tensor:
        d = torch.cdist(zq, zs)                                          # (T, N*Q, N*K), class-major
        return -d.reshape(*d.shape[:2], ways, shots).min(-1).values      # nearest example per class

    return evaluate_episodes(predict, embeddings.float(), labels, ways=ways, shots=shots, queries=queries,
                             episodes=episodes, classes=classes, seed=seed)
