import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import BayesianRidge
from sklearn.metrics import mutual_info_score

from tlcourse.transferability import (_fit_evidence_svd, _spectral_projection, bayesian_linear_evidence, h_score,
                                     leep, logme, nce)


def _softmax_rows(rng, n, z):
    logits = rng.normal(size=(n, z)) * 2
    p = np.exp(logits - logits.max(1, keepdims=True))
    return p / p.sum(1, keepdims=True)


def _label_entropy(y):
    p = np.bincount(y) / len(y)
    p = p[p > 0]
    return -float(np.sum(p * np.log(p)))


# --------------------------------------------------------------------------- LEEP
def test_leep_matches_a_loop_over_its_definition():
    rng = np.random.default_rng(3)
    n, n_source, n_target = 9, 4, 3
    theta = _softmax_rows(rng, n, n_source)
    y = rng.integers(0, n_target, size=n)
    y[:n_target] = np.arange(n_target)

    joint = np.zeros((n_target, n_source))
    for i in range(n):
        for z in range(n_source):
            joint[y[i], z] += theta[i, z] / n
    expected = 0.0
    for i in range(n):
        eep = 0.0
        for z in range(n_source):
            p_z = sum(joint[k, z] for k in range(n_target))
            eep += joint[y[i], z] / p_z * theta[i, z]
        expected += math.log(eep) / n
    assert leep(theta, y) == pytest.approx(expected, abs=1e-12)


def test_leep_of_a_one_to_one_mapping_is_zero():
    rng = np.random.default_rng(0)
    z = rng.integers(0, 5, size=40)
    z[:5] = np.arange(5)
    permutation = np.array([3, 0, 4, 1, 2])
    assert abs(leep(np.eye(5)[z], permutation[z])) <= 1e-12
    # Extra source classes that never fire change nothing.
    theta = np.zeros((40, 7))
    theta[np.arange(40), z] = 1.0
    assert abs(leep(theta, permutation[z])) <= 1e-12
    # float32 softmax rows sum to 1 only within round-off; the tolerated slack must not lift LEEP above 0.
    assert abs(leep(np.eye(5)[z] * (1 + 5e-5), permutation[z])) <= 1e-12
    # Soft predictions of the same argmax are less certain, hence strictly below 0.
    soft = 0.9 * np.eye(5)[z] + 0.02
    assert leep(soft, permutation[z]) < -1e-3


def test_leep_of_uniform_predictions_is_negative_label_entropy():
    y = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 2])
    theta = np.full((len(y), 6), 1 / 6)
    assert leep(theta, y) == pytest.approx(-_label_entropy(y), abs=1e-12)


def test_leep_accepts_torch_float32_softmax_like_numpy():
    logits = torch.randn(30, 5, generator=torch.Generator().manual_seed(0))
    probs = logits.softmax(1)  # float32: rows sum to 1 only up to ~1e-7
    y = torch.arange(30) % 3
    assert leep(probs, y) == pytest.approx(leep(probs.double().numpy(), y.numpy()), abs=1e-6)


def test_leep_renormalises_slack_rows_and_reads_every_input_type_alike():
    rng = np.random.default_rng(8)
    theta = _softmax_rows(rng, 30, 6)
    y = np.r_[0, 1, 2, rng.integers(0, 3, size=27)]
    slack = theta * (1.0 + 5e-5 * rng.uniform(-1, 1, size=(30, 1)))  # within the 1e-4 tolerance
    expected = leep(theta, y)
    assert leep(slack, y) == pytest.approx(expected, abs=1e-12)
    assert leep(slack.astype(np.float32), y) == pytest.approx(expected, abs=1e-5)
    assert leep(torch.tensor(slack), torch.tensor(y)) == pytest.approx(expected, abs=1e-12)
    assert leep(slack.tolist(), y.tolist()) == pytest.approx(expected, abs=1e-12)
    with pytest.raises(ValueError, match="finite"):
        leep(np.where(np.arange(6) == 2, np.inf, theta), y)


def test_leep_error_messages_name_the_problem():
    theta = np.full((5, 2), 0.5)
    theta[3] = [0.41, 0.30]
    with pytest.raises(ValueError, match=r"source_probs rows must sum to 1 \(row 3 sums to 0\.71\)"):
        leep(theta, [0, 1, 0, 1, 0])
    with pytest.raises(ValueError, match="single class"):
        leep(np.full((4, 2), 0.5), [1, 1, 1, 1])
    with pytest.raises(ValueError, match="integers"):
        leep(np.full((2, 2), 0.5), [0.0, 0.5])
    with pytest.raises(ValueError, match="out of range"):
        leep(np.full((2, 2), 0.5), [0, -1])
    with pytest.raises(ValueError, match="empty"):
        leep(np.zeros((0, 2)), [])
    with pytest.raises(ValueError, match="2-D"):
        leep(np.full(4, 0.25), [0, 1, 0, 1])
    with pytest.raises(ValueError, match="finite"):
        leep(np.array([[0.5, np.nan], [0.5, 0.5]]), [0, 1])


