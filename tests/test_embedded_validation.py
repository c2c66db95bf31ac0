"""tlcourse.embedded_validation on tiny cases: IWCV, DEV's control variate and the density ratio."""
from __future__ import annotations

import numpy as np
import pytest

from tlcourse.embedded_validation import density_ratio, dev_risk, dev_score, iwcv_risk


def test_constant_weights_give_the_plain_mean():
    losses = np.array([0.1, 0.5, 0.9])
    assert iwcv_risk(np.ones(3), losses) == pytest.approx(0.5)
    assert dev_risk(np.ones(3), losses) == pytest.approx(0.5)


def test_dev_matches_its_formula_and_removes_the_weight_noise():
    w, l = np.array([0.5, 1.5, 1.0, 2.0]), np.array([1.0, 3.0, 2.0, 2.0])
    L = w * l
    eta = -np.cov(L, w)[0, 1] / np.var(w, ddof=1)
    assert dev_risk(w, l) == pytest.approx(L.mean() + eta * w.mean() - eta) == pytest.approx(2.1)
    # with a constant loss, L is proportional to w: the control variate cancels the weight noise exactly
    rng = np.random.default_rng(0)
    w = rng.exponential(1.0, 500)
    assert dev_risk(w, np.full(500, 0.3)) == pytest.approx(0.3)
    assert abs(iwcv_risk(w, np.full(500, 0.3)) - 0.3) > 1e-3


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="same length"):
        dev_risk([1.0, 1.0], [1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match=">= 0"):
        iwcv_risk([-1.0, 1.0], [1.0, 1.0])
    with pytest.raises(ValueError, match="finite"):
        dev_risk([np.nan, 1.0], [1.0, 1.0])


def test_density_ratio_recovers_a_known_gaussian_ratio():
    rng = np.random.default_rng(0)
    s, t = rng.normal(0, 1, (4000, 1)), rng.normal(1, 1, (4000, 1))
    x = np.array([[-1.0], [0.0], [1.0], [2.0]])
    w = density_ratio(s, t, x)
    assert np.allclose(np.log(w), x[:, 0] - 0.5, atol=0.15)   # log p_T/p_S = x - 1/2
    # the same sizes on both sides: no shift gives weights near 1
    assert np.allclose(density_ratio(s, rng.normal(0, 1, (4000, 1)), x), 1, atol=0.15)


def test_dev_score_reports_the_largest_weight():
    rng = np.random.default_rng(1)
    out = dev_score(rng.normal(0, 1, (200, 2)), rng.normal(0.5, 1, (200, 2)), rng.normal(0, 1, (50, 2)),
                    rng.exponential(1, 50))
    assert set(out) == {"dev", "iwcv", "max_weight"} and out["max_weight"] > 1
