"""Divergences between domains: how far apart are the source and the target distributions?

Three ways to put a number on a domain shift, from the most to the least "learned":

- :func:`proxy_a_distance` trains a classifier to tell source from target and turns its held-out
  error into the proxy A-distance of Ben-David et al. (2007, 2010), the quantity that enters the
  domain-adaptation bound (see :mod:`tlcourse.bounds`);
- :func:`mmd2_unbiased` is the kernel two-sample statistic of Gretton et al. (2012): the squared
  distance between the two samples' mean embeddings in a reproducing-kernel Hilbert space, written
  in torch so it can also serve as a training loss (as in DAN, Long et al., 2015);
- :func:`kl_divergence`, :func:`js_divergence` and :func:`histogram_divergence` compare
  histograms, e.g. of one feature or of a model's confidence on the two domains.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.special import rel_entr
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

__all__ = ["proxy_a_distance", "ProxyADistance", "default_domain_classifier", "mmd2_unbiased", "mmd2_biased",
           "median_heuristic_bandwidths", "multi_bandwidth_rbf_kernel", "kl_divergence",
           "js_divergence", "histogram_divergence", "HistogramDivergence"]

MEDIAN_FACTORS = (0.25, 0.5, 1.0, 2.0, 4.0)


# --------------------------------------------------------------------------- proxy A-distance
def _as_feature_matrix(x, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().to(torch.float64).numpy()
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n, D), got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite (it holds NaN or inf)")
    return arr


@dataclass(frozen=True)
class ProxyADistance:
    """Result of :func:`proxy_a_distance`.

    ``distance``: ``2 (1 - 2 error)`` clipped to [0, 2]; ``error``: held-out balanced error of the
    domain classifier; ``auc``: its held-out ROC AUC (0.5: the domains look the same; NaN when the
    classifier has neither ``decision_function`` nor ``predict_proba``); ``n_train``, ``n_test``:
    pooled examples used to fit and to score it.
    """

    distance: float
    error: float
    auc: float
    n_train: int
    n_test: int


def _seeded_clone(estimator, seed: int):
    """An unfitted copy of ``estimator`` whose unset ``random_state`` parameters (nested ones in
    pipelines included) are set to ``seed``; explicitly set ones are kept."""
    estimator = clone(estimator)
    params = estimator.get_params()
    unset = {key: seed for key, value in params.items()
             if (key == "random_state" or key.endswith("__random_state")) and value is None}
    return estimator.set_params(**unset)


def default_domain_classifier():
    """Standardised logistic regression, classes reweighted to equal total weight."""
    return make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced", max_iter=1000))


def proxy_a_distance(feats_s, feats_t, seed: int = 0, test_size: float = 0.5,
                     classifier=None) -> ProxyADistance:
    """Proxy A-distance between two samples (Ben-David et al., 2007, "Analysis of Representations
    for Domain Adaptation"; 2010, "A theory of learning from different domains").

    The A-distance ``d_A(S, T) = 2 sup_{A in A} |P_S(A) - P_T(A)|`` over a family of sets ``A``.
    Taking the sets to be the positive regions ``{x : h(x) = 1}`` of a hypothesis class, it is
    estimated by training a *domain classifier* ``h`` to tell source (label 0) from target
    (label 1) and measuring its held-out error::

        err = (P_S(h = 1) + P_T(h = 0)) / 2        (balanced error)
        d_A ~ 2 (1 - 2 err)

    since ``P_T(A) - P_S(A) = 1 - 2 err`` for ``A = {h = 1}``. The balanced error equals the plain
    error when the two samples have the same size; with unequal sizes it stops a classifier that
    always answers the larger domain from faking a distance. ``err > 0.5`` (worse than chance on
    held-out data) means the classifier found no separation, so the result is clipped to 0;
    it is at most 2 (``err = 0``, perfectly separated domains).

    The pooled examples are split once, stratified by domain and seeded by ``seed``; the classifier
    is fitted on ``1 - test_size`` of them and scored on the rest. With a linear classifier this
    estimates ``d_H`` for linear ``H``; see :func:`tlcourse.bounds.ben_david_bound` for ``d_HΔH``.

    Args:
        feats_s: (n_s, D) source features; feats_t: (n_t, D) target features (numpy or torch).
        seed: seed of the split, and of the classifier's ``random_state`` where that is unset.
        test_size: held-out fraction of the pooled examples, in (0, 1).
        classifier: any scikit-learn classifier; it is cloned, never modified. Default:
            standardised logistic regression with balanced class weights.

    >>> rng = np.random.default_rng(0)
    >>> same = proxy_a_distance(rng.normal(size=(300, 2)), rng.normal(size=(300, 2)))
    >>> far = proxy_a_distance(rng.normal(size=(300, 2)), rng.normal(size=(300, 2)) + 6.0)
    >>> round(same.distance, 1), round(far.distance, 1), round(far.error, 2)
    (0.0, 2.0, 0.0)
    """
    xs, xt = _as_feature_matrix(feats_s, "feats_s"), _as_feature_matrix(feats_t, "feats_t")
    if xs.shape[1] != xt.shape[1]:
        raise ValueError(f"feats_s and feats_t differ in width: {xs.shape[1]} vs {xt.shape[1]}")
    if len(xs) < 2 or len(xt) < 2:
        raise ValueError(f"each domain needs at least 2 examples to split, got {len(xs)} and {len(xt)}")
    if not 0.0 < test_size < 1.0:
        raise ValueError(f"test_size must be in (0, 1), got {test_size}")
    x = np.concatenate([xs, xt])
    domain = np.r_[np.zeros(len(xs), dtype=int), np.ones(len(xt), dtype=int)]
    x_train, x_test, d_train, d_test = train_test_split(
        x, domain, test_size=test_size, stratify=domain, random_state=seed)
    clf = _seeded_clone(default_domain_classifier() if classifier is None else classifier, seed)
    clf.fit(x_train, d_train)
    error = 1.0 - float(balanced_accuracy_score(d_test, clf.predict(x_test)))
    if hasattr(clf, "decision_function"):
        auc = float(roc_auc_score(d_test, clf.decision_function(x_test)))
    elif hasattr(clf, "predict_proba"):
        auc = float(roc_auc_score(d_test, clf.predict_proba(x_test)[:, 1]))
    else:
        auc = float("nan")
    distance = float(np.clip(2.0 * (1.0 - 2.0 * error), 0.0, 2.0))
    return ProxyADistance(distance=distance, error=error, auc=auc, n_train=len(x_train), n_test=len(x_test))


# --------------------------------------------------------------------------- MMD
def _as_sample_pair(x, y) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = torch.as_tensor(x), torch.as_tensor(y)
    if x.dim() != 2 or y.dim() != 2:
        raise ValueError(f"x and y must be 2-D (n, D) and (m, D), got shapes {tuple(x.shape)} and "
                         f"{tuple(y.shape)}")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y differ in width D: {x.shape[1]} vs {y.shape[1]}")
    if len(x) < 2 or len(y) < 2:
        raise ValueError(f"the unbiased MMD needs at least 2 examples per sample, got n={len(x)}, m={len(y)}")
    if x.device != y.device:
        raise ValueError(f"x and y are on different devices: {x.device} vs {y.device}")
    dtype = torch.promote_types(x.dtype, y.dtype)
    if not dtype.is_floating_point:
        dtype = torch.get_default_dtype()
    x, y = x.to(dtype), y.to(dtype)
    if not (torch.isfinite(x).all() and torch.isfinite(y).all()):
        raise ValueError("x and y must be finite (they hold NaN or inf)")
    return x, y


def _squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``||a_i - b_j||^2``, (n, D), (m, D) -> (n, m), with both samples centred on their pooled mean.

    ||a||^2 + ||b||^2 - 2 a.b needs no (n, m, D) intermediate, but it subtracts numbers of size
    ||a||^2 to get one of size ||a - b||^2: in float32, features 300 away from the origin lose
    every significant digit of the MMD. Distances are shift-invariant, so centring first costs
    O((n + m) D) and leaves only the cancellation of the spread itself. Clamping removes the tiny
    negative values round-off leaves where a == b (unlike cdist it also has a finite gradient
    there); the centre's gradient cancels exactly in a - b.
    """
    centre = (a.sum(0) + b.sum(0)) / (len(a) + len(b))
    a, b = a - centre, b - centre
    sq = (a * a).sum(1, keepdim=True) + (b * b).sum(1) - 2.0 * a @ b.T
    return sq.clamp_min(0.0)


def median_heuristic_bandwidths(x, y, factors: Sequence[float] = MEDIAN_FACTORS) -> torch.Tensor:
    """Kernel bandwidths ``sigma = median pairwise distance x factor`` (the median heuristic).

    The median runs over the distances between all distinct pairs of the pooled sample
    ``[x; y]`` (the lower middle value when their number is even), under ``torch.no_grad``: the
    bandwidths are constants, not something a loss should push on. Shapes: (n, D), (m, D) ->
    (len(factors),) on the inputs' device and dtype.

    >>> median_heuristic_bandwidths(torch.tensor([[0.0], [1.0]]), torch.tensor([[3.0], [4.0]]),
    ...                             factors=[1.0, 2.0])
    tensor([2., 4.])
    """
    x, y = _as_sample_pair(x, y)
    with torch.no_grad():
        z = torch.cat([x, y])
        rows, cols = torch.triu_indices(len(z), len(z), offset=1, device=z.device)
        median = _squared_distances(z, z)[rows, cols].sqrt().median()
    if median <= 0:
        raise ValueError("more than half of the pairwise distances are 0 (repeated points): the median "
                         "heuristic gives bandwidth 0; pass bandwidths explicitly")
    return median * torch.as_tensor(factors, dtype=z.dtype, device=z.device)


def _check_bandwidths(bandwidths, like: torch.Tensor) -> torch.Tensor:
    bw = torch.as_tensor(bandwidths, dtype=like.dtype, device=like.device).reshape(-1)
    if bw.numel() == 0 or not torch.isfinite(bw).all() or (bw <= 0).any():
        raise ValueError(f"bandwidths must be a non-empty list of positive numbers, got {bandwidths}")
    return bw


def multi_bandwidth_rbf_kernel(a: torch.Tensor, b: torch.Tensor, bandwidths) -> torch.Tensor:
    """Gram matrix ``k(a_i, b_j) = sum_sigma exp(-||a_i - b_j||^2 / (2 sigma^2))``, (n, D), (m, D) -> (n, m).

    A sum of characteristic kernels is characteristic, so MMD with it is 0 only for equal
    distributions, and several bandwidths keep it sensitive at several length scales.

    >>> multi_bandwidth_rbf_kernel(torch.zeros(1, 2), torch.tensor([[0.0, 0.0], [3.0, 4.0]]), [5.0])
    tensor([[1.0000, 0.6065]])
    """
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"a and b must be (n, D) and (m, D), got {tuple(a.shape)} and {tuple(b.shape)}")
    bw = _check_bandwidths(bandwidths, a)
    sq = _squared_distances(a, b)
    return torch.exp(-sq.unsqueeze(-1) / (2.0 * bw**2)).sum(-1)


