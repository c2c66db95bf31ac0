import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.stats import entropy
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.svm import LinearSVC

from tlcourse.divergence import (histogram_divergence, js_divergence, kl_divergence,
                                 median_heuristic_bandwidths, mmd2_biased, mmd2_unbiased,
                                 proxy_a_distance)

BANDWIDTHS = [0.5, 1.0, 2.0]


def _gaussians(n, shift=0.0, d=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.randn(n, d, generator=g, dtype=torch.float64)
    y[:, 0] += shift
    return x, y


# --------------------------------------------------------------------------- MMD
def _k(a, b, bandwidths):
    return sum(math.exp(-sum((ai - bi) ** 2 for ai, bi in zip(a, b)) / (2 * s**2)) for s in bandwidths)


def _mmd2_by_loops(x, y, bandwidths):
    n, m = len(x), len(y)
    xx = sum(_k(x[i], x[j], bandwidths) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    yy = sum(_k(y[i], y[j], bandwidths) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(_k(x[i], y[j], bandwidths) for i in range(n) for j in range(m)) / (n * m)
    return xx + yy - 2 * xy


def test_mmd2_matches_a_double_loop():
    x = [[0.0, 1.0], [2.0, -1.0], [0.5, 0.5]]
    y = [[1.0, 1.0], [-1.0, 0.0], [3.0, 2.0], [0.0, 0.0]]
    got = mmd2_unbiased(torch.tensor(x, dtype=torch.float64), torch.tensor(y, dtype=torch.float64), BANDWIDTHS)
    assert got.item() == pytest.approx(_mmd2_by_loops(x, y, BANDWIDTHS), abs=1e-12)
    # Default bandwidths: the median of the 21 pooled pairwise distances times 1/4 ... 4.
    pooled = x + y
    dists = sorted(math.dist(a, b) for a, b in itertools.combinations(pooled, 2))
    median = dists[len(dists) // 2]
    expected = _mmd2_by_loops(x, y, [median * f for f in (0.25, 0.5, 1, 2, 4)])
    assert mmd2_unbiased(torch.tensor(x), torch.tensor(y)).item() == pytest.approx(expected, abs=1e-5)


def test_mmd2_is_exactly_unbiased_on_a_two_point_distribution():
    # Enumerate every sample of size n = 2 from P and m = 3 from Q: the probability-weighted mean of
    # the estimator is the population MMD^2 exactly; the biased estimator overshoots.
    support, p, q = [0.0, 1.0], [0.5, 0.5], [0.2, 0.8]
    kernel = [[_k([a], [b], BANDWIDTHS) for b in support] for a in support]
    population = sum(p[i] * p[j] * kernel[i][j] + q[i] * q[j] * kernel[i][j] - 2 * p[i] * q[j] * kernel[i][j]
                     for i in range(2) for j in range(2))
    mean_unbiased = mean_biased = 0.0
    for xs in itertools.product(range(2), repeat=2):
        for ys in itertools.product(range(2), repeat=3):
            weight = math.prod(p[i] for i in xs) * math.prod(q[j] for j in ys)
            x = torch.tensor([[support[i]] for i in xs], dtype=torch.float64)
            y = torch.tensor([[support[j]] for j in ys], dtype=torch.float64)
            mean_unbiased += weight * mmd2_unbiased(x, y, BANDWIDTHS).item()
            mean_biased += weight * mmd2_biased(x, y, BANDWIDTHS).item()
    assert mean_unbiased == pytest.approx(population, abs=1e-12)
    assert mean_biased > population + 0.1


def test_mmd2_of_identical_distributions_averages_to_zero_unlike_the_biased_one():
    unbiased, biased = [], []
    for seed in range(150):
        x, y = _gaussians(8, seed=seed)
        unbiased.append(mmd2_unbiased(x, y, BANDWIDTHS).item())
        biased.append(mmd2_biased(x, y, BANDWIDTHS).item())
    stderr = np.std(unbiased) / np.sqrt(len(unbiased))
    assert abs(np.mean(unbiased)) < 3 * stderr
    assert min(unbiased) < 0  # unbiased means it must sometimes undershoot 0
    assert np.mean(biased) > np.mean(unbiased) + 10 * stderr and min(biased) >= 0


def test_mmd2_is_near_zero_for_one_distribution_and_grows_with_a_mean_shift():
    x, y = _gaussians(200)
    assert abs(mmd2_unbiased(x, y).item()) < 0.02
    for bandwidths in (BANDWIDTHS, None):
        values = [mmd2_unbiased(x, y + torch.tensor([s, 0.0], dtype=torch.float64), bandwidths).item()
                  for s in (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)]
        assert all(a < b for a, b in zip(values, values[1:])), values


def test_mmd2_keeps_dtype_and_device_and_is_differentiable():
    x, y = _gaussians(20, shift=1.0)
    x32 = x.float().requires_grad_()
    value = mmd2_unbiased(x32, y.float())
    assert value.dtype == torch.float32 and value.device == x.device and value.dim() == 0
    value.backward()
    assert torch.isfinite(x32.grad).all() and x32.grad.abs().sum() > 0
    assert mmd2_unbiased(x, y).dtype == torch.float64
    assert median_heuristic_bandwidths(x, y).shape == (5,)


def test_mmd2_in_float32_far_from_the_origin_matches_float64_at_the_origin():
    # ||a||^2 + ||b||^2 - 2 a.b at ||a||^2 ~ 256 * 300^2 cancels every float32 digit of the
    # estimate: without centring this seed gives -1.5e-5 against +1.53e-4, the wrong sign.
    x, y = _gaussians(200, d=256, seed=7)
    x32, y32 = (x + 300.0).float(), (y + 300.0).float()
    exact, far = mmd2_unbiased(x, y).item(), mmd2_unbiased(x32, y32).item()
    assert exact > 1e-4 and far > 0
    assert far == pytest.approx(exact, abs=5e-6)
    assert mmd2_biased(x32, y32).item() == pytest.approx(mmd2_biased(x, y).item(), rel=1e-4)
    torch.testing.assert_close(median_heuristic_bandwidths(x32, y32).double(),
                               median_heuristic_bandwidths(x, y), rtol=1e-5, atol=0)
    # Shift invariance, exactly enough in float64, for a shift that differs per coordinate.
    offset = torch.linspace(-1e3, 1e3, 256, dtype=torch.float64)
    assert mmd2_unbiased(x + offset, y + offset).item() == pytest.approx(exact, abs=1e-9)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 5), st.integers(0, 5), st.integers(1, 3), st.integers(1, 3))
def test_mmd2_rejects_tiny_samples_and_mismatched_widths(n, m, dx, dy):
    x, y = torch.randn(n, dx), torch.randn(m, dy)
    if dx != dy:
        with pytest.raises(ValueError, match="differ in width"):
            mmd2_unbiased(x, y)
    elif n < 2 or m < 2:
        with pytest.raises(ValueError, match="at least 2 examples"):
            mmd2_unbiased(x, y, BANDWIDTHS)
    else:
        assert torch.isfinite(mmd2_unbiased(x, y, BANDWIDTHS))


def test_mmd2_rejects_bad_bandwidths_and_repeated_points():
    x, y = _gaussians(5)
    for bad in ([], [1.0, 0.0], [-1.0], [float("nan")]):
        with pytest.raises(ValueError, match="bandwidths"):
            mmd2_unbiased(x, y, bad)
    with pytest.raises(ValueError, match="median heuristic"):
        mmd2_unbiased(torch.zeros(4, 2), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="2-D"):
        mmd2_unbiased(torch.zeros(4), torch.zeros(4))


# --------------------------------------------------------------------------- proxy A-distance
def test_proxy_a_distance_is_zero_for_identical_and_two_for_disjoint_domains():
    rng = np.random.default_rng(0)
    same = proxy_a_distance(rng.normal(size=(400, 3)), rng.normal(size=(400, 3)))
    assert same.distance < 0.25 and abs(same.error - 0.5) < 0.08 and abs(same.auc - 0.5) < 0.1
    apart = proxy_a_distance(rng.normal(size=(400, 3)), rng.normal(size=(400, 3)) + [8.0, 0, 0])
    assert apart.distance > 1.95 and apart.error < 0.01 and apart.auc > 0.999
    assert (apart.n_train, apart.n_test) == (400, 400)


def test_proxy_a_distance_is_seeded_and_uses_the_balanced_error():
    rng = np.random.default_rng(1)
    xs, xt = rng.normal(size=(300, 2)), rng.normal(size=(100, 2)) + [1.0, 0.0]
    assert proxy_a_distance(xs, xt, seed=3) == proxy_a_distance(torch.tensor(xs), torch.tensor(xt), seed=3)
    # 3:1 sizes and identical domains: answering "source" always has plain error 0.25, which must not
    # read as a distance of 1.
    same = proxy_a_distance(rng.normal(size=(600, 2)), rng.normal(size=(200, 2)))
    assert same.distance < 0.3
    majority = proxy_a_distance(rng.normal(size=(600, 2)), rng.normal(size=(200, 2)),
                                classifier=DummyClassifier(strategy="most_frequent"))
    assert majority.error == 0.5 and majority.distance == 0.0


def test_proxy_a_distance_accepts_a_classifier_without_modifying_it():
    rng = np.random.default_rng(2)
    svm = LinearSVC(C=0.1)
    result = proxy_a_distance(rng.normal(size=(200, 2)), rng.normal(size=(200, 2)) + 5.0, classifier=svm)
    assert result.distance > 1.9 and not hasattr(svm, "coef_")


class _Contrarian(ClassifierMixin, BaseEstimator):
    """Logistic regression that answers the opposite: held-out error above 1/2 by construction."""

    def fit(self, x, y):
        self.model_ = LogisticRegression().fit(x, y)
        self.classes_ = self.model_.classes_
        return self

    def predict(self, x):
        return 1 - self.model_.predict(x)


def test_proxy_a_distance_clips_worse_than_chance_to_zero():
    rng = np.random.default_rng(3)
    result = proxy_a_distance(rng.normal(size=(100, 2)), rng.normal(size=(100, 2)) + 6.0,
                              classifier=_Contrarian())
    assert result.error > 0.95 and result.distance == 0.0 and math.isnan(result.auc)
    same = proxy_a_distance(rng.normal(size=(100, 2)), rng.normal(size=(100, 2)))
    assert 0.0 <= same.distance <= 2.0


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 4), st.integers(0, 4), st.integers(1, 3), st.integers(1, 3))
def test_proxy_a_distance_checks_inputs(n_s, n_t, d_s, d_t):
    xs, xt = np.ones((n_s, d_s)), np.zeros((n_t, d_t))
    if d_s != d_t:
        with pytest.raises(ValueError, match="differ in width"):
            proxy_a_distance(xs, xt)
    elif n_s < 2 or n_t < 2:
        with pytest.raises(ValueError, match="at least 2 examples"):
            proxy_a_distance(xs, xt)
    with pytest.raises(ValueError, match="test_size"):
        proxy_a_distance(np.ones((4, 2)), np.zeros((4, 2)), test_size=1.0)