@st.composite
def _probs_and_labels(draw, min_rows=2):
    n = draw(st.integers(min_rows, 12))
    n_source = draw(st.integers(1, 5))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    # Sparse rows (many exact zeros) are the awkward case for P(z) = 0.
    raw = rng.random((n, n_source)) * (rng.random((n, n_source)) < 0.6)
    raw[np.arange(n), rng.integers(0, n_source, size=n)] += 0.1
    probs = raw / raw.sum(1, keepdims=True)
    y = rng.integers(0, draw(st.integers(2, 4)), size=n)
    y[:2] = [0, 1]
    return probs, y


@settings(max_examples=60, deadline=None)
@given(_probs_and_labels())
def test_leep_is_finite_and_at_most_zero(data):
    probs, y = data
    score = leep(probs, y)
    assert np.isfinite(score) and score <= 1e-12


@settings(max_examples=40, deadline=None)
@given(_probs_and_labels(), st.data())
def test_leep_names_the_row_that_does_not_sum_to_one(data, draw):
    probs, y = data
    row = draw.draw(st.integers(0, len(probs) - 1))
    factor = draw.draw(st.one_of(st.floats(0.0, 0.999), st.floats(1.001, 10.0)))
    bad = probs.copy()
    bad[row] *= factor
    with pytest.raises(ValueError, match=rf"rows must sum to 1 \(row {row} sums to "):
        leep(bad, y)


@settings(max_examples=40, deadline=None)
@given(_probs_and_labels(), st.data())
def test_leep_rejects_negative_probabilities(data, draw):
    probs, y = data
    row = draw.draw(st.integers(0, len(probs) - 1))
    col = draw.draw(st.integers(0, probs.shape[1] - 1))
    bad = probs.copy()
    bad[row, col] = -draw.draw(st.floats(1e-9, 1.0))
    with pytest.raises(ValueError, match=rf"non-negative \(row {row}, column {col}"):
        leep(bad, y)


@settings(max_examples=40, deadline=None)
@given(_probs_and_labels(), st.integers(-3, 3).filter(bool))
def test_leep_rejects_label_count_mismatch(data, extra):
    probs, y = data
    labels = np.resize(y, max(len(y) + extra, 1))
    with pytest.raises(ValueError, match=f"target_labels has {len(labels)} entries but there are {len(y)}"):
        leep(probs, labels)


# --------------------------------------------------------------------------- NCE
def test_nce_is_zero_for_a_deterministic_mapping_and_minus_label_entropy_if_independent():
    z = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    assert nce(z, np.array([1, 0, 2, 0])[z]) == 0.0  # many-to-one is still deterministic
    # Counts of (y, z) that factorise, n(y, z) = a_y b_z: Z and Y independent, NCE = -H(Y).
    y, z = np.meshgrid(np.arange(3), np.arange(4), indexing="ij")
    counts = np.outer([1, 2, 3], [2, 1, 1, 3]).ravel()
    y, z = np.repeat(y.ravel(), counts), np.repeat(z.ravel(), counts)
    assert nce(z, y) == pytest.approx(-_label_entropy(y), abs=1e-12)


def test_nce_equals_mutual_information_minus_label_entropy():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, size=200)
    z = np.where(rng.random(200) < 0.6, y, rng.integers(0, 6, size=200))
    expected = mutual_info_score(y, z) - _label_entropy(y)  # -H(Y|Z) = I(Y;Z) - H(Y), nats
    assert nce(torch.as_tensor(z), torch.as_tensor(y)) == pytest.approx(expected, abs=1e-12)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.integers(0, 3)), min_size=2, max_size=30))
def test_nce_lies_between_minus_label_entropy_and_zero(pairs):
    z, y = (np.array(v) for v in zip(*pairs))
    if len(np.unique(y)) < 2:
        with pytest.raises(ValueError, match="single class"):
            nce(z, y)
        return
    score = nce(z, y)
    assert -_label_entropy(y) - 1e-12 <= score <= 1e-12


