"""The four source/target cases of Pan & Yang (2010), as small seeded 2-D generators whose truth is known.

Pan & Yang define a **domain** ``D = {X, P(X)}`` (a feature space and a marginal distribution over
it) and a **task** ``T = {Y, P(Y|X)}`` (a label space and the conditional, the rule a model learns).
A source and a target can differ in any of these four parts; each generator here changes exactly
the parts its name says and keeps the others, and returns the true conditionals so that a test can
check the property instead of trusting the name:

========================  ==========================  =====================================
case                      what moves                  what stays
========================  ==========================  =====================================
:func:`covariate_shift`   P(X)                        P(Y|X) (one labelling function)
:func:`label_shift`       P(Y) (so P(X) and P(Y|X))   P(X|Y) (the class-conditionals)
:func:`concept_shift`     P(Y|X)                      P(X)
:func:`heterogeneous`     the feature space X         the objects and their labels
========================  ==========================  =====================================

Labels are drawn from a Bernoulli with the true ``P(Y=1|x)``, never thresholded, so that selection
on ``y`` and selection on ``x`` leave different fingerprints (see :func:`selection_residual`).
:func:`covariate_twin` builds a covariate shift whose target P(X) is *exactly* the label-shift
target's: no test on X can tell the two apart, yet the source classifier suits one and not the
other.

Detection reuses :mod:`tlcourse.divergence`: :func:`mmd_permutation_test` is the permutation test
of Gretton et al. (2012) on :func:`~tlcourse.divergence.mmd2_unbiased`'s kernel, and
:func:`measure_shift` scores one case with a held-out domain classifier
(:func:`~tlcourse.divergence.proxy_a_distance`), that test, and the source classifier's accuracy on
both domains beside a target-trained one of the same family.

>>> pair = covariate_shift(n_source=200, n_target=200, seed=0)
>>> pair.x_source.shape, pair.x_target.shape, pair.kind
((200, 2), (200, 2), 'covariate')
>>> bool(np.allclose(pair.posterior_source(pair.x_target), pair.posterior_target(pair.x_target)))
True
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.special import expit
from sklearn.base import clone
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from .divergence import median_heuristic_bandwidths, multi_bandwidth_rbf_kernel, proxy_a_distance

__all__ = ["ShiftedPair", "covariate_shift", "label_shift", "covariate_twin", "concept_shift", "heterogeneous",
           "make_shift", "KINDS", "labelled_pool", "pool_posterior", "selection_residual", "mmd_permutation_test",
           "flexible_domain_classifier",
           "measure_shift", "training_points_auc", "fit_feature_map", "plot_pair"]

KINDS = ("covariate", "label", "concept", "heterogeneous")
Posterior = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class ShiftedPair:
    """A labelled source sample and a labelled target sample, with the truth that generated them.

    ``x_source`` (n_s, d_s), ``y_source`` (n_s,) in {0, 1}; ``x_target`` (n_t, d_t), ``y_target``.
    ``posterior_source(x)`` and ``posterior_target(x)`` return the true ``P(Y=1|x)`` of each domain
    ((n, d) -> (n,)). ``class_means`` and ``class_scale`` (label shift: ``x | y ~ N(mean_y,
    scale^2 I)`` in both domains), ``priors`` ((P_S(Y=1), P_T(Y=1))), ``feature_map`` and ``pairs``
    (heterogeneous) are filled where the case has them.
    """

    kind: str
    x_source: np.ndarray
    y_source: np.ndarray
    x_target: np.ndarray
    y_target: np.ndarray
    posterior_source: Posterior
    posterior_target: Posterior
    priors: tuple[float, float] | None = None
    class_means: np.ndarray | None = None
    class_scale: float | None = None
    feature_map: np.ndarray | None = None
    pairs: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)


def _check_sizes(n_source: int, n_target: int) -> None:
    if int(n_source) < 2 or int(n_target) < 2:
        raise ValueError(f"n_source and n_target must be at least 2, got {n_source} and {n_target}")


def _bernoulli(rng: np.random.Generator, p: np.ndarray) -> np.ndarray:
    return (rng.random(len(p)) < p).astype(np.int64)


# ---------------------------------------------------------------- covariate shift
COVARIATE_SOURCE_MEAN = (-0.6, 0.0)
COVARIATE_TEMPERATURE = 0.15


def covariate_posterior(x: np.ndarray) -> np.ndarray:
    """The one labelling rule of :func:`covariate_shift`: ``P(Y=1|x) = sigmoid((x2 - 0.6 sin(1.6 x1)) / 0.15)``.

    The boundary is a sine: nearly straight where the source lives, bent where the target does, so
    a linear source model that fits the source well is wrong on the target.
    """
    x = np.asarray(x, dtype=np.float64)
    return expit((x[:, 1] - 0.6 * np.sin(1.6 * x[:, 0])) / COVARIATE_TEMPERATURE)


def covariate_shift(n_source: int = 600, n_target: int = 600, seed: int = 0,
                    shift: tuple[float, float] = (2.2, 0.3), scale: float = 0.7) -> ShiftedPair:
    """Covariate shift: ``x ~ N(m, scale^2 I)`` with ``m`` moved by ``shift`` in the target, and
    ``y | x`` drawn from :func:`covariate_posterior` in both domains (P(Y|X) identical).

    >>> p = covariate_shift(seed=1)
    >>> bool(p.x_target.mean(0)[0] - p.x_source.mean(0)[0] > 1.8)
    True
    """
    _check_sizes(n_source, n_target)
    rng = np.random.default_rng(seed)
    mean_s = np.asarray(COVARIATE_SOURCE_MEAN)
    xs = mean_s + scale * rng.standard_normal((n_source, 2))
    xt = mean_s + np.asarray(shift, dtype=np.float64) + scale * rng.standard_normal((n_target, 2))
    return ShiftedPair("covariate", xs, _bernoulli(rng, covariate_posterior(xs)), xt,
                       _bernoulli(rng, covariate_posterior(xt)), covariate_posterior, covariate_posterior)


# ---------------------------------------------------------------- label shift
LABEL_MEANS = np.array([[-0.9, -0.3], [0.9, 0.3]])
LABEL_SCALE = 1.0


def _mixture_posterior(prior: float, means: np.ndarray = LABEL_MEANS, scale: float = LABEL_SCALE) -> Posterior:
    """Bayes' rule for two Gaussians ``N(mean_y, scale^2 I)`` with ``P(Y=1) = prior``."""
    def posterior(x):
        x = np.asarray(x, dtype=np.float64)
        log_ratio = (((x - means[0]) ** 2).sum(1) - ((x - means[1]) ** 2).sum(1)) / (2 * scale ** 2)
        return expit(log_ratio + np.log(prior / (1 - prior)))
    return posterior