def _kernel_sums(x, y, bandwidths):
    x, y = _as_sample_pair(x, y)
    if bandwidths is None:
        bandwidths = median_heuristic_bandwidths(x, y)
    k_xx = multi_bandwidth_rbf_kernel(x, x, bandwidths)
    k_yy = multi_bandwidth_rbf_kernel(y, y, bandwidths)
    k_xy = multi_bandwidth_rbf_kernel(x, y, bandwidths)
    return k_xx, k_yy, k_xy


def mmd2_unbiased(x, y, bandwidths=None) -> torch.Tensor:
    """Unbiased estimate of the squared maximum mean discrepancy (Gretton et al., 2012, "A Kernel
    Two-Sample Test", JMLR, Lemma 6)::

        MMD_u^2 = 1/(n(n-1)) sum_{i != j} k(x_i, x_j) + 1/(m(m-1)) sum_{i != j} k(y_i, y_j)
                  - 2/(nm) sum_{i, j} k(x_i, y_j)

    with the multi-bandwidth RBF kernel ``k(a, b) = sum_sigma exp(-||a - b||^2 / (2 sigma^2))``.
    Leaving out the ``i = j`` terms makes it unbiased for the population ``MMD^2``: its mean is 0
    when both samples come from the same distribution, so a single value can be slightly
    negative. (The biased V-statistic, :func:`mmd2_biased`, keeps them and is always >= 0.)

    Args:
        x: (n, D) and y: (m, D) samples, n, m >= 2, torch tensors (numpy arrays are converted) on one
            device; computed in their (promoted) dtype on that device, differentiable. The
            kernel is shift-invariant, so pairwise distances are taken after centring on the
            pooled mean: float32 stays accurate for features far from the origin.
        bandwidths: the sigmas; default ``median_heuristic_bandwidths(x, y)``: the median pairwise
            distance of the pooled sample times 1/4, 1/2, 1, 2, 4.

    Returns:
        A 0-d tensor. Cost O((n + m)^2 D) time and O((n + m)^2) memory.

    >>> g = torch.Generator().manual_seed(0)
    >>> x, y = torch.randn(100, 2, generator=g), torch.randn(100, 2, generator=g)
    >>> round(mmd2_unbiased(x, y).item(), 3), round(mmd2_unbiased(x, y + 1.0).item(), 2)
    (0.003, 0.54)
    """
    k_xx, k_yy, k_xy = _kernel_sums(x, y, bandwidths)
    n, m = len(k_xx), len(k_yy)
    within_x = (k_xx.sum() - k_xx.diagonal().sum()) / (n * (n - 1))
    within_y = (k_yy.sum() - k_yy.diagonal().sum()) / (m * (m - 1))
    return within_x + within_y - 2.0 * k_xy.mean()