def test_nce_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="source_labels has 3 entries but there are 4"):
        nce([0, 1, 2], [0, 1, 0, 1])
    with pytest.raises(ValueError, match="argmax"):
        nce(np.full((4, 2), 0.5), [0, 1, 0, 1])


# --------------------------------------------------------------------------- H-score
def test_h_score_separable_beats_noise_and_respects_its_bounds():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 60)
    separable = 4.0 * np.eye(3)[y] + rng.normal(size=(180, 3))
    noise = rng.normal(size=(180, 3))
    h_sep, h_noise = h_score(separable, y), h_score(noise, y)
    assert h_sep > 1.5 > 0.2 > h_noise >= 0.0
    assert h_sep <= 2.0  # K - 1


def test_h_score_of_class_indicator_features_is_k_minus_one():
    # cov(f) of one-hot features is singular (rows sum to 1): the pseudo-inverse copes, and with no
    # within-class spread the class means explain everything, H = rank = K - 1.
    y = np.repeat([0, 1, 2, 3], [5, 7, 9, 11])
    assert h_score(np.eye(4)[y], y) == pytest.approx(3.0, abs=1e-9)
    assert h_score(np.c_[np.eye(4)[y], np.ones(len(y))], y) == pytest.approx(3.0, abs=1e-9)


def test_h_score_is_invariant_to_invertible_linear_maps_of_the_features():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, size=80)
    f = np.eye(3)[y] @ rng.normal(size=(3, 4)) + rng.normal(size=(80, 4))
    mixing = rng.normal(size=(4, 4)) + 3 * np.eye(4)
    assert h_score(f @ mixing + 5.0, y) == pytest.approx(h_score(f, y), rel=1e-9)
    assert h_score(torch.tensor(f, dtype=torch.float64), torch.tensor(y)) == pytest.approx(h_score(f, y))


def test_h_score_saturates_when_wide_and_shrinkage_repairs_it():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 10)
    wide_noise = rng.normal(size=(20, 40))
    assert h_score(wide_noise, y) == pytest.approx(1.0, abs=1e-6)  # K - 1 for pure noise
    assert h_score(wide_noise, y, shrinkage="ledoit-wolf") < 0.9
    with pytest.raises(ValueError, match="shrinkage"):
        h_score(wide_noise, y, shrinkage=1.5)


def test_shrunk_h_score_matches_a_hand_computed_two_class_case():
    # f = [y, 0] with y half 0, half 1: cov(f) = diag(1/4, 0), tr/D = 1/8, cov(E[f|y]) = cov(f).
    # Shrunk: diag((1-s)/4 + s/8, s/8); between-class: (1-s) diag(1/4, 0), so
    # H_s = ((1-s)/4) / ((1-s)/4 + s/8) = 2 (1 - s) / (2 - s); 2/3 at s = 1/2 (4/3 without (1 - s)).
    y = np.repeat([0, 1], 50)
    f = np.c_[y, np.zeros(100)]
    assert h_score(f, y, shrinkage=0.5) == pytest.approx(2.0 / 3.0, abs=1e-12)
    for s in (0.1, 0.25, 0.9):
        assert h_score(f, y, shrinkage=s) == pytest.approx(2 * (1 - s) / (2 - s), abs=1e-12)
    assert h_score(f, y, shrinkage=1.0) == 0.0  # all shrinkage: the features are ignored


def test_shrunk_h_score_never_exceeds_k_minus_one():
    rng = np.random.default_rng(3)
    for n, D, K in [(100, 2, 2), (60, 5, 3), (30, 50, 4), (20, 40, 2), (200, 8, 5)]:
        y = np.r_[np.arange(K), rng.integers(0, K, size=n - K)]
        for scale in (0.0, 1.0, 5.0):  # from pure noise to nearly separable classes
            f = scale * np.eye(K)[y] @ rng.normal(size=(K, D)) + rng.normal(size=(n, D))
            for shrinkage in (0.01, 0.3, 0.5, 0.99, "ledoit-wolf"):
                h = h_score(f, y, shrinkage=shrinkage)
                assert -1e-12 <= h <= min(D, K - 1) + 1e-9, (n, D, K, scale, shrinkage, h)


def test_h_score_checks_inputs():
    with pytest.raises(ValueError, match="2-D"):
        h_score(np.zeros(5), [0, 1, 0, 1, 0])
    with pytest.raises(ValueError, match="target_labels has 3 entries but there are 4"):
        h_score(np.zeros((4, 2)), [0, 1, 0])
    with pytest.raises(ValueError, match="single class"):
        h_score(np.zeros((4, 2)), [2, 2, 2, 2])


