"""Tests of tlcourse.curves: every benefit measure on tiny hand-made curves, the shape rules, the
refusal of curves recorded at different steps, and the curve recorder on a tiny model."""
from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from tlcourse import curves  # noqa: E402

STEPS = np.array([0, 10, 20, 40])
SCRATCH = np.array([0.1, 0.2, 0.5, 0.6])
TRANSFER = np.array([0.1, 0.6, 0.7, 0.8])


def test_jumpstart_at_the_first_points():
    assert curves.jumpstart(TRANSFER, SCRATCH) == pytest.approx(0.0)          # both at chance at step 0
    assert curves.jumpstart(TRANSFER, SCRATCH, first=2) == pytest.approx((0.7 - 0.3) / 2)
    assert curves.jumpstart(TRANSFER[1:], SCRATCH[1:]) == pytest.approx(0.4)  # after the first steps


def test_asymptote_and_its_gap():
    assert curves.asymptote(SCRATCH, last=2) == pytest.approx(0.55)
    assert curves.asymptotic_gap(TRANSFER, SCRATCH, last=2) == pytest.approx(0.75 - 0.55)
    assert curves.asymptotic_gap(TRANSFER, SCRATCH, last=1) == pytest.approx(0.2)


def test_area_under_curve_by_hand():
    # trapezoids: 10 * 0.15 + 10 * 0.35 + 20 * 0.55 = 16; span 40
    assert curves.area_under_curve(STEPS, SCRATCH, normalise=False) == pytest.approx(16.0)
    assert curves.area_under_curve(STEPS, SCRATCH) == pytest.approx(0.4)
    # uneven spacing matters: the plain mean of the points is 0.35, not the area
    assert curves.area_under_curve(STEPS, SCRATCH) != pytest.approx(SCRATCH.mean())
    assert curves.area_under_curve([0, 5], [0.3, 0.3]) == pytest.approx(0.3)  # a flat curve: its level


def test_transfer_ratio_by_hand():
    auc_t = (10 * 0.35 + 10 * 0.65 + 20 * 0.75) / 40
    assert curves.transfer_ratio(STEPS, TRANSFER, SCRATCH) == pytest.approx((auc_t - 0.4) / 0.4)
    with pytest.raises(ValueError, match="positive"):
        curves.transfer_ratio([0, 1], [0.5, 0.5], [0.0, 0.0])


def test_time_to_threshold_first_step_at_or_above():
    assert curves.time_to_threshold(STEPS, SCRATCH, 0.5) == 20.0              # reached exactly counts
    assert curves.time_to_threshold(STEPS, TRANSFER, 0.5) == 10.0
    assert curves.time_to_threshold(STEPS, SCRATCH, 0.9) == math.inf
    noisy = np.array([0.1, 0.6, 0.4, 0.7])                                     # first crossing, not last
    assert curves.time_to_threshold(STEPS, noisy, 0.5) == 10.0


def test_mean_slope_and_truncate():
    assert curves.mean_slope(STEPS, SCRATCH, 20, 40) == pytest.approx(0.1 / 20)
    with pytest.raises(ValueError, match="not a recorded step"):
        curves.mean_slope(STEPS, SCRATCH, 15, 40)
    with pytest.raises(ValueError, match="after start"):
        curves.mean_slope(STEPS, SCRATCH, 40, 20)
    s, v = curves.truncate(STEPS, TRANSFER, 20)
    assert s.tolist() == [0, 10, 20] and v.tolist() == [0.1, 0.6, 0.7]
    with pytest.raises(ValueError, match="no recorded step"):
        curves.truncate(STEPS, TRANSFER, -1)


def test_measures_are_vectorised_over_seeds():
    t, b = np.stack([TRANSFER, TRANSFER + 0.1]), np.stack([SCRATCH, SCRATCH])
    assert curves.asymptotic_gap(t, b, last=1).shape == (2,)
    assert curves.area_under_curve(STEPS, t).tolist() == pytest.approx(
        [curves.area_under_curve(STEPS, TRANSFER), curves.area_under_curve(STEPS, TRANSFER + 0.1)])
    assert curves.time_to_threshold(STEPS, t, 0.75).tolist() == [40.0, 20.0]
    out = curves.benefits(STEPS, t, b, threshold=0.5, last=2)
    assert set(out) == {"jumpstart", "asymptotic_gap", "auc_gap", "transfer_ratio",
                        "time_to_threshold_transfer", "time_to_threshold_baseline"}
    assert out["time_to_threshold_baseline"].tolist() == [20.0, 20.0]
    assert out["auc_gap"] == pytest.approx(curves.area_under_curve(STEPS, t) - 0.4)