def mmd2_biased(x, y, bandwidths=None) -> torch.Tensor:
    """Biased (V-statistic) estimate of MMD^2 (Gretton et al., 2012, eq. 5): the squared distance
    between the two empirical mean embeddings, ``mean k(x, x') + mean k(y, y') - 2 mean k(x, y)``
    with the ``i = j`` terms kept. Always >= 0, and positive on average even for identical
    distributions (by about ``k(a, a) (1/n + 1/m)``); shown beside :func:`mmd2_unbiased` to make
    the bias visible. Same arguments and shapes.

    >>> mmd2_biased(torch.zeros(2, 1), torch.zeros(3, 1), bandwidths=[1.0]).item()
    0.0
    """
    k_xx, k_yy, k_xy = _kernel_sums(x, y, bandwidths)
    return k_xx.mean() + k_yy.mean() - 2.0 * k_xy.mean()


# --------------------------------------------------------------------------- histograms
def _as_histogram(h, name: str) -> np.ndarray:
    if isinstance(h, torch.Tensor):
        h = h.detach().cpu().to(torch.float64).numpy()
    arr = np.asarray(h, dtype=np.float64)
    if arr.ndim != 1 or len(arr) == 0:
        raise ValueError(f"{name} must be a non-empty 1-D histogram, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite (it holds NaN or inf)")
    if (arr < 0).any():
        i = int(np.flatnonzero(arr < 0)[0])
        raise ValueError(f"{name} must be non-negative (bin {i} is {arr[i]:.6g})")
    if arr.sum() == 0:
        raise ValueError(f"{name} is all zero: it cannot be normalised to a distribution")
    return arr / arr.sum()