# --------------------------------------------------------------------------- LogME
def _dense_log_evidence(f, t, alpha, beta):
    """The evidence written out with D x D matrices, no SVD."""
    n, d = f.shape
    a = alpha * np.eye(d) + beta * f.T @ f
    m = beta * np.linalg.solve(a, f.T @ t)
    _, log_det_a = np.linalg.slogdet(a)
    return (n / 2 * np.log(beta) + d / 2 * np.log(alpha) - n / 2 * np.log(2 * np.pi)
            - beta / 2 * np.sum((t - f @ m) ** 2) - alpha / 2 * m @ m - log_det_a / 2)


def test_logme_prefers_informative_features():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 40)
    informative = np.eye(3)[y] @ rng.normal(size=(3, 8)) + 0.5 * rng.normal(size=(120, 8))
    random = rng.normal(size=(120, 8))
    assert logme(informative, y) > logme(random, y) + 0.3


def test_evidence_fit_matches_dense_formula_and_is_a_maximum():
    rng = np.random.default_rng(1)
    f = rng.normal(size=(40, 5))
    t = f @ rng.normal(size=5) + 0.5 * rng.normal(size=40)
    fit = bayesian_linear_evidence(f, t, tol=1e-13)
    assert fit.converged
    dense = _dense_log_evidence(f, t, fit.alpha, fit.beta)
    assert fit.log_evidence == pytest.approx(dense, abs=1e-9)
    for da, db in [(1.02, 1), (0.98, 1), (1, 1.02), (1, 0.98)]:
        assert _dense_log_evidence(f, t, fit.alpha * da, fit.beta * db) < dense
    # scikit-learn's BayesianRidge runs the same MacKay updates (its alpha_ is our beta, its
    # lambda_ our alpha); with the Gamma hyperpriors switched off it reaches the same fixed point.
    ridge = BayesianRidge(fit_intercept=False, alpha_1=0, alpha_2=0, lambda_1=0, lambda_2=0,
                          tol=1e-12, max_iter=1000).fit(f, t)
    assert fit.alpha == pytest.approx(ridge.lambda_, rel=1e-6)
    assert fit.beta == pytest.approx(ridge.alpha_, rel=1e-6)


def test_evidence_formula_holds_when_features_are_wider_than_samples():
    # D > n: A has D - n eigenvalues equal to alpha that the SVD never sees.
    rng = np.random.default_rng(4)
    f = rng.normal(size=(8, 20))
    t = rng.normal(size=8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # t is interpolable: beta may run off
        fit = bayesian_linear_evidence(f, t, max_iter=30)
    assert fit.log_evidence == pytest.approx(_dense_log_evidence(f, t, fit.alpha, fit.beta), abs=1e-8)


def test_logme_is_the_mean_evidence_per_example_of_the_one_hot_columns():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 3, size=60)
    f = np.c_[np.eye(3)[y], np.zeros(60)] + rng.normal(size=(60, 4))
    per_class = [bayesian_linear_evidence(f, (y == k).astype(float)).log_evidence / 60 for k in range(3)]
    assert logme(f, y) == pytest.approx(np.mean(per_class), abs=1e-12)
    assert logme(torch.tensor(f, dtype=torch.float32), torch.tensor(y)) == pytest.approx(
        logme(f.astype(np.float32), y), abs=1e-9)


def _logme_by_svd(f, y, tol=1e-8, max_iter=1000):
    # The textbook route: a thin SVD of the data matrix itself, one class column at a time.
    u, s, _ = np.linalg.svd(f, full_matrices=False)
    keep = s > 0
    u, sq_sing = u[:, keep], s[keep] ** 2
    n, d = f.shape
    evidences = []
    for k in np.unique(y):
        t = (y == k).astype(np.float64)
        z = u.T @ t
        fit = _fit_evidence_svd(sq_sing, z, float(np.sum((t - u @ z) ** 2)), n, d, tol, max_iter)
        evidences.append(fit.log_evidence / n)
    return float(np.mean(evidences))


