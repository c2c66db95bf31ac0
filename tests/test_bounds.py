from functools import partial

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.svm import LinearSVC

from tlcourse.bounds import BoundTerms, ben_david_bound, bound_over_shifts, rotated_blobs
from tlcourse.divergence import default_domain_classifier

ANGLES = list(range(0, 181, 15))


def test_identical_domains_have_no_divergence_term():
    x_s, y_s, x_t, y_t = rotated_blobs(0, n_per_class=400, seed=0)  # two samples of one distribution
    terms = ben_david_bound(x_s, y_s, x_t, y_t)
    assert terms.proxy_a_distance < 0.15
    assert terms.bound == pytest.approx(terms.source_error + terms.lambda_, abs=0.08)
    assert abs(terms.target_error - terms.source_error) < 0.05
    # The very same points on both sides: nothing at all tells the domains apart.
    same = ben_david_bound(x_s, y_s, x_s, y_s)
    assert same.proxy_a_distance < 0.1 and same.target_error == same.source_error


def test_terms_add_up():
    terms = ben_david_bound(*rotated_blobs(60, seed=1), seed=1)
    assert isinstance(terms, BoundTerms)
    assert terms.lambda_ == pytest.approx(terms.joint_source_error + terms.joint_target_error)
    assert terms.bound == pytest.approx(terms.source_error + 0.5 * terms.proxy_a_distance + terms.lambda_)
    assert 0 <= terms.proxy_a_distance <= 2 and terms.holds == (terms.target_error <= terms.bound)


@pytest.mark.parametrize("seed", [0, 1])
def test_observed_target_error_stays_within_the_bound_for_every_rotation(seed):
    table = bound_over_shifts(partial(rotated_blobs, n_per_class=1000), ANGLES, seed=seed)
    assert list(table["shift"]) == ANGLES
    for row in table.itertuples():
        assert row.target_error <= row.bound, f"bound fails at {row.shift} degrees: {row}"
    # The sweep is a real shift: the target error climbs from chance-free to nearly always wrong.
    assert table.target_error.iloc[0] < 0.15 and table.target_error.iloc[-1] > 0.85


def test_a_linear_domain_classifier_measures_d_h_not_d_h_delta_h():
    # At 90 degrees the four blobs form an XOR cross: no line separates the domains (proxy ~ 0), but
    # the region where two lines disagree does. With the d_H proxy the "bound" fails, as theory warns.
    data = rotated_blobs(90, n_per_class=500, seed=0)
    linear = ben_david_bound(*data, domain_classifier=default_domain_classifier())
    quadratic = ben_david_bound(*data)
    assert linear.proxy_a_distance < 0.2 < 0.8 < quadratic.proxy_a_distance
    assert linear.target_error > linear.bound and quadratic.holds


def test_lambda_is_small_when_one_line_fits_both_domains_and_large_when_labels_conflict():
    x_s, y_s, x_t, y_t = rotated_blobs(0, n_per_class=300, separation=4.0, seed=0)
    # Target moved along the decision boundary x = 0: far from the source, same labelling rule.
    moved = ben_david_bound(x_s, y_s, x_t + [0.0, 8.0], y_t)
    assert moved.proxy_a_distance > 1.9 and moved.lambda_ < 0.1
    # Same inputs, flipped labels: no single classifier can be right on both.
    # (In the population lambda = 1 here and the bound is tight, eps_S + 1 against 1 - eps_S, so
    # sampling noise in lambda can tip it either way; the rotation sweep keeps a margin.)
    flipped = ben_david_bound(x_s, y_s, x_t, 1 - y_t)
    assert flipped.proxy_a_distance < 0.2 and flipped.lambda_ > 0.85 and flipped.target_error > 0.9


def test_bound_over_shifts_rows_match_single_calls():
    table = bound_over_shifts(rotated_blobs, [0, 45], seed=3)
    assert isinstance(table, pd.DataFrame) and len(table) == 2
    assert {"shift", "source_error", "target_error", "proxy_a_distance", "lambda_", "bound",
            "holds"} <= set(table.columns)
    direct = ben_david_bound(*rotated_blobs(45, seed=3), seed=3)
    assert table.iloc[1].bound == pytest.approx(direct.bound)
    assert table.iloc[1].target_error == pytest.approx(direct.target_error)


def test_custom_classifier_and_torch_inputs():
    x_s, y_s, x_t, y_t = rotated_blobs(30, seed=0)
    svm = LinearSVC(C=0.5)
    terms = ben_david_bound(torch.tensor(x_s), torch.tensor(y_s), x_t, y_t, classifier=svm)
    assert not hasattr(svm, "coef_")  # cloned, not fitted in place
    assert terms == ben_david_bound(x_s, y_s, x_t, y_t, classifier=svm)


def test_ben_david_bound_checks_inputs():
    x_s, y_s, x_t, y_t = rotated_blobs(0, n_per_class=10, seed=0)
    with pytest.raises(ValueError, match="differ in width"):
        ben_david_bound(x_s, y_s, np.c_[x_t, x_t], y_t)
    with pytest.raises(ValueError, match=r"y_t must have shape \(20,\)"):
        ben_david_bound(x_s, y_s, x_t, y_t[:-1])
    with pytest.raises(ValueError, match="single class"):
        ben_david_bound(x_s, np.zeros_like(y_s), x_t, y_t)
    with pytest.raises(ValueError, match="2-D"):
        ben_david_bound(x_s[:, 0], y_s, x_t, y_t)


def test_rotated_blobs_rotates_the_target_only():
    x_s, y_s, x_t, y_t = rotated_blobs(90, n_per_class=50, noise=0.0, seed=0)
    assert x_s.shape == x_t.shape == (100, 2) and (y_s == y_t).all()
    np.testing.assert_allclose(x_t[y_t == 1], np.tile([0.0, 1.5], (50, 1)), atol=1e-12)
    a = rotated_blobs(10, seed=4)
    b = rotated_blobs(10, seed=4)
    assert all(np.array_equal(u, v) for u, v in zip(a, b))
    with pytest.raises(ValueError, match="n_per_class"):
        rotated_blobs(0, n_per_class=1)