def _as_histogram_pair(p, q) -> tuple[np.ndarray, np.ndarray]:
    p, q = _as_histogram(p, "p"), _as_histogram(q, "q")
    if p.shape != q.shape:
        raise ValueError(f"p and q must have the same number of bins, got {p.shape} and {q.shape}")
    return p, q


def kl_divergence(p, q, eps: float = 1e-10) -> float:
    """Kullback-Leibler divergence ``KL(p || q) = sum_i p_i log(p_i / q_i)`` in nats.

    ``p`` and ``q`` are histograms (K,) of non-negative counts or weights, normalised here. KL is
    >= 0, 0 only for ``p = q``, not symmetric, and infinite when ``q`` has an empty bin where ``p``
    has mass. To keep empirical histograms usable, ``eps`` is added to every bin of *both*
    normalised histograms, which are then renormalised (so ``KL(p || p)`` stays exactly 0);
    ``eps=0`` gives the exact value, possibly ``inf``. Terms with ``p_i = 0`` count as 0.

    >>> round(kl_divergence([1, 1], [1, 3], eps=0), 6), round(0.5 * float(np.log(4 / 3)), 6)
    (0.143841, 0.143841)
    >>> kl_divergence([1, 0], [0, 1], eps=0)
    inf
    """
    p, q = _as_histogram_pair(p, q)
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    if eps > 0:
        p, q = (p + eps) / (1 + eps * len(p)), (q + eps) / (1 + eps * len(q))
    return max(0.0, float(np.sum(rel_entr(p, q))))  # >= 0; the max only removes round-off