def test_curves_of_unequal_length_are_refused():
    with pytest.raises(ValueError, match="same steps"):
        curves.asymptotic_gap(np.r_[TRANSFER, 0.9], SCRATCH)
    with pytest.raises(ValueError, match="same steps"):
        curves.jumpstart(TRANSFER[:3], SCRATCH)
    with pytest.raises(ValueError, match="points per curve"):
        curves.area_under_curve(STEPS, TRANSFER[:3])
    with pytest.raises(ValueError, match="points per curve"):
        curves.benefits(STEPS, np.r_[TRANSFER, 0.9], SCRATCH, threshold=0.5)


@pytest.mark.parametrize("steps, values, words", [
    ([0, 10, 10], [0.1, 0.2, 0.3], "strictly increasing"),
    ([[0, 1]], [0.1, 0.2], "1-D"),
    ([0, 1], [0.1, float("nan")], "NaN"),
])
def test_bad_inputs_fail_loudly(steps, values, words):
    with pytest.raises(ValueError, match=words):
        curves.as_curves(steps, values)


def test_window_sizes_are_checked():
    with pytest.raises(ValueError, match="last must be an integer"):
        curves.asymptote(SCRATCH, last=5)
    with pytest.raises(ValueError, match="first must be an integer"):
        curves.jumpstart(TRANSFER, SCRATCH, first=0)
    with pytest.raises(ValueError, match="at least 2 points"):
        curves.area_under_curve([0], [0.5])


def _toy(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 5, generator=g)
    y = (x[:, 0] > 0).long()
    return x, y


def test_record_curve_records_every_eval_and_the_tracked_splits():
    x, y = _toy()
    torch.manual_seed(0)
    model = nn.Linear(5, 2)
    r = curves.record_curve(model, x, y, x[:32], y[:32], lr=0.1, steps=30, eval_every=10, batch_size=8, seed=0,
                            track={"train": (x, y)})
    assert r["steps"].tolist() == [0, 10, 20, 30]
    assert r["accuracy"].shape == r["loss"].shape == r["tracked"]["train"].shape == (4,)
    assert r["accuracy"][-1] > 0.8 and r["loss"][-1] < r["loss"][0]     # a separable toy problem is learnt
    assert not r["model"].training


def test_record_curve_is_reproducible_and_checks_its_budget():
    x, y = _toy()
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        runs.append(curves.record_curve(nn.Linear(5, 2), x, y, x, y, lr=0.05, steps=20, eval_every=5, seed=3))
    assert np.array_equal(runs[0]["accuracy"], runs[1]["accuracy"])
    with pytest.raises(ValueError, match="multiple of eval_every"):
        curves.record_curve(nn.Linear(5, 2), x, y, x, y, lr=0.1, steps=25, eval_every=10)
    with pytest.raises(ValueError, match="equal lengths"):
        curves.record_curve(nn.Linear(5, 2), x, y[:10], x, y, lr=0.1, steps=10, eval_every=5)


def test_plot_curves_draws_a_mean_line_and_a_band_per_arm():
    fig, ax = plt.subplots()
    curves.plot_curves(ax, STEPS, {"scratch": np.stack([SCRATCH, SCRATCH + 0.1]), "transfer": TRANSFER[None]})
    assert [line.get_label() for line in ax.get_lines()] == ["scratch", "transfer"]
    assert np.allclose(ax.get_lines()[0].get_ydata(), 100 * (SCRATCH + 0.05))
    assert len(ax.collections) == 1                      # one band: the single-seed arm has none
    plt.close(fig)
    with pytest.raises(ValueError, match="points per curve"):
        curves.plot_curves(plt.subplots()[1], STEPS, {"short": SCRATCH[None, :3]})
    plt.close("all")
