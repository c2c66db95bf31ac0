"""Model selection without target labels: importance-weighted validation and DEV.

Unsupervised domain adaptation has no labelled target data, so the target risk
``R_T(h) = E_T[l(h(x), y)]`` of a candidate model ``h`` (a DANN lambda, an epoch) cannot be
measured directly. Under covariate shift (``P_S(y | x) = P_T(y | x)``) it equals an importance-
weighted *source* risk (Sugiyama, Krauledat & Mueller, 2007, "Covariate shift adaptation by
importance weighted cross validation", JMLR 8):

    R_T(h) = E_S[w(x) l(h(x), y)],    w(x) = p_T(x) / p_S(x)

**Density ratio by a domain classifier.** With a probabilistic classifier ``d(x) = P(target | x)``
trained on ``n_s`` source and ``n_t`` target inputs, Bayes' rule gives
``w(x) = (n_s / n_t) * d(x) / (1 - d(x))`` (:func:`density_ratio`).

**DEV** (Deep Embedded Validation; You, Wang, Long & Jordan, 2019, "Towards accurate model selection
in deep unsupervised domain adaptation", ICML) does this in the model's own *feature* space and
adds a control variate: with ``L_i = w_i l_i`` on the labelled source-validation examples,

    eta  = - Cov(L, w) / Var(w)
    R_DEV = mean(L) + eta * mean(w) - eta                                  (:func:`dev_risk`)

Because ``E_S[w] = 1``, the correction has mean zero; it removes the part of ``mean(L)``'s variance
that is explained by ``mean(w)``, which matters when a few weights are large. The plain IWCV
estimate is ``mean(L)`` (:func:`iwcv_risk`). Lower is better for both. :func:`dev_score` does the
whole pipeline for one candidate from its features and losses.

Caveats: both estimates assume covariate shift and a density ratio that the classifier can
estimate; when the features separate the domains almost perfectly the weights explode and the
estimate becomes noisy. They rank candidates; they do not measure target accuracy.

>>> w = np.array([0.5, 1.5, 1.0, 2.0]); losses = np.array([1.0, 3.0, 2.0, 2.0])
>>> iwcv_risk(w, losses), round(dev_risk(w, losses), 4)     # mean(w) = 1.25 > 1: DEV corrects it
(2.75, 2.1)
"""
from __future__ import annotations

import numpy as np

__all__ = ["density_ratio", "iwcv_risk", "dev_risk", "dev_score"]


def _vector(x, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=float)
    if a.ndim != 1 or len(a) < 2:
        raise ValueError(f"{name} must be a 1-D array of at least two values, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} must be finite")
    return a


def _pair(weights, losses) -> tuple[np.ndarray, np.ndarray]:
    w, l = _vector(weights, "weights"), _vector(losses, "losses")
    if w.shape != l.shape:
        raise ValueError(f"weights and losses must have the same length, got {len(w)} and {len(l)}")
    if (w < 0).any():
        raise ValueError("importance weights must be >= 0")
    return w, l


def iwcv_risk(weights, losses) -> float:
    """Importance-weighted validation risk ``mean(w * l)`` (Sugiyama et al., 2007).

    >>> iwcv_risk([1.0, 1.0], [0.2, 0.4])
    0.30000000000000004
    """
    w, l = _pair(weights, losses)
    return float(np.mean(w * l))


def dev_risk(weights, losses) -> float:
    """DEV risk ``mean(L) + eta * mean(w) - eta``, ``L = w * l``, ``eta = -Cov(L, w) / Var(w)`` (You et al., 2019).

    With constant weights (no shift seen) ``Var(w) = 0``; eta is then 0 and DEV is ``mean(L)``.

    >>> dev_risk([1.0, 1.0, 1.0], [0.1, 0.2, 0.3])
    0.20000000000000004
    """
    w, l = _pair(weights, losses)
    weighted = w * l
    var = np.var(w, ddof=1)
    eta = 0.0 if var == 0 else -np.cov(weighted, w, ddof=1)[0, 1] / var
    return float(weighted.mean() + eta * w.mean() - eta)


def density_ratio(source_features, target_features, eval_features, seed: int = 0, C: float = 1.0) -> np.ndarray:
    """``w(x) = p_T(x) / p_S(x)`` at ``eval_features`` from a logistic-regression domain classifier.

    The classifier (standardised inputs, L2 penalty ``C``) is trained on ``source_features``
    (n_s, D) against ``target_features`` (n_t, D); then ``w = (n_s / n_t) * d / (1 - d)`` with
    ``d = P(target | x)`` at ``eval_features`` (m, D). Keep ``eval_features`` (the labelled source
    validation set) out of the classifier's training data. Returns (m,) weights.

    >>> rng = np.random.default_rng(0)
    >>> s, t = rng.normal(0, 1, (400, 1)), rng.normal(1, 1, (400, 1))
    >>> w = density_ratio(s, t, np.array([[-1.0], [0.5], [2.0]]))
    >>> bool(w[0] < w[1] < w[2])          # the true ratio is exp(x - 0.5), increasing in x
    True
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    fs, ft, fe = (np.asarray(f, dtype=float) for f in (source_features, target_features, eval_features))
    if not (fs.ndim == ft.ndim == fe.ndim == 2 and fs.shape[1] == ft.shape[1] == fe.shape[1]):
        raise ValueError(f"features must be 2-D with the same width, got {fs.shape}, {ft.shape}, {fe.shape}")
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000, random_state=seed))
    clf.fit(np.concatenate([fs, ft]), np.r_[np.zeros(len(fs)), np.ones(len(ft))])
    d = np.clip(clf.predict_proba(fe)[:, 1], 1e-6, 1 - 1e-6)
    return (len(fs) / len(ft)) * d / (1 - d)


def dev_score(source_train_features, target_features, source_val_features, source_val_losses,
              seed: int = 0) -> dict[str, float]:
    """DEV and IWCV for one candidate model: ``{"dev", "iwcv", "max_weight"}`` (lower risk = better).

    Features are the candidate's own (its feature extractor on each split); ``source_val_losses``
    its per-example losses (cross-entropy) on the labelled source-validation images.
    """
    w = density_ratio(source_train_features, target_features, source_val_features, seed=seed)
    return {"dev": dev_risk(w, source_val_losses), "iwcv": iwcv_risk(w, source_val_losses),
            "max_weight": float(w.max())}