# --------------------------------------------------------------------------- KL and JS
def test_kl_and_js_closed_forms_on_two_bins():
    # KL((1/2, 1/2) || (1/4, 3/4)) = 1/2 log 2 + 1/2 log(2/3) = 1/2 log(4/3)
    assert kl_divergence([1, 1], [1, 3], eps=0) == pytest.approx(0.5 * math.log(4 / 3), abs=1e-15)
    assert kl_divergence([1, 1], [1, 3]) == pytest.approx(0.5 * math.log(4 / 3), abs=1e-8)
    # JS((1, 0), (1/2, 1/2)), m = (3/4, 1/4): 1/2 log(4/3) + 1/2 (1/2 log(2/3) + 1/2 log 2)
    expected = 0.5 * math.log(4 / 3) + 0.25 * math.log(2 / 3) + 0.25 * math.log(2)
    assert js_divergence([1, 0], [1, 1]) == pytest.approx(expected, abs=1e-15)
    assert kl_divergence([1, 0], [0, 1], eps=0) == math.inf
    assert kl_divergence([1, 0], [0, 1]) == pytest.approx(math.log(1 / 1e-10), rel=1e-6)


_histograms = arrays(np.float64, st.integers(1, 8), elements=st.floats(0, 100)).filter(lambda h: h.sum() > 0)