def _mixture_sample(rng, n, prior, means=LABEL_MEANS, scale=LABEL_SCALE):
    y = (rng.random(n) < prior).astype(np.int64)
    return means[y] + scale * rng.standard_normal((n, 2)), y


def label_shift(n_source: int = 600, n_target: int = 600, seed: int = 0, source_prior: float = 0.5,
                target_prior: float = 0.15) -> ShiftedPair:
    """Label (prior) shift: ``y ~ Bernoulli(prior)``, ``x | y ~ N(mean_y, I)`` with the same
    class-conditionals in both domains and ``P(Y=1)`` moved from ``source_prior`` to ``target_prior``.

    P(X|Y) is fixed, so P(X) = sum_y P(y) P(X|y) moves with the prior (a test on X sees it), and so
    does P(Y|X), by Bayes' rule: the log-odds move by ``logit(target_prior) - logit(source_prior)``.
    """
    _check_sizes(n_source, n_target)
    for name, p in (("source_prior", source_prior), ("target_prior", target_prior)):
        if not 0 < p < 1:
            raise ValueError(f"{name} must be in (0, 1), got {p}")
    rng = np.random.default_rng(seed)
    xs, ys = _mixture_sample(rng, n_source, source_prior)
    xt, yt = _mixture_sample(rng, n_target, target_prior)
    return ShiftedPair("label", xs, ys, xt, yt, _mixture_posterior(source_prior), _mixture_posterior(target_prior),
                       priors=(source_prior, target_prior), class_means=LABEL_MEANS.copy(), class_scale=LABEL_SCALE)


