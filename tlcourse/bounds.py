"""The domain-adaptation bound of Ben-David et al. (2010), with every term estimated from data.

Ben-David, Blitzer, Crammer, Kulesza, Pereira and Vaughan (2010), "A theory of learning from
different domains", Machine Learning 79, Theorem 2: for every hypothesis ``h`` in a class ``H``,

    eps_T(h) <= eps_S(h) + 1/2 d_HΔH(S, T) + lambda,      lambda = min_{h' in H} eps_S(h') + eps_T(h')

(the finite-sample complexity terms of the theorem are left out: every term here is measured on
held-out data instead). It says a classifier trained on the source does well on the target when
(1) it does well on the source, (2) no classifier of the "disagreement" class ``HΔH`` can tell the
domains apart, and (3) one classifier of ``H`` does well on *both* domains. The third term is the
one no amount of unlabelled target data can shrink: when the labelling functions conflict,
``lambda`` is large and adaptation cannot work.

The proof is the triangle inequality for disagreement ``eps(h, h') = P(h != h')``::

    eps_T(h) <= eps_T(h*) + eps_T(h, h*)
             <= eps_T(h*) + eps_S(h, h*) + |eps_T(h, h*) - eps_S(h, h*)|
             <= eps_T(h*) + eps_S(h) + eps_S(h*) + 1/2 d_HΔH(S, T)

and ``{x : h(x) != h*(x)}`` is a set of ``HΔH``, which is why the divergence must be measured
with ``HΔH`` and not with ``H`` itself.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import PolynomialFeatures, StandardScaler

from .divergence import _as_feature_matrix, _seeded_clone, proxy_a_distance

__all__ = ["ben_david_bound", "BoundTerms", "bound_over_shifts", "rotated_blobs",
           "default_hypothesis_class", "symmetric_difference_domain_classifier"]


def default_hypothesis_class():
    """``H``: standardised logistic regression (linear decision boundaries)."""
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))


def symmetric_difference_domain_classifier():
    """A domain classifier rich enough for ``HΔH`` when ``H`` is linear.

    A set of ``HΔH`` is where two linear classifiers disagree,
    ``{x : (w1.x + b1)(w2.x + b2) < 0}``: the sign of a *quadratic* function of ``x``. Logistic
    regression on all degree-2 monomials (scikit-learn ``PolynomialFeatures``) therefore contains
    ``HΔH``, while a linear domain classifier only sees ``H``: with it the proxy estimates ``d_H``,
    which can be far below ``d_HΔH`` (e.g. two domains arranged like XOR).
    """
    return make_pipeline(PolynomialFeatures(degree=2, include_bias=False), StandardScaler(),
                         LogisticRegression(class_weight="balanced", max_iter=2000))


@dataclass(frozen=True)
class BoundTerms:
    """Every term of the Ben-David et al. (2010) bound, each measured on held-out data.

    ``source_error``: ``eps_S(h)`` of the source-trained ``h``; ``target_error``: its observed
    ``eps_T(h)``, the quantity the bound bounds; ``proxy_a_distance``: the estimate of
    ``d_HΔH(S, T)`` in [0, 2]; ``lambda_``: ``eps_S(h*) + eps_T(h*)`` of the jointly trained ``h*``,
    itself split into ``joint_source_error`` and ``joint_target_error``; ``bound``:
    ``source_error + proxy_a_distance / 2 + lambda_``.
    """

    source_error: float
    target_error: float
    proxy_a_distance: float
    lambda_: float
    joint_source_error: float
    joint_target_error: float
    bound: float

    @property
    def holds(self) -> bool:
        """Whether the observed target error is within the bound."""
        return self.target_error <= self.bound


def _as_labels(labels, n: int, name: str) -> np.ndarray:
    arr = np.asarray(labels.detach().cpu() if hasattr(labels, "detach") else labels)
    if arr.ndim != 1 or len(arr) != n:
        raise ValueError(f"{name} must have shape ({n},), got {arr.shape}")
    return arr


def ben_david_bound(x_s, y_s, x_t, y_t, classifier=None, seed: int = 0, domain_classifier=None,
                    test_size: float = 0.5) -> BoundTerms:
    """Estimate ``eps_S(h) + 1/2 d_HΔH(S, T) + lambda`` and the observed ``eps_T(h)``.

    Procedure (one seed fixes every split and fit):

    1. Each domain is split once into a training and a held-out part (``test_size`` held out,
       stratified by label).
    2. ``h`` (a clone of ``classifier``) is fitted on the source training part;
       ``source_error`` and ``target_error`` are its errors on the held-out source and target parts
       (the target labels are used only to *measure*, as the bound is about the target error).
    3. ``h*``, a clone of the same classifier, is fitted on the labelled training parts of *both*
       domains; ``lambda_`` is its held-out source error plus held-out target error. ``h*`` only
       approximates ``argmin eps_S + eps_T`` (it minimises a surrogate of the pooled error, and
       weighs the domains by their sizes), but any ``h'`` has ``eps_S(h') + eps_T(h') >= lambda``:
       the estimate can fall below ``lambda`` only through sampling noise in held-out errors.
    4. ``d_HΔH`` is estimated by :func:`tlcourse.divergence.proxy_a_distance` with a domain
       classifier on all inputs (its own stratified half split): the proxy A-distance
       ``2 (1 - 2 err)`` of a classifier trained to tell source from target. For the default
       linear ``H`` the default domain classifier is
       :func:`symmetric_difference_domain_classifier` (quadratic), which contains ``HΔH``; a linear
       domain classifier would estimate ``d_H`` only and can make the "bound" fail (XOR-like
       shifts, e.g. a 90-degree rotation of two centred blobs). With a custom ``classifier``,
       pass a matching ``domain_classifier``; by default a clone of ``classifier`` is used.

    The estimate is not a guarantee: it leaves out the theorem's sample-complexity terms and the
    domain classifier only approximates the supremum over ``HΔH``.

    Args:
        x_s: (n_s, D) source inputs, y_s: (n_s,) labels; x_t: (n_t, D), y_t: (n_t,).
        classifier: scikit-learn classifier defining ``H`` (cloned, never modified); default
            standardised logistic regression.
        seed: seed of every split, and of the classifiers' ``random_state`` where that is unset.
        domain_classifier: classifier for the proxy A-distance (see step 4).
        test_size: held-out fraction of each domain.

    >>> x_s, y_s, x_t, y_t = rotated_blobs(30, seed=0)
    >>> terms = ben_david_bound(x_s, y_s, x_t, y_t)
    >>> terms.holds, terms.target_error > terms.source_error
    (True, True)
    """
    xs, xt = _as_feature_matrix(x_s, "x_s"), _as_feature_matrix(x_t, "x_t")
    if xs.shape[1] != xt.shape[1]:
        raise ValueError(f"x_s and x_t differ in width: {xs.shape[1]} vs {xt.shape[1]}")
    ys, yt = _as_labels(y_s, len(xs), "y_s"), _as_labels(y_t, len(xt), "y_t")
    for name, y in (("y_s", ys), ("y_t", yt)):
        if len(np.unique(y)) < 2:
            raise ValueError(f"{name} holds a single class: the bound needs a classification task")
    if classifier is None:
        hypothesis_class = default_hypothesis_class()
        domain_classifier = (symmetric_difference_domain_classifier() if domain_classifier is None
                             else domain_classifier)
    else:
        hypothesis_class = classifier
        domain_classifier = classifier if domain_classifier is None else domain_classifier

    xs_train, xs_test, ys_train, ys_test = train_test_split(
        xs, ys, test_size=test_size, stratify=ys, random_state=seed)
    xt_train, xt_test, yt_train, yt_test = train_test_split(
        xt, yt, test_size=test_size, stratify=yt, random_state=seed)

    h = _seeded_clone(hypothesis_class, seed).fit(xs_train, ys_train)
    source_error = 1.0 - accuracy_score(ys_test, h.predict(xs_test))
    target_error = 1.0 - accuracy_score(yt_test, h.predict(xt_test))

    h_joint = _seeded_clone(hypothesis_class, seed).fit(np.concatenate([xs_train, xt_train]),
                                          np.concatenate([ys_train, yt_train]))
    joint_source_error = 1.0 - accuracy_score(ys_test, h_joint.predict(xs_test))
    joint_target_error = 1.0 - accuracy_score(yt_test, h_joint.predict(xt_test))
    lambda_ = joint_source_error + joint_target_error

    pad = proxy_a_distance(xs, xt, seed=seed, classifier=domain_classifier).distance
    return BoundTerms(source_error=float(source_error), target_error=float(target_error),
                      proxy_a_distance=pad, lambda_=float(lambda_),
                      joint_source_error=float(joint_source_error),
                      joint_target_error=float(joint_target_error),
                      bound=float(source_error + 0.5 * pad + lambda_))


def bound_over_shifts(make_domains: Callable[..., tuple], shifts: Sequence, seed: int = 0,
                      **bound_kwargs) -> pd.DataFrame:
    """Evaluate :func:`ben_david_bound` along a family of shifts, one row per shift.

    ``make_domains(shift, seed=seed)`` must return ``(x_s, y_s, x_t, y_t)``, e.g. :func:`rotated_blobs`
    (``shift`` = rotation angle in degrees). The same ``seed`` is used for every shift (common random
    numbers), so the rows differ by the shift alone and the curves are smooth. ``bound_kwargs`` go to
    :func:`ben_david_bound` (``classifier``, ``domain_classifier``, ``test_size``).

    Returns:
        A DataFrame with columns ``shift`` and every :class:`BoundTerms` field, plus ``holds``;
        plot ``bound`` beside ``target_error`` against ``shift``.

    >>> table = bound_over_shifts(rotated_blobs, [0, 90], seed=0)
    >>> list(table.columns[:5])
    ['shift', 'source_error', 'target_error', 'proxy_a_distance', 'lambda_']
    >>> bool(table.holds.all())
    True
    """
    rows = []
    for shift in shifts:
        terms = ben_david_bound(*make_domains(shift, seed=seed), seed=seed, **bound_kwargs)
        rows.append({"shift": shift, **asdict(terms), "holds": terms.holds})
    return pd.DataFrame(rows)


def rotated_blobs(angle_degrees: float, n_per_class: int = 200, separation: float = 3.0,
                  noise: float = 1.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Two Gaussian classes in 2-D; the target domain is a fresh sample rotated about the origin.

    Class 0 is centred at ``(-separation / 2, 0)``, class 1 at ``(+separation / 2, 0)``, both with
    isotropic standard deviation ``noise``. The target sample is drawn the same way and rotated
    counter-clockwise by ``angle_degrees``, labels kept: at 0 degrees the domains are identical, at
    90 they form an XOR-like cross, at 180 the target labels are the mirror image of the source's.

    Returns:
        ``x_s`` (2 n, 2) float64, ``y_s`` (2 n,) int64, ``x_t``, ``y_t`` likewise.

    >>> x_s, y_s, x_t, y_t = rotated_blobs(180, n_per_class=2, noise=0.0)
    >>> x_s[y_s == 1][0].tolist(), np.round(x_t[y_t == 1][0], 6).tolist()
    ([1.5, 0.0], [-1.5, 0.0])
    """
    if n_per_class < 2:
        raise ValueError(f"n_per_class must be at least 2, got {n_per_class}")
    rng = np.random.default_rng(seed)
    labels = np.repeat([0, 1], n_per_class)
    centres = np.array([[-separation / 2, 0.0], [separation / 2, 0.0]])

    def sample():
        return centres[labels] + noise * rng.normal(size=(len(labels), 2))

    x_s, x_t = sample(), sample()
    theta = np.deg2rad(angle_degrees)
    rotation = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    return x_s, labels.copy(), x_t @ rotation.T, labels.copy()
