"""Transferability: scoring a source model for a target task *without* fine-tuning it.

Fine-tuning every candidate in a model zoo is expensive. A transferability score looks at one
forward pass of the source model over the (labelled) target data and predicts how well the model
would transfer. Two families:

- scores from the source model's *predictions* on target inputs, which read the source head as a
  soft or hard "dummy label" ``z``: :func:`leep` (Nguyen et al., 2020) and :func:`nce`
  (Tran et al., 2019);
- scores from the source model's *features* ``f(x)``: :func:`h_score` (Bao et al., 2019) and
  :func:`logme` (You et al., 2021).

Every function accepts numpy arrays or torch tensors (any device, any dtype) and computes in float64
numpy: the scores are statistics of a data set, not parts of a training graph. Target labels are
integers ``0..K-1``; a target with a single class raises ``ValueError``, because every score is then
trivially perfect and the number would mean nothing.

Shapes: ``n`` target examples, ``Z`` source classes, ``K`` target classes, ``D`` feature width.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.covariance import ledoit_wolf_shrinkage
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics.cluster import contingency_matrix

__all__ = ["leep", "nce", "h_score", "logme", "bayesian_linear_evidence", "EvidenceFit",
           "spearman_permutation"]

_ROW_SUM_TOL = 1e-4  # float32 softmax outputs sum to 1 within ~1e-6; 1e-4 still catches logits
_PINV_RCOND = 1e-10  # covariance eigenvalues below this fraction of the largest count as zero


# --------------------------------------------------------------------------- input checks
def _to_numpy(x, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.is_floating_point():  # bfloat16/float16 have no numpy twin; float64 is what we use
            x = x.to(torch.float64)
        return x.numpy()
    try:
        return np.asarray(x)
    except Exception as err:  # ragged lists and the like
        raise ValueError(f"{name} cannot be read as an array: {err}") from err


def _as_matrix(x, name: str) -> np.ndarray:
    """``x`` as a finite float64 array (n, D) with n >= 1."""
    arr = _to_numpy(x, name)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n, D), got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape})")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        row = int(np.argwhere(~np.isfinite(arr))[0, 0])
        raise ValueError(f"{name} must be finite (row {row} holds NaN or inf)")
    return arr


def _as_labels(labels, name: str, n: int | None = None, min_classes: int = 1) -> np.ndarray:
    """``labels`` as int64 (n,) with values in 0..K-1; ``n`` is the length they must have."""
    arr = _to_numpy(labels, name)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (n,), got shape {arr.shape}")
    if len(arr) == 0:
        raise ValueError(f"{name} is empty")
    if n is not None and len(arr) != n:
        raise ValueError(f"{name} has {len(arr)} entries but there are {n} examples")
    if arr.dtype == bool:
        arr = arr.astype(np.int64)
    if not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{name} must be integers 0..K-1, got dtype {arr.dtype}")
    if not np.issubdtype(arr.dtype, np.integer):
        bad = ~np.isfinite(arr) | (arr != np.round(arr))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"{name} must be integers 0..K-1 (entry {i} is {arr[i]})")
    arr = arr.astype(np.int64)
    if arr.min() < 0:
        i = int(np.argmin(arr))
        raise ValueError(f"{name} out of range: labels must be 0..K-1 (entry {i} is {arr[i]})")
    if len(np.unique(arr)) < min_classes:
        raise ValueError(f"{name} hold a single class: a transferability score needs at least two")
    return arr


def _as_probabilities(probs, name: str) -> tuple[np.ndarray, np.ndarray]:
    """``probs`` as float64 (n, Z) checked to hold distributions, and its row sums (n,).

    The rows are not renormalised here (that would copy the whole matrix); callers divide by the
    sums where the rows enter. The common case of valid input costs two passes (a minimum and the
    row sums) and, for float64 numpy input, no copy: NaN and inf make a row sum fail its check,
    and only then do the slower checks run to name the problem.
    """
    p = _to_numpy(probs, name)
    if p.ndim == 2 and p.size and p.dtype in (np.float64, np.float32, np.float16):
        p = p.astype(np.float64, copy=False)
        sums = p.sum(axis=1)
        if np.abs(sums - 1.0).max() <= _ROW_SUM_TOL and p.min() >= 0:  # False for any NaN
            return p, sums
    p = _as_matrix(p, name)
    if (p < 0).any():
        row, col = (int(i) for i in np.argwhere(p < 0)[0])
        raise ValueError(f"{name} must be non-negative (row {row}, column {col} is {p[row, col]:.6g})")
    sums = p.sum(axis=1)
    bad = np.abs(sums - 1.0) > _ROW_SUM_TOL
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{name} rows must sum to 1 (row {row} sums to {sums[row]:.6g}); "
                         "pass softmax outputs, not logits")
    return p, sums


# --------------------------------------------------------------------------- LEEP and NCE
def leep(source_probs, target_labels) -> float:
    """Log Expected Empirical Prediction (Nguyen et al., 2020, "LEEP: A New Measure to Evaluate
    Transferability of Learned Representations", ICML).

    The source head's softmax ``theta(x_i)`` is read as a soft dummy label ``z`` over the ``Z``
    source classes. With ``y_i`` the target labels::

        P(y, z) = (1/n) sum_i theta(x_i)_z [y_i = y]          empirical joint, (K, Z)
        P(y | z) = P(y, z) / P(z),   P(z) = sum_y P(y, z)      conditional, (K, Z)
        LEEP = (1/n) sum_i log( sum_z P(y_i | z) theta(x_i)_z )

    i.e. the mean log-likelihood of the target labels under the "expected empirical predictor"
    that maps the source prediction to the target label space through ``P(y | z)``. LEEP <= 0;
    it is 0 exactly when that predictor is certain and right on every example (e.g. one-hot
    ``theta`` and a one-to-one map from source to target classes), and for an uninformative
    (uniform) ``theta`` it equals ``sum_y P(y) log P(y)``, minus the entropy of the labels.
    Source classes that receive no probability mass (``P(z) = 0``) contribute nothing.

    Args:
        source_probs: (n, Z) softmax outputs of the source model on the target inputs; every row
            must be non-negative and sum to 1 within 1e-4 (rows are then renormalised exactly).
        target_labels: (n,) integers in ``0..K-1`` with at least two distinct classes.

    Returns:
        LEEP as a float (higher, i.e. closer to 0, predicts better transfer).

    Raises:
        ValueError: rows that do not sum to 1 (naming the row and its sum), negative or
            non-finite probabilities, empty input, length mismatch, labels that are negative,
            fractional or a single class.

    >>> theta = np.array([[0.9, 0.1], [0.8, 0.2], [0.1, 0.9], [0.3, 0.7]])
    >>> round(leep(theta, [0, 0, 1, 1]), 4)
    -0.3426
    >>> leep(np.eye(3)[[2, 0, 1, 2]], [0, 1, 2, 0])   # one-to-one mapping z -> y: perfect
    0.0
    """
    probs, sums = _as_probabilities(source_probs, "source_probs")
    n = len(probs)
    y = _as_labels(target_labels, "target_labels", n=n, min_classes=2)
    # theta = probs / sums renormalises the <= 1e-4 slack away (keeping LEEP <= 0 exactly rather
    # than up to round-off); the 1/sums is folded into the small factors instead of copying probs.
    weights = np.zeros((y.max() + 1, n))                 # (K, n): [y_i = y] / (n sums_i)
    weights[y, np.arange(n)] = 1.0 / (n * sums)
    joint = weights @ probs                              # (K, Z)
    marginal_z = joint.sum(axis=0)                       # (Z,)
    conditional = np.divide(joint, marginal_z, out=np.zeros_like(joint), where=marginal_z > 0)
    # sum_z P(y|z) theta(x_i)_z for every y (a BLAS product), then the observed y_i's entry.
    # It is > 0: the example's own mass enters P(y_i, z) for every z with theta(x_i)_z > 0.
    likelihood = (probs @ conditional.T)[np.arange(n), y] / sums
    return float(np.mean(np.log(likelihood)))


def nce(source_labels, target_labels) -> float:
    """Negative Conditional Entropy (Tran et al., 2019, "Transferability and Hardness of
    Supervised Classification Tasks", ICCV).

    From hard source predictions ``z_i`` (e.g. ``source_probs.argmax(1)``) and target labels
    ``y_i``, with the empirical joint ``P(y, z)`` of the pairs (a contingency table from
    scikit-learn)::

        NCE = -H(Y | Z) = sum_{y, z} P(y, z) log P(y | z),   P(y | z) = P(y, z) / P(z)

    ``-H(Y) <= NCE <= 0``: 0 when ``z`` determines ``y`` (every source class maps to a single
    target class), ``-H(Y)`` when ``z`` says nothing about ``y`` (independent). In nats.

    Args:
        source_labels: (n,) integer source-class predictions.
        target_labels: (n,) integer target labels ``0..K-1``, at least two classes.

    >>> nce([0, 0, 1, 1, 2, 2], [1, 1, 0, 0, 0, 0])    # z determines y
    0.0
    >>> round(nce([0, 1, 0, 1], [0, 0, 1, 1]), 4)       # independent: -H(Y) = -log 2
    -0.6931
    """
    y = _as_labels(target_labels, "target_labels", min_classes=2)
    if np.ndim(_to_numpy(source_labels, "source_labels")) == 2:
        raise ValueError("source_labels must be hard labels (n,); for probabilities pass "
                         "source_probs.argmax(1), or use leep()")
    z = _as_labels(source_labels, "source_labels", n=len(y))
    joint = contingency_matrix(y, z).astype(np.float64)  # (K present, Z present), counts
    joint /= joint.sum()
    marginal_z = joint.sum(axis=0, keepdims=True)
    mask = joint > 0  # 0 log 0 = 0
    return float(np.sum(joint[mask] * np.log((joint / marginal_z)[mask])))


# --------------------------------------------------------------------------- H-score
def h_score(features, target_labels, shrinkage: float | str = 0.0) -> float:
    """H-score (Bao et al., 2019, "An Information-Theoretic Approach to Transferability in Task
    Transfer Learning", ICIP).

    How much of the feature covariance is explained by the class means::

        H(f) = tr( cov(f)^+  cov(E[f | y]) )

    where ``E[f | y]`` replaces each example's feature vector by the mean of its class, and both
    covariances use the 1/n normalisation. By the law of total covariance
    ``cov(f) = cov(E[f|y]) + E[cov(f|y)]``, so ``0 <= H <= min(D, K - 1)``; higher is better.

    Stability: ``cov(f)^+`` is the Moore-Penrose pseudo-inverse, with eigenvalues below 1e-10 of
    the largest treated as zero, so constant or collinear features are allowed. When ``D >= n - 1``
    the sample covariance is rank-deficient in a way that makes H saturate at ``K - 1`` for *any*
    features; ``shrinkage`` then helps (Ibrahim et al., 2022, "Newer is not always better:
    Rethinking transferability metrics, their peculiarities, stability and performance"), whose
    regularised H-score shrinks the feature covariance and scales the between-class one alike::

        H_s(f) = tr( ((1 - s) cov(f) + s (tr cov(f) / D) I)^+  (1 - s) cov(E[f | y]) )

    with ``s = shrinkage`` in [0, 1] or, for ``shrinkage="ledoit-wolf"``, the Ledoit-Wolf estimate
    from scikit-learn. The ``(1 - s)`` on ``cov(E[f|y])`` keeps the bound: ``(1 - s) cov(E[f|y])``
    is dominated by ``(1 - s) cov(f)``, hence by the shrunk covariance, so still
    ``0 <= H_s <= min(D, K - 1)`` (and ``H_s = 0`` at ``s = 1``, where the features are ignored).

    Args:
        features: (n, D) source-model features of the target inputs.
        target_labels: (n,) integers ``0..K-1``, at least two classes.
        shrinkage: 0 (plain pseudo-inverse, the paper's score), a float in (0, 1], or
            ``"ledoit-wolf"``.

    >>> rng = np.random.default_rng(0)
    >>> y = np.repeat([0, 1], 50)
    >>> separable = np.c_[3.0 * y, np.zeros(100)] + rng.normal(size=(100, 2))
    >>> round(h_score(separable, y), 2), round(h_score(rng.normal(size=(100, 2)), y), 2)
    (0.7, 0.07)
    """
    f = _as_matrix(features, "features")
    y = _as_labels(target_labels, "target_labels", n=len(f), min_classes=2)
    if len(f) < 2:
        raise ValueError("h_score needs at least two examples to estimate a covariance")
    f = f - f.mean(axis=0)
    cov_f = f.T @ f / len(f)
    if isinstance(shrinkage, str):
        if shrinkage != "ledoit-wolf":
            raise ValueError(f"shrinkage must be a float in [0, 1] or 'ledoit-wolf', got {shrinkage!r}")
        shrinkage = float(ledoit_wolf_shrinkage(f, assume_centered=True))
    if not 0.0 <= shrinkage <= 1.0:
        raise ValueError(f"shrinkage must be in [0, 1], got {shrinkage}")
    if shrinkage > 0:
        mu = np.trace(cov_f) / cov_f.shape[0]
        cov_f = (1.0 - shrinkage) * cov_f + shrinkage * mu * np.eye(cov_f.shape[0])
    classes, index = np.unique(y, return_inverse=True)
    class_means = np.zeros((len(classes), f.shape[1]))
    np.add.at(class_means, index, f)
    class_means /= np.bincount(index)[:, None]
    g = class_means[index]  # each example replaced by its class mean; already centred
    # Ibrahim et al. scale the between-class covariance by (1 - s) too; without it the shrunk
    # score exceeds K - 1 (e.g. 4/3 for two classes in one feature and s = 0.5).
    cov_g = (1.0 - shrinkage) * (g.T @ g) / len(g)
    return float(np.trace(np.linalg.pinv(cov_f, rcond=_PINV_RCOND, hermitian=True) @ cov_g))


# --------------------------------------------------------------------------- LogME
@dataclass(frozen=True)
class EvidenceFit:
    """Bayesian linear regression ``t = f w + eps`` with its evidence maximised over ``alpha, beta``.

    ``alpha``: prior precision of ``w ~ N(0, alpha^-1 I)``; ``beta``: noise precision;
    ``log_evidence``: ``log p(t | f, alpha, beta)`` in nats (not divided by n); ``n_iter``: fixed-point
    iterations run; ``converged``: whether the evidence per example settled to within ``tol``.
    """

    alpha: float
    beta: float
    log_evidence: float
    n_iter: int
    converged: bool


def _fit_evidence_svd(sq_sing, z, t_perp_sq, n, D, tol, max_iter) -> EvidenceFit:
    """MacKay's fixed point in the SVD basis ``f = U diag(s) V^T``: ``z = U^T t``, ``sq_sing = s**2``,
    ``t_perp_sq = ||t - U z||^2`` (the part of ``t`` that no weight vector can reach)."""
    tiny = 1e-300  # guards 0/0 when t is orthogonal to, or exactly inside, the span of f
    huge = 1e100   # a precision this large means the maximum is at infinity: stop before overflow

    def terms(alpha, beta):
        denom = alpha + beta * sq_sing
        gamma = float(np.sum(beta * sq_sing / denom))                 # effective number of params
        m_sq = float(np.sum(beta**2 * sq_sing * z**2 / denom**2))     # m^T m, m = beta A^-1 f^T t
        resid_sq = t_perp_sq + float(np.sum((alpha / denom) ** 2 * z**2))  # ||t - f m||^2
        # A = alpha I + beta f^T f has eigenvalues alpha + beta s_i^2, and alpha for the D - r
        # directions that f does not reach.
        log_det_a = float(np.sum(np.log(denom))) + (D - len(sq_sing)) * math.log(alpha)
        log_evidence = (n / 2 * math.log(beta) + D / 2 * math.log(alpha) - n / 2 * math.log(2 * math.pi)
                        - beta / 2 * resid_sq - alpha / 2 * m_sq - log_det_a / 2)
        return gamma, m_sq, resid_sq, log_evidence

    alpha, beta, converged, n_iter = 1.0, 1.0, False, 0
    gamma, m_sq, resid_sq, log_evidence = terms(alpha, beta)
    for n_iter in range(1, max_iter + 1):
        new_alpha = gamma / max(m_sq, tiny)
        new_beta = (n - gamma) / max(resid_sq, tiny)
        if not (1 / huge < new_alpha < huge and 1 / huge < new_beta < huge):
            break  # keep the last consistent (alpha, beta, L); converged stays False
        alpha, beta = new_alpha, new_beta
        previous = log_evidence
        gamma, m_sq, resid_sq, log_evidence = terms(alpha, beta)
        # The test is on the evidence, not on alpha: when f says nothing about t the maximum lies
        # at alpha = inf (w = 0), and alpha keeps growing while the evidence settles.
        converged = abs(log_evidence - previous) <= tol * n
        if converged:
            break
    return EvidenceFit(alpha=alpha, beta=beta, log_evidence=log_evidence, n_iter=n_iter,
                       converged=converged)


def _spectral_projection(f: np.ndarray, targets: np.ndarray):
    """The parts of the thin SVD ``f = U diag(s) V^T`` that the evidence needs, for (n, K) ``targets``.

    Returns ``sq_sing = s**2`` (r,), ``z = U^T t`` (r, K) and ``t_perp_sq = ||t - U z||^2`` (K,)
    for the ``r`` directions with ``s**2 > max(s**2) max(n, D) eps`` (the numerical rank, as in
    ``np.linalg.matrix_rank``; what the other directions hold of ``t`` enters ``t_perp_sq``, which
    leaves the evidence unchanged to round-off).

    No SVD of ``f`` is taken: the eigendecomposition of the smaller Gram matrix gives the same
    spectrum at a fraction of the cost (O(n D min(n, D)) for the product, O(min(n, D)^3) for
    ``eigh``). When ``n >= D``, ``f^T f = V diag(s**2) V^T``, so ``z = diag(1/s) V^T f^T t``, and
    the residual is taken directly as ``t - f w`` with the least-squares weights
    ``w = V diag(1/s) z``, never as ``||t||^2 - ||z||^2``, which cancels catastrophically when ``t``
    is nearly in the span of ``f``. When ``n < D``, ``f f^T = U diag(s**2) U^T`` gives ``U`` itself.
    """
    n, D = f.shape
    wide = n < D
    gram = f @ f.T if wide else f.T @ f
    eigval, eigvec = np.linalg.eigh(gram)  # ascending
    if not eigval[-1] > 0:
        raise ValueError("features are all zero: the evidence of a linear model on them is undefined")
    keep = eigval > eigval[-1] * max(n, D) * np.finfo(np.float64).eps
    sq_sing, eigvec = eigval[keep], eigvec[:, keep]
    if wide:
        z = eigvec.T @ targets                           # eigvec is U
        resid = targets - eigvec @ z
    else:
        sing = np.sqrt(sq_sing)
        z = (eigvec.T @ (f.T @ targets)) / sing[:, None]  # eigvec is V
        resid = targets - f @ (eigvec @ (z / sing[:, None]))
    return sq_sing, z, np.einsum("nk,nk->k", resid, resid)


def bayesian_linear_evidence(features, targets, tol: float = 1e-8, max_iter: int = 1000) -> EvidenceFit:
    """Maximise the evidence of Bayesian linear regression over its two precisions (MacKay, 1992).

    Model ``t = f w + eps`` with ``w ~ N(0, alpha^-1 I_D)`` and ``eps ~ N(0, beta^-1 I_n)``. With
    ``A = alpha I + beta f^T f`` and posterior mean ``m = beta A^-1 f^T t`` the log evidence is::

        L = n/2 log beta + D/2 log alpha - n/2 log 2pi - beta/2 ||t - f m||^2
            - alpha/2 m^T m - 1/2 log|A|

    maximised by iterating, from ``alpha = beta = 1``,
    ``gamma = sum_i beta s_i^2 / (alpha + beta s_i^2)``, ``alpha = gamma / m^T m``,
    ``beta = (n - gamma) / ||t - f m||^2`` with the singular values ``s_i`` of ``f`` (read off the
    eigendecomposition of the smaller of ``f^T f`` and ``f f^T``, O(n D min(n, D)); then each
    iteration costs O(min(n, D))). Stops when ``L / n`` changes by less
    than ``tol`` between iterations, and warns with ``ConvergenceWarning`` when it stops otherwise
    (after ``max_iter`` iterations, or when a precision passes 1e100 on its way to infinity), e.g.
    when ``t`` lies exactly in the span of ``f`` and ``beta`` grows without bound.
    The test is on ``L`` rather than on the precisions because, for features that say nothing
    about ``t``, the maximum lies at ``alpha = inf`` (``w = 0``): ``alpha`` keeps growing while
    ``L`` settles to its limit.
    No bias column is added: append a column of ones to ``features`` if you want one.

    Args:
        features: (n, D); targets: (n,) real-valued.

    >>> rng = np.random.default_rng(0)
    >>> f = rng.normal(size=(50, 3)); t = f @ [1.0, -2.0, 0.5] + 0.1 * rng.normal(size=50)
    >>> fit = bayesian_linear_evidence(f, t)
    >>> fit.converged, round(1 / fit.beta ** 0.5, 2)   # the noise level is recovered
    (True, 0.1)
    """
    f = _as_matrix(features, "features")
    t = _to_numpy(targets, "targets")
    if t.ndim != 1 or len(t) != len(f):
        raise ValueError(f"targets must have shape ({len(f)},), got {t.shape}")
    t = t.astype(np.float64)
    if not np.all(np.isfinite(t)):
        raise ValueError("targets must be finite")
    if tol <= 0 or max_iter < 1:
        raise ValueError(f"need tol > 0 and max_iter >= 1, got tol={tol}, max_iter={max_iter}")
    sq_sing, z, t_perp_sq = _spectral_projection(f, t[:, None])
    fit = _fit_evidence_svd(sq_sing, z[:, 0], float(t_perp_sq[0]), len(f), f.shape[1], tol, max_iter)
    if not fit.converged:
        warnings.warn(f"evidence maximisation did not converge after {fit.n_iter} iterations "
                      f"(max_iter={max_iter}, alpha={fit.alpha:.3g}, beta={fit.beta:.3g}); a growing beta "
                      "means t lies in the span of the features", ConvergenceWarning, stacklevel=2)
    return fit


def logme(features, target_labels, tol: float = 1e-8, max_iter: int = 1000) -> float:
    """LogME (You et al., 2021, "LogME: Practical Assessment of Pre-trained Models for Transfer
    Learning", ICML).

    For each target class ``k`` present, the one-hot column ``t_k = [y == k]`` (n,) is regressed
    on the features by Bayesian linear regression; its log evidence, maximised over the prior
    precision ``alpha`` and noise precision ``beta`` (see :func:`bayesian_linear_evidence` for the
    formula and the fixed-point iteration), measures how well the features explain the labels
    with no risk of overfitting. LogME is the mean over classes of ``L_k / n``; higher is better.
    The score is not bounded: compare models on the same target data only.

    Args:
        features: (n, D) source-model features of the target inputs (not standardised).
        target_labels: (n,) integers ``0..K-1``, at least two classes.
        tol, max_iter: stop when the evidence per example changes by less than ``tol``; after
            ``max_iter`` iterations a ``ConvergenceWarning`` names the classes that did not converge.

    >>> rng = np.random.default_rng(0)
    >>> y = np.repeat([0, 1, 2], 30)
    >>> informative = np.eye(3)[y] + 0.3 * rng.normal(size=(90, 3))
    >>> logme(informative, y) > logme(rng.normal(size=(90, 3)), y)
    True
    """
    f = _as_matrix(features, "features")
    y = _as_labels(target_labels, "target_labels", n=len(f), min_classes=2)
    if tol <= 0 or max_iter < 1:
        raise ValueError(f"need tol > 0 and max_iter >= 1, got tol={tol}, max_iter={max_iter}")
    n, D = f.shape
    classes = np.unique(y)  # absent classes would give t = 0, for which the evidence is degenerate
    onehot = (y[:, None] == classes).astype(np.float64)  # (n, K present)
    sq_sing, z, t_perp_sq = _spectral_projection(f, onehot)  # one decomposition for all classes
    evidences, not_converged = [], []
    for j, k in enumerate(classes):
        fit = _fit_evidence_svd(sq_sing, z[:, j], float(t_perp_sq[j]), n, D, tol, max_iter)
        evidences.append(fit.log_evidence / n)
        if not fit.converged:
            not_converged.append(int(k))
    if not_converged:
        warnings.warn(f"LogME: evidence maximisation did not converge for classes {not_converged} "
                      f"(max_iter={max_iter}); the features may fit those one-hot columns exactly",
                      ConvergenceWarning, stacklevel=2)
    return float(np.mean(evidences))


def spearman_permutation(scores, outcomes, n_perm: int = 20000, seed: int = 0) -> tuple[float, float]:
    """Spearman rank correlation of ``scores`` with ``outcomes`` and its two-sided permutation p-value.

    This is how a transferability measure is judged: over m source/target pairs, does its ranking
    agree with the accuracy that transfer actually reached? ``rho`` is
    :func:`scipy.stats.spearmanr` (Pearson correlation of the ranks, ties averaged). The p-value is
    the fraction of orderings of ``outcomes`` whose ``|rho|`` is at least the observed one: exact
    over all m! orderings when m <= 8, otherwise over ``n_perm`` random permutations drawn from
    ``np.random.default_rng(seed)`` plus the observed one ((hits + 1) / (n_perm + 1)). With few
    pairs the evidence is thin: for m = 5 even a perfect ranking has p = 2/120 = 0.017, and
    rho = 0.8 has p = 0.13. Shapes: (m,) and (m,), m >= 3.

    >>> rho, p = spearman_permutation([1, 2, 3, 4, 5], [0.1, 0.2, 0.3, 0.4, 0.5])
    >>> round(rho, 3), round(p, 4)
    (1.0, 0.0167)
    """
    from itertools import permutations

    from scipy.stats import rankdata

    a, b = np.asarray(scores, dtype=np.float64), np.asarray(outcomes, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(a) < 3:
        raise ValueError(f"need two 1-D arrays of the same length >= 3, got shapes {a.shape} and {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("scores and outcomes must be finite; drop the pairs where a measure failed")
    ra, rb = rankdata(a), rankdata(b)
    if ra.std() == 0 or rb.std() == 0:
        raise ValueError("a rank correlation needs at least two distinct values in each array")
    za, zb = (ra - ra.mean()) / ra.std(), (rb - rb.mean()) / rb.std()
    m = len(a)
    rho = float(za @ zb / m)
    if m <= 8:
        orders = np.array(list(permutations(range(m))))
        null = zb[orders] @ za / m
        return rho, float(np.mean(np.abs(null) >= abs(rho) - 1e-12))
    rng = np.random.default_rng(seed)
    null = np.array([zb[rng.permutation(m)] @ za / m for _ in range(n_perm)])
    return rho, float((np.sum(np.abs(null) >= abs(rho) - 1e-12) + 1) / (n_perm + 1))