def covariate_twin(pair: ShiftedPair, seed: int = 0) -> ShiftedPair:
    """The covariate shift whose target P(X) equals the label-shift target's.

    Target inputs are drawn from ``P_T(X)`` of ``pair`` (a :func:`label_shift` result, same prior
    and class-conditionals) and labelled with the *source* conditional ``P_S(Y|X)``; the source
    sample is ``pair``'s. No test on unlabelled X can tell this target from ``pair``'s: only labels
    can.
    """
    if pair.kind != "label":
        raise ValueError(f"covariate_twin needs a label_shift pair, got kind {pair.kind!r}")
    rng = np.random.default_rng([seed, 1])   # a stream of its own: not the draws of label_shift(seed)
    xt, _ = _mixture_sample(rng, len(pair.x_target), pair.priors[1], pair.class_means, pair.class_scale)
    return ShiftedPair("covariate twin", pair.x_source, pair.y_source, xt, _bernoulli(rng, pair.posterior_source(xt)),
                       pair.posterior_source, pair.posterior_source, priors=pair.priors,
                       class_means=pair.class_means, class_scale=pair.class_scale)


# ---------------------------------------------------------------- concept shift
CONCEPT_TEMPERATURE = 0.2


def _linear_posterior(angle_deg: float, temperature: float = CONCEPT_TEMPERATURE) -> Posterior:
    w = np.array([-np.sin(np.radians(angle_deg)), np.cos(np.radians(angle_deg))])

    def posterior(x):
        return expit(np.asarray(x, dtype=np.float64) @ w / temperature)
    return posterior


def concept_shift(n_source: int = 600, n_target: int = 600, seed: int = 0, angle: float = 70.0) -> ShiftedPair:
    """Concept shift: ``x ~ N(0, I)`` in both domains (P(X) identical); ``P(Y=1|x)`` is a soft linear
    rule through the origin whose boundary is rotated by ``angle`` degrees in the target (0 in the
    source: the boundary is the horizontal axis)."""
    _check_sizes(n_source, n_target)
    rng = np.random.default_rng(seed)
    ps, pt = _linear_posterior(0.0), _linear_posterior(angle)
    xs, xt = rng.standard_normal((n_source, 2)), rng.standard_normal((n_target, 2))
    return ShiftedPair("concept", xs, _bernoulli(rng, ps(xs)), xt, _bernoulli(rng, pt(xt)), ps, pt)


# ---------------------------------------------------------------- heterogeneous
HETEROGENEOUS_MAP = np.array([[0.0, 1.5], [-1.0, 0.0], [0.7, 0.7]])   # (3, 2): target z = A x + noise