@settings(max_examples=60, deadline=None)
@given(_histograms, st.data())
def test_kl_and_js_properties(p, data):
    q = data.draw(arrays(np.float64, len(p), elements=st.floats(0, 100)).filter(lambda h: h.sum() > 0))
    assert kl_divergence(p, p) == pytest.approx(0.0, abs=1e-12)
    assert kl_divergence(p, q) >= -1e-12
    assert js_divergence(p, q) == pytest.approx(js_divergence(q, p), abs=1e-12)
    assert -1e-12 <= js_divergence(p, q) <= math.log(2) + 1e-12
    m = p / p.sum() + q / q.sum()  # scipy's entropy(a, b) normalises both, so m needs no 1/2
    assert js_divergence(p, q) == pytest.approx(0.5 * entropy(p, m) + 0.5 * entropy(q, m), abs=1e-12)


@settings(max_examples=40, deadline=None)
@given(_histograms, st.integers(0, 7), st.floats(1e-6, 10))
def test_kl_and_js_check_their_inputs(p, index, size):
    negative = p.copy()
    negative[index % len(p)] = -size
    for fn in (kl_divergence, js_divergence):
        with pytest.raises(ValueError, match=rf"non-negative \(bin {index % len(p)}"):
            fn(negative, p)
        with pytest.raises(ValueError, match="same number of bins"):
            fn(p, np.ones(len(p) + 1))
        with pytest.raises(ValueError, match="all zero"):
            fn(p, np.zeros(len(p)))
        with pytest.raises(ValueError, match="1-D"):
            fn(p.reshape(1, -1), p.reshape(1, -1))


def test_histogram_divergence_uses_shared_bins():
    rng = np.random.default_rng(0)
    a = rng.normal(size=2000)
    same = histogram_divergence(a, a.copy(), bins=15)
    assert same.kl == pytest.approx(0.0, abs=1e-12) and same.js == pytest.approx(0.0, abs=1e-12)
    shifted = histogram_divergence(a, torch.tensor(a + 1.0), bins=15)
    assert len(shifted.bin_edges) == 16 and shifted.bin_edges[0] == a.min() and shifted.bin_edges[-1] == a.max() + 1
    assert 0 < shifted.js < math.log(2) and shifted.kl > shifted.js
    assert shifted.p.sum() == pytest.approx(1.0) and shifted.q.sum() == pytest.approx(1.0)
    assert shifted.kl == pytest.approx(kl_divergence(shifted.p, shifted.q))
    with pytest.raises(ValueError, match="falls inside range"):
        histogram_divergence(a, a, bins=4, range=(100.0, 101.0))
    with pytest.raises(ValueError, match="1-D"):
        histogram_divergence(a.reshape(-1, 2), a, bins=4)
