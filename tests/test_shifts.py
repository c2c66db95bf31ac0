"""Tests of tlcourse.shifts: each generator has the property its name states, checked on its truth."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tlcourse import shifts
from tlcourse.divergence import mmd2_unbiased, proxy_a_distance


def test_covariate_shift_keeps_the_conditional_and_moves_the_marginal():
    pair = shifts.covariate_shift(2000, 2000, seed=0)
    grid = np.random.default_rng(1).normal(size=(100, 2)) * 3
    assert np.array_equal(pair.posterior_source(grid), pair.posterior_target(grid))
    # labels really come from that one conditional in both domains
    for x, y in ((pair.x_source, pair.y_source), (pair.x_target, pair.y_target)):
        assert abs(shifts.selection_residual(y, pair.posterior_source(x))[1]) < 4
    assert pair.x_target.mean(0)[0] - pair.x_source.mean(0)[0] > 2.0


def test_label_shift_keeps_the_class_conditionals_and_moves_the_prior():
    pair = shifts.label_shift(4000, 4000, seed=0, source_prior=0.5, target_prior=0.15)
    assert abs(pair.y_source.mean() - 0.5) < 0.03 and abs(pair.y_target.mean() - 0.15) < 0.03
    for c in (0, 1):  # P(X|Y=c) the same: same mean and spread per class in both domains
        xs, xt = pair.x_source[pair.y_source == c], pair.x_target[pair.y_target == c]
        assert np.allclose(xs.mean(0), pair.class_means[c], atol=0.1)
        assert np.allclose(xt.mean(0), pair.class_means[c], atol=0.15)
        assert np.allclose(xt.std(0), pair.class_scale, atol=0.1)
    # P(Y|X) moves by the change of log prior odds, as Bayes' rule says
    x = np.zeros((1, 2))
    logit = lambda p: np.log(p / (1 - p))  # noqa: E731
    assert np.isclose(logit(pair.posterior_target(x)) - logit(pair.posterior_source(x)), logit(0.15) - logit(0.5))
    with pytest.raises(ValueError, match="target_prior"):
        shifts.label_shift(target_prior=1.0)


def test_covariate_twin_has_the_label_shift_marginal_and_the_source_conditional():
    pair = shifts.label_shift(3000, 3000, seed=2)
    twin = shifts.covariate_twin(pair, seed=2)
    assert twin.posterior_target is pair.posterior_source
    assert abs(shifts.selection_residual(twin.y_target, pair.posterior_source(twin.x_target))[1]) < 4
    # same P(X) as the label-shift target, and not the same draws
    assert abs(mmd2_unbiased(torch.tensor(pair.x_target[:800]), torch.tensor(twin.x_target[:800])).item()) < 0.01
    assert not np.allclose(twin.x_target[:10], pair.x_source[:10])
    assert 0.4 < proxy_a_distance(pair.x_target, twin.x_target, seed=0).auc < 0.6
    with pytest.raises(ValueError, match="label_shift"):
        shifts.covariate_twin(shifts.concept_shift(seed=0))


def test_concept_shift_keeps_the_marginal_and_moves_the_conditional():
    pair = shifts.concept_shift(3000, 3000, seed=0, angle=70)
    _, p = shifts.mmd_permutation_test(pair.x_source[:600], pair.x_target[:600], n_permutations=100)
    assert p > 0.01
    grid = np.random.default_rng(0).normal(size=(500, 2))
    assert np.abs(pair.posterior_source(grid) - pair.posterior_target(grid)).mean() > 0.2
    assert abs(shifts.selection_residual(pair.y_target, pair.posterior_target(pair.x_target))[1]) < 4
    assert np.mean((pair.posterior_source(pair.x_target) > 0.5) == pair.y_target) < 0.75   # the old rule misfits
    unrotated = shifts.concept_shift(10, 10, seed=0, angle=0)
    assert np.allclose(unrotated.posterior_target(grid), pair.posterior_source(grid))


def test_heterogeneous_pairs_live_in_different_spaces_and_map_back():
    pair = shifts.heterogeneous(500, 500, seed=0, n_pairs=30)
    assert pair.x_source.shape[1] == 2 and pair.x_target.shape[1] == 3
    x_pairs, z_pairs = pair.pairs
    b = shifts.fit_feature_map(z_pairs, x_pairs)
    assert b.shape == (4, 2)
    z = pair.x_target
    recovered = np.c_[z, np.ones(len(z))] @ b
    assert np.allclose(recovered, z @ np.linalg.pinv(pair.feature_map).T, atol=0.2)


@pytest.mark.parametrize("kind", shifts.KINDS)
def test_generators_are_seeded(kind):
    a, b, c = (shifts.make_shift(kind, 50, 40, seed=s) for s in (3, 3, 4))
    assert np.array_equal(a.x_target, b.x_target) and not np.array_equal(a.x_target, c.x_target)
    assert a.x_source.shape[0] == 50 and a.x_target.shape[0] == 40 and a.kind == kind
    assert set(np.unique(a.y_source)) <= {0, 1}
    with pytest.raises(ValueError, match="at least 2"):
        shifts.make_shift(kind, 1, 10)
    with pytest.raises(ValueError, match="kind must be"):
        shifts.make_shift("prior")


def test_selection_residual_tells_selection_on_x_from_selection_on_y():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20000, 2))
    p = shifts.concept_shift(2, 2).posterior_source(x)
    y = (rng.random(len(p)) < p).astype(int)
    on_x = x[:, 0] > 0.5
    keep_y = (y == 1) | (rng.random(len(y)) < 0.3)
    assert abs(shifts.selection_residual(y[on_x], p[on_x])[1]) < 4
    assert shifts.selection_residual(y[keep_y], p[keep_y])[1] > 10
    idx = rng.choice(len(x), 3000, p=np.exp(x[:, 0]) / np.exp(x[:, 0]).sum())
    counts = np.bincount(idx, minlength=len(x))
    assert abs(shifts.selection_residual(y, p, counts)[1]) < 4
    with pytest.raises(ValueError):
        shifts.selection_residual(y, p[:-1])


def test_mmd_permutation_test_matches_the_package_statistic_and_is_calibrated():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 2)), rng.normal(size=(55, 2)) + 0.2
    stat, _ = shifts.mmd_permutation_test(x, y, n_permutations=20)
    assert np.isclose(stat, mmd2_unbiased(torch.tensor(x), torch.tensor(y)).item())
    p_null = [shifts.mmd_permutation_test(rng.normal(size=(30, 2)), rng.normal(size=(30, 2)), 50, seed=s)[1]
              for s in range(40)]
    assert 0.02 <= np.mean(np.array(p_null) < 0.1) <= 0.25      # about 10 % below 0.1 under H0
    assert shifts.mmd_permutation_test(x, y + 2, 50)[1] == 1 / 51


def test_measure_shift_reports_what_each_case_does():
    rows = {k: shifts.measure_shift(shifts.make_shift(k, 400, 400, seed=0), shifts.make_shift(k, 400, 400, seed=9),
                                    n_permutations=50) for k in shifts.KINDS}
    assert rows["covariate"]["auc_forest"] > 0.9 and rows["concept"]["auc_forest"] < 0.6
    assert rows["concept"]["acc_target"] < rows["concept"]["acc_oracle"] - 0.15
    assert np.isnan(rows["heterogeneous"]["auc_forest"])
    assert rows["heterogeneous"]["acc_truncated"] < 0.65 < rows["heterogeneous"]["acc_target"]
    pair = shifts.concept_shift(400, 400, seed=0)
    assert shifts.training_points_auc(pair.x_source, pair.x_target) > 0.65   # the mistake: a false alarm


def test_plot_pair_draws_both_boundaries():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.linear_model import LogisticRegression

    fig, axes = plt.subplots(1, 2)
    for ax, kind in zip(axes, ("concept", "heterogeneous")):
        pair = shifts.make_shift(kind, 100, 100)
        shifts.plot_pair(ax, pair, LogisticRegression().fit(pair.x_source, pair.y_source))
        assert ax.get_title() == kind and len(ax.collections) >= 3
    plt.close(fig)


def test_labelled_pool_labels_follow_its_posterior():
    x, y = shifts.labelled_pool(5000, seed=0)
    assert x.shape == (5000, 2) and abs(shifts.selection_residual(y, shifts.pool_posterior(x))[1]) < 4
    p = shifts.pool_posterior(x)
    assert 0.2 < p.std() and ((p > 0.1) & (p < 0.9)).mean() > 0.4   # noisy labels, not a hard threshold
    assert np.array_equal(shifts.labelled_pool(50, seed=3)[0], shifts.labelled_pool(50, seed=3)[0])