def heterogeneous(n_source: int = 600, n_target: int = 600, seed: int = 0, n_pairs: int = 20,
                  noise: float = 0.1) -> ShiftedPair:
    """Heterogeneous transfer: the same kind of object, seen through different features.

    Objects have a latent description ``u ~ N(0, I_2)`` and a label from the concept-shift source
    rule. The source measures ``x = u`` (2 features); the target measures ``z = A u + noise``
    (3 features, ``A = HETEROGENEOUS_MAP``), another feature space. ``pairs`` holds ``n_pairs``
    further objects seen in both spaces, ``(x (n_pairs, 2), z (n_pairs, 3))``, the correspondences
    (a bilingual dictionary, co-registered scans) that heterogeneous methods learn a map from.
    ``posterior_target(z)`` is the label rule applied to ``z``'s least-squares preimage.
    """
    _check_sizes(n_source, n_target)
    rng = np.random.default_rng(seed)
    rule = _linear_posterior(0.0)
    a = HETEROGENEOUS_MAP

    def measure(u):
        return u @ a.T + noise * rng.standard_normal((len(u), a.shape[0]))

    us, ut, up = (rng.standard_normal((n, 2)) for n in (n_source, n_target, n_pairs))
    ys, yt = _bernoulli(rng, rule(us)), _bernoulli(rng, rule(ut))
    pinv = np.linalg.pinv(a)
    return ShiftedPair("heterogeneous", us, ys, measure(ut), yt, rule, lambda z: rule(np.asarray(z) @ pinv.T),
                       feature_map=a.copy(), pairs=(up, measure(up)))


def make_shift(kind: str, n_source: int = 600, n_target: int = 600, seed: int = 0) -> ShiftedPair:
    """One of :data:`KINDS` by name, with its default strength."""
    makers = {"covariate": covariate_shift, "label": label_shift, "concept": concept_shift,
              "heterogeneous": heterogeneous}
    if kind not in makers:
        raise ValueError(f"kind must be one of {list(makers)}, got {kind!r}")
    return makers[kind](n_source=n_source, n_target=n_target, seed=seed)


def pool_posterior(x: np.ndarray) -> np.ndarray:
    """``P(Y=1|x) = sigmoid(1.5 (x2 - 0.5 x1))`` of :func:`labelled_pool`: a soft rule, so that labels
    are noisy everywhere and selection on ``y`` leaves a mark (:func:`selection_residual`)."""
    x = np.asarray(x, dtype=np.float64)
    return expit(1.5 * (x[:, 1] - 0.5 * x[:, 0]))