def js_divergence(p, q) -> float:
    """Jensen-Shannon divergence ``JS(p, q) = KL(p || m) / 2 + KL(q || m) / 2``, ``m = (p + q) / 2``,
    in nats (Lin, 1991, "Divergence measures based on the Shannon entropy").

    Symmetric, finite without smoothing (``m > 0`` wherever ``p`` or ``q`` is), and bounded:
    ``0 <= JS <= log 2``, with ``log 2`` for histograms with disjoint support. Its square root is a
    metric (``scipy.spatial.distance.jensenshannon``). Histograms (K,) are normalised here.

    >>> js_divergence([1, 0], [0, 1]), float(np.log(2))
    (0.6931471805599453, 0.6931471805599453)
    """
    p, q = _as_histogram_pair(p, q)
    m = (p + q) / 2
    return max(0.0, float(0.5 * np.sum(rel_entr(p, m)) + 0.5 * np.sum(rel_entr(q, m))))  # round-off


@dataclass(frozen=True)
class HistogramDivergence:
    """KL and JS between two samples binned on shared ``bin_edges`` (K + 1,); ``p``, ``q`` (K,) are the
    normalised histograms (for plotting)."""

    kl: float
    js: float
    bin_edges: np.ndarray
    p: np.ndarray
    q: np.ndarray


def histogram_divergence(a, b, bins: int | Sequence[float] | str = 20, range: tuple[float, float] | None = None,
                         eps: float = 1e-10) -> HistogramDivergence:
    """Bin two 1-D samples on the *same* edges and compare the histograms with KL and JS.

    Edges come from ``np.histogram_bin_edges`` on the pooled sample, so ``bins`` may be a count, the
    edges themselves, or a numpy rule such as ``"auto"``; ``range`` defaults to the pooled min and
    max (values outside a given ``range`` are dropped). ``kl`` is ``KL(hist(a) || hist(b))`` with
    ``eps`` smoothing as in :func:`kl_divergence`.

    >>> rng = np.random.default_rng(0)
    >>> same = histogram_divergence(rng.normal(size=5000), rng.normal(size=5000), bins=10)
    >>> apart = histogram_divergence(rng.normal(size=5000), rng.normal(size=5000) + 10, bins=10)
    >>> round(same.js, 4), round(apart.js / float(np.log(2)), 4)
    (0.0011, 1.0)
    """
    samples = []
    for name, s in (("a", a), ("b", b)):
        if isinstance(s, torch.Tensor):
            s = s.detach().cpu().to(torch.float64).numpy()
        s = np.asarray(s, dtype=np.float64)
        if s.ndim != 1 or len(s) == 0:
            raise ValueError(f"{name} must be a non-empty 1-D sample, got shape {s.shape}")
        if not np.all(np.isfinite(s)):
            raise ValueError(f"{name} must be finite (it holds NaN or inf)")
        samples.append(s)
    edges = np.histogram_bin_edges(np.concatenate(samples), bins=bins, range=range)
    p, q = (np.histogram(s, bins=edges)[0].astype(np.float64) for s in samples)
    for name, h in (("a", p), ("b", q)):
        if h.sum() == 0:
            raise ValueError(f"no value of {name} falls inside range {range}")
    return HistogramDivergence(kl=kl_divergence(p, q, eps=eps), js=js_divergence(p, q), bin_edges=edges,
                               p=p / p.sum(), q=q / q.sum())