@pytest.mark.parametrize("n, d", [(60, 7), (9, 25)])  # eigh of f^T f (n > D) and of f f^T (n < D)
def test_gram_eigendecomposition_agrees_with_the_svd_of_the_features(n, d):
    rng = np.random.default_rng(6)
    y = np.r_[0, 1, 2, rng.integers(0, 3, size=n - 3)]
    f = np.eye(3)[y] @ rng.normal(size=(3, d)) + rng.normal(size=(n, d)) + 2.0
    targets = np.eye(3)[y]
    sq_sing, z, t_perp_sq = _spectral_projection(f, targets)
    u, s, _ = np.linalg.svd(f, full_matrices=False)
    order = np.argsort(s)  # eigh is ascending
    np.testing.assert_allclose(sq_sing, s[order] ** 2, rtol=1e-10)
    np.testing.assert_allclose(np.abs(z), np.abs(u.T @ targets)[order], rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(t_perp_sq, np.sum((targets - u @ (u.T @ targets)) ** 2, axis=0),
                               rtol=1e-8, atol=1e-10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # n < D: one-hot columns are interpolable
        assert logme(f, y, max_iter=50) == pytest.approx(_logme_by_svd(f, y, max_iter=50), rel=1e-8)
        t = f @ rng.normal(size=d) + rng.normal(size=n)
        fast = bayesian_linear_evidence(f, t, max_iter=50)
        assert fast.log_evidence == pytest.approx(_dense_log_evidence(f, t, fast.alpha, fast.beta), rel=1e-8)


def test_gram_path_drops_null_directions_without_changing_the_evidence():
    # Duplicated and constant columns make f^T f singular; the SVD keeps s ~ 1e-15 there, the Gram
    # route drops them as numerically zero, and the evidence must not notice.
    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, size=50)
    base = np.c_[y, np.zeros(50)] + rng.normal(size=(50, 2))
    f = np.c_[base, base, base[:, 0] - base[:, 1], np.zeros(50)]
    assert logme(f, y) == pytest.approx(_logme_by_svd(f, y), rel=1e-8)
    assert len(_spectral_projection(f, np.eye(2)[y])[0]) == 2


def test_logme_warns_when_the_iteration_cap_stops_it():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 20)
    f = np.eye(3)[y] + 0.5 * rng.normal(size=(60, 3))
    with pytest.warns(ConvergenceWarning, match=r"did not converge for classes \[0, 1, 2\]"):
        capped = logme(f, y, max_iter=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        assert logme(f, y) != capped
    with pytest.warns(ConvergenceWarning, match="after 1 iterations"):
        assert not bayesian_linear_evidence(f, f[:, 0] + rng.normal(size=60), max_iter=1).converged


def test_logme_checks_inputs():
    with pytest.raises(ValueError, match="all zero"):
        logme(np.zeros((4, 2)), [0, 1, 0, 1])
    with pytest.raises(ValueError, match="finite"):
        logme(np.array([[1.0, np.inf], [0.0, 1.0]]), [0, 1])
    with pytest.raises(ValueError, match="single class"):
        logme(np.ones((4, 2)), [0, 0, 0, 0])
    with pytest.raises(ValueError, match="targets must have shape"):
        bayesian_linear_evidence(np.ones((4, 2)), np.ones(3))


def test_spearman_permutation_matches_scipy_and_exact_counts():
    from scipy.stats import spearmanr

    from tlcourse.transferability import spearman_permutation
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=7), rng.normal(size=7)
    rho, p = spearman_permutation(a, b)
    assert rho == pytest.approx(spearmanr(a, b).statistic)
    # m = 5: a perfect ranking (or its reverse) is 2 of the 120 orderings
    assert spearman_permutation([1, 2, 3, 4, 5], [5, 6, 7, 8, 9])[1] == pytest.approx(2 / 120)
    rho, p = spearman_permutation([1, 2, 3, 4, 5], [2, 1, 4, 3, 5])
    assert rho == pytest.approx(0.8) and p > 0.05  # a decent rho over 5 pairs is not significant
    # ties: scipy's average ranks
    rho, _ = spearman_permutation([1, 1, 2, 3], [1, 2, 3, 4])
    assert rho == pytest.approx(spearmanr([1, 1, 2, 3], [1, 2, 3, 4]).statistic)
    # m > 8: Monte Carlo p-value close to the exact null's
    x = np.arange(12.0)
    y = x + rng.normal(scale=6, size=12)
    r, p = spearman_permutation(x, y, n_perm=5000)
    assert 0 < p <= 1 and r == pytest.approx(spearmanr(x, y).statistic)


def test_spearman_permutation_rejects_bad_input():
    from tlcourse.transferability import spearman_permutation
    with pytest.raises(ValueError, match="same length"):
        spearman_permutation([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="distinct"):
        spearman_permutation([1, 1, 1], [1, 2, 3])
    with pytest.raises(ValueError, match="finite"):
        spearman_permutation([1, np.nan, 3], [1, 2, 3])