def labelled_pool(n: int = 3000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A labelled source pool to select a target from: ``x ~ N(0, I_2)`` (n, 2), ``y ~ Bernoulli(pool_posterior(x))``.

    Keeping examples with a probability that depends on ``x`` only gives a covariate shift; one that
    depends on ``y`` gives a label shift (Zadrozny, 2004, on sample selection bias).
    """
    _check_sizes(n, n)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 2))
    return x, _bernoulli(rng, pool_posterior(x))


# ---------------------------------------------------------------- checking and detecting
def selection_residual(y: np.ndarray, p: np.ndarray, counts: np.ndarray | None = None) -> tuple[float, float]:
    """Mean of ``y - P(Y=1|x)`` over a selected sample, and its z-score under "selection depends on x only".

    If examples are kept with a probability that depends on ``x`` alone, ``y | x`` is still
    Bernoulli(p(x)) among those kept, so the residuals average to 0 with standard error
    ``sqrt(sum c_i^2 p_i (1 - p_i)) / sum c_i`` (``c_i``: how often example i was kept, for
    resampling with replacement). Selecting on ``y`` (which is label shift) moves it away from 0.

    >>> selection_residual(np.array([1, 0, 1, 0]), np.full(4, 0.5))
    (0.0, 0.0)
    """
    y, p = np.asarray(y, dtype=np.float64), np.asarray(p, dtype=np.float64)
    c = np.ones_like(p) if counts is None else np.asarray(counts, dtype=np.float64)
    if not (y.shape == p.shape == c.shape and y.ndim == 1):
        raise ValueError(f"y, p and counts must be 1-D of one length, got {y.shape}, {p.shape}, {c.shape}")
    if c.sum() <= 0:
        raise ValueError("nothing is selected (counts sum to 0)")
    mean = float((c * (y - p)).sum() / c.sum())
    se = float(np.sqrt((c ** 2 * p * (1 - p)).sum()) / c.sum())
    return mean, (mean / se if se > 0 else 0.0)


def mmd_permutation_test(x, y, n_permutations: int = 200, seed: int = 0) -> tuple[float, float]:
    """Kernel two-sample test (Gretton et al., 2012): ``(MMD_u^2, p-value)``.

    The statistic is :func:`tlcourse.divergence.mmd2_unbiased` with the median-heuristic
    multi-bandwidth kernel of the pooled sample. Under H0 (one distribution) the pooled points are
    exchangeable, so the p-value is ``(1 + #{permutations with MMD >= observed}) / (1 + n_permutations)``,
    each permutation re-splitting the pooled sample into sizes n and m. The Gram matrix is computed
    once, in float64; the bandwidths stay fixed across permutations, as the test requires.

    >>> rng = np.random.default_rng(0)
    >>> round(mmd_permutation_test(rng.normal(size=(100, 2)), rng.normal(size=(100, 2)) + 1)[1], 3)
    0.005
    """
    x = torch.as_tensor(np.asarray(x, dtype=np.float64))
    y = torch.as_tensor(np.asarray(y, dtype=np.float64))
    n, m = len(x), len(y)
    z = torch.cat([x, y])
    gram = multi_bandwidth_rbf_kernel(z, z, median_heuristic_bandwidths(x, y)).numpy()
    np.fill_diagonal(gram, 0.0)              # the unbiased statistic leaves out the i = j terms
    rng = np.random.default_rng(seed)
    orders = np.stack([np.arange(n + m)] + [rng.permutation(n + m) for _ in range(n_permutations)])
    in_x = np.zeros((len(orders), n + m))
    np.put_along_axis(in_x, orders[:, :n], 1.0, axis=1)   # one row per split: 1 where the point is in x
    k_in = gram @ in_x.T                                   # (n + m, splits): kernel mass from the x side
    total = gram.sum()
    s_xx = (in_x.T * k_in).sum(0)                          # sum over i, j in x
    s_xy = k_in.sum(0) - s_xx                              # sum over i in y, j in x
    s_yy = total - 2 * s_xy - s_xx
    stats = s_xx / (n * (n - 1)) + s_yy / (m * (m - 1)) - 2.0 * s_xy / (n * m)
    observed, null = stats[0], stats[1:]
    return float(observed), float((1 + (null >= observed - 1e-12).sum()) / (1 + n_permutations))


def flexible_domain_classifier():
    """A random forest (100 trees, leaves of at least 20): it can see a change of spread or shape
    that a linear domain classifier, which sees only the mean, misses."""
    return RandomForestClassifier(n_estimators=100, min_samples_leaf=20)


def _accuracy(model, x, y) -> float:
    return float((model.predict(x) == y).mean())


def fit_feature_map(z_pairs: np.ndarray, x_pairs: np.ndarray) -> np.ndarray:
    """Least-squares map with intercept from the target's features to the source's, ``(d_t + 1, d_s)``:
    apply it as ``np.c_[z, ones] @ B``. Fitted on paired examples only (no labels)."""
    z1 = np.c_[z_pairs, np.ones(len(z_pairs))]
    return np.linalg.lstsq(z1, x_pairs, rcond=None)[0]


def measure_shift(pair: ShiftedPair, test: ShiftedPair, seed: int = 0, source_model=None,
                  n_permutations: int = 200) -> dict:
    """Everything the chapter measures on one case and one seed.

    ``pair`` gives the training samples, ``test`` (the same case, another seed) the labelled test
    samples of both domains. Without target labels: ``auc_forest`` and ``auc_linear``, the held-out
    AUC of a domain classifier (half of the pooled inputs fit it, the other half score it), and
    ``mmd_p``, the permutation p-value. With them: ``acc_source`` (the source model, default
    logistic regression, on source test data), ``acc_target`` (the same model on target test
    data) and ``acc_oracle`` (the same family trained on the target's training labels). For
    heterogeneous pairs the inputs live in different spaces, so no domain classifier can be fitted
    (``auc_*`` and ``mmd_p`` are NaN); ``acc_target`` then uses the map fitted on ``pair.pairs``
    and ``acc_truncated`` the naive first-two-columns reading of the target.
    """
    model = clone(LogisticRegression() if source_model is None else source_model).fit(pair.x_source, pair.y_source)
    oracle = clone(model).fit(pair.x_target, pair.y_target)
    row = dict(case=pair.kind, seed=seed, acc_source=_accuracy(model, test.x_source, test.y_source),
               acc_oracle=_accuracy(oracle, test.x_target, test.y_target))
    if pair.x_source.shape[1] != pair.x_target.shape[1]:
        b = fit_feature_map(pair.pairs[1], pair.pairs[0])
        mapped = np.c_[test.x_target, np.ones(len(test.x_target))] @ b
        d = pair.x_source.shape[1]
        return {**row, "auc_forest": np.nan, "auc_linear": np.nan, "mmd_p": np.nan,
                "acc_target": _accuracy(model, mapped, test.y_target),
                "acc_truncated": _accuracy(model, test.x_target[:, :d], test.y_target)}
    forest = proxy_a_distance(pair.x_source, pair.x_target, seed=seed, classifier=flexible_domain_classifier())
    linear = proxy_a_distance(pair.x_source, pair.x_target, seed=seed)
    _, p = mmd_permutation_test(pair.x_source, pair.x_target, n_permutations=n_permutations, seed=seed)
    return {**row, "auc_forest": forest.auc, "auc_linear": linear.auc, "mmd_p": p,
            "acc_target": _accuracy(model, test.x_target, test.y_target), "acc_truncated": np.nan}


def training_points_auc(x_source, x_target, seed: int = 0, classifier=None) -> float:
    """The mistake, for showing it: a domain classifier's AUC on the very points it was fitted on."""
    x = np.concatenate([x_source, x_target])
    d = np.r_[np.zeros(len(x_source)), np.ones(len(x_target))]
    clf = clone(flexible_domain_classifier() if classifier is None else classifier).set_params(random_state=seed)
    return float(roc_auc_score(d, clf.fit(x, d).predict_proba(x)[:, 1]))




# ---------------------------------------------------------------- plotting
def plot_pair(ax, pair: ShiftedPair, model=None, title: str | None = None, n_show: int = 250,
              lim: float = 3.2) -> None:
    """Source (circles) and target (crosses) coloured by label, with the true target boundary
    ``P_T(Y=1|x) = 0.5`` (dashed) and ``model``'s boundary (solid), on a 2-D axis. A heterogeneous
    pair shows its target's first two features, the naive reading of another space."""
    grid = np.linspace(-lim, lim, 200)
    g1, g2 = np.meshgrid(grid, grid)
    flat = np.c_[g1.ravel(), g2.ravel()]
    ax.scatter(*pair.x_source[:n_show].T, c=pair.y_source[:n_show], cmap="coolwarm", s=10, marker="o",
               alpha=0.5, vmin=0, vmax=1, label="source")
    ax.scatter(*pair.x_target[:n_show, :2].T, c=pair.y_target[:n_show], cmap="coolwarm", s=14, marker="x",
               alpha=0.7, vmin=0, vmax=1, label="target")
    if pair.x_target.shape[1] == 2:
        ax.contour(g1, g2, pair.posterior_target(flat).reshape(g1.shape), levels=[0.5], colors="k",
                   linestyles="--", linewidths=1)
    if model is not None:
        ax.contour(g1, g2, model.predict_proba(flat)[:, 1].reshape(g1.shape), levels=[0.5], colors="k",
                   linewidths=1.5)
    ax.set(xlim=(-lim, lim), ylim=(-lim, lim), xlabel="x1", ylabel="x2", title=title or pair.kind)
    ax.set_aspect("equal")
