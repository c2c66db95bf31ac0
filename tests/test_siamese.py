"""Tests of tlcourse.meta.siamese: the losses on tiny cases, the samplers, the metrics."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from tlcourse.meta.siamese import (contrastive_loss, embed_images, nearest_support_accuracy, pair_distances,
                                   sample_pairs, sample_triplets, train_siamese, triplet_loss,
                                   verification_rates, verification_roc)


def _pair(d: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Two 2-d points at distance d."""
    return torch.zeros(1, 2), torch.tensor([[0.6 * d, 0.8 * d]])


# ---------------------------------------------------------------- contrastive loss
@pytest.mark.parametrize("d", [0.0, 0.3, 1.0, 2.5])
def test_contrastive_same_pair_costs_half_the_squared_distance(d):
    z1, z2 = _pair(d)
    assert contrastive_loss(z1, z2, [1], margin=1.0).item() == pytest.approx(d ** 2 / 2, abs=1e-6)


@pytest.mark.parametrize("d, margin, expected", [(0.0, 1.0, 0.5), (0.4, 1.0, 0.18), (1.0, 1.0, 0.0),
                                                 (2.5, 1.0, 0.0), (2.5, 3.0, 0.125)])
def test_contrastive_different_pair_is_a_squared_hinge_on_the_margin(d, margin, expected):
    z1, z2 = _pair(d)
    assert contrastive_loss(z1, z2, [0], margin=margin).item() == pytest.approx(expected, abs=1e-6)


def test_contrastive_is_a_mean_over_pairs_and_accepts_bool_labels():
    a1, a2 = _pair(2.0)
    b1, b2 = _pair(0.5)
    z1, z2 = torch.cat([a1, b1]), torch.cat([a2, b2])
    both = contrastive_loss(z1, z2, torch.tensor([True, False]), margin=1.0).item()
    assert both == pytest.approx((2.0 ** 2 / 2 + 0.5 ** 2 / 2) / 2, abs=1e-6)   # (2 + 0.125) / 2


def test_contrastive_gradients_pull_same_and_push_close_different_pairs():
    z1 = torch.zeros(2, 2)
    z2 = torch.tensor([[0.3, 0.0], [0.3, 0.0]], requires_grad=True)
    contrastive_loss(z1, z2, [1, 0], margin=1.0).backward()
    assert z2.grad[0, 0] > 0        # same: descent moves it toward z1 (x decreases)
    assert z2.grad[1, 0] < 0        # different and inside the margin: descent moves it away
    far = torch.tensor([[2.0, 0.0]], requires_grad=True)
    contrastive_loss(torch.zeros(1, 2), far, [0], margin=1.0).backward()
    assert torch.all(far.grad == 0)  # beyond the margin: no gradient at all


def test_pair_distance_of_identical_points_is_zero_with_finite_gradient():
    z = torch.ones(1, 3, requires_grad=True)
    d = pair_distances(z, torch.ones(1, 3))
    d.sum().backward()
    assert d.item() == 0 and torch.isfinite(z.grad).all()


def test_contrastive_rejects_bad_input():
    z1, z2 = _pair(1.0)
    with pytest.raises(ValueError, match="0 .different classes. or 1"):
        contrastive_loss(z1, z2, [2])
    with pytest.raises(ValueError, match="one 0/1 label per pair"):
        contrastive_loss(z1, z2, [1, 0])
    with pytest.raises(ValueError, match="margin must be a positive"):
        contrastive_loss(z1, z2, [1], margin=0)
    with pytest.raises(ValueError, match="same shape"):
        contrastive_loss(z1, torch.zeros(2, 2), [1])


# ---------------------------------------------------------------- triplet loss
def test_triplet_loss_at_known_distances_and_margin():
    a, p, n = torch.zeros(1, 2), torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.5]])
    # ||a-p||^2 = 1, ||a-n||^2 = 2.25
    assert triplet_loss(a, p, n, margin=0.2).item() == pytest.approx(0.0)
    assert triplet_loss(a, p, n, margin=2.0).item() == pytest.approx(1 - 2.25 + 2.0)
    assert triplet_loss(a, n, p, margin=0.2).item() == pytest.approx(2.25 - 1 + 0.2)


def test_triplet_loss_is_zero_only_beyond_the_margin():
    a, p = torch.zeros(1, 1), torch.ones(1, 1)
    at_margin = torch.full((1, 1), np.sqrt(1.2))  # ||a-n||^2 = 1.2 = 1 + margin
    assert triplet_loss(a, p, at_margin, margin=0.2).item() == pytest.approx(0.0, abs=1e-6)
    assert triplet_loss(a, p, at_margin * 0.99, margin=0.2).item() > 0


# ---------------------------------------------------------------- samplers
def test_sample_pairs_is_balanced_correct_and_seeded():
    labels = torch.arange(10).repeat_interleave(4)
    pairs = sample_pairs(labels, 101, seed=3)
    assert pairs.same.sum().item() == 50 and len(pairs.same) == 101
    same = labels[pairs.first] == labels[pairs.second]
    assert torch.equal(same.long(), pairs.same)
    assert not torch.any((pairs.first == pairs.second) & pairs.same.bool())   # two distinct drawings
    again = sample_pairs(labels, 101, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(pairs, again))
    assert not torch.equal(pairs.first, sample_pairs(labels, 101, seed=4).first)


def test_sample_pairs_and_triplets_stay_in_their_classes():
    labels = torch.arange(10).repeat_interleave(4)
    allowed = [2, 5, 7]
    pairs = sample_pairs(labels, 60, classes=allowed, seed=0)
    used = set(labels[pairs.first].tolist()) | set(labels[pairs.second].tolist())
    assert used <= set(allowed)
    t = sample_triplets(labels, 60, classes=allowed, seed=0)
    assert set(labels[torch.cat(list(t))].tolist()) <= set(allowed)
    assert torch.all(labels[t.anchor] == labels[t.positive]) and torch.all(labels[t.anchor] != labels[t.negative])
    assert torch.all(t.anchor != t.positive)


def test_samplers_reject_impossible_requests():
    with pytest.raises(ValueError, match="at least 2 classes"):
        sample_pairs(torch.tensor([0, 0, 1, 1]), 4, classes=[0])
    with pytest.raises(ValueError, match="single example"):
        sample_pairs(torch.tensor([0, 0, 1]), 4)
    with pytest.raises(ValueError, match="no examples"):
        sample_triplets(torch.tensor([0, 0, 1, 1]), 4, classes=[0, 9])


# ---------------------------------------------------------------- training
def test_train_siamese_lowers_the_loss_and_separates_classes():
    torch.manual_seed(0)
    centres = 3 * torch.randn(6, 8)
    labels = torch.arange(6).repeat_interleave(20)
    x = centres[labels] + 0.5 * torch.randn(len(labels), 8)
    torch.manual_seed(0)
    net = nn.Linear(8, 4)
    h = train_siamese(net, x, labels, classes=range(4), steps=150, pairs_per_step=32, margin=2.0, lr=1e-2,
                      log_every=50)
    assert h["loss"][-1] < h["loss"][0]
    z = embed_images(net, x)
    # on the two classes it never trained on, nearest-support one-shot accuracy is far above chance
    acc = nearest_support_accuracy(z, labels, ways=2, episodes=100, classes=[4, 5], seed=0)
    assert acc.mean > 0.8


def test_train_siamese_triplet_counts_images_and_is_seeded():
    x, y = torch.randn(40, 5), torch.arange(8).repeat(5)
    runs = []
    for _ in range(2):
        torch.manual_seed(1)
        net = nn.Linear(5, 3)
        h = train_siamese(net, x, y, classes=range(8), steps=3, pairs_per_step=4, loss="triplet", margin=0.2,
                          log_every=3)
        runs.append(net.weight.detach().clone())
    assert h["images"] == [12] and torch.equal(*runs)
    with pytest.raises(ValueError, match="'contrastive' or 'triplet'"):
        train_siamese(net, x, y, classes=range(8), steps=1, pairs_per_step=4, loss="bce")


# ---------------------------------------------------------------- verification metrics
def test_verification_roc_matches_sklearn_and_finds_the_equal_error_point():
    rng = np.random.default_rng(0)
    same = np.r_[np.ones(300), np.zeros(300)].astype(int)
    d = np.r_[rng.normal(1.0, 0.3, 300), rng.normal(2.0, 0.3, 300)]
    roc = verification_roc(d, same)
    assert roc.auc == pytest.approx(roc_auc_score(same, -d))
    rates = verification_rates(d, same, roc.eer_threshold)
    assert abs(rates.far - rates.frr) < 0.01 and roc.eer == pytest.approx((rates.far + rates.frr) / 2, abs=0.005)
    # two unit-variance-0.3 normals 1 apart: EER = Phi(-0.5 / 0.3), about 4.8 %
    assert 0.03 < roc.eer < 0.07 and 1.3 < roc.eer_threshold < 1.7


def test_verification_rates_at_the_extremes_and_errors():
    d, same = [0.1, 0.2, 0.3, 0.4], [1, 0, 1, 0]
    assert verification_rates(d, same, -1.0) == (0.0, 1.0, 0.5)       # accept nothing
    assert verification_rates(d, same, 10.0) == (1.0, 0.0, 0.5)       # accept everything
    with pytest.raises(ValueError, match="both present"):
        verification_roc([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError, match="threshold must be a number"):
        verification_rates(d, same, None)


# ---------------------------------------------------------------- one-shot classification
def test_nearest_support_uses_the_closest_example_not_a_threshold():
    # class 0 at 0, class 1 at 10; any query is nearest to its own class whatever the scale
    z = torch.tensor([[0.0], [0.1], [0.2], [10.0], [10.1], [10.2]])
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    assert nearest_support_accuracy(z, labels, ways=2, episodes=20).mean == 1.0
    assert nearest_support_accuracy(1000 * z, labels, ways=2, episodes=20).mean == 1.0


def test_nearest_support_with_several_shots_takes_the_nearest_example_per_class():
    # K = 2: each class has a near and a far support point; the min over the class decides
    z = torch.tensor([[0.0], [5.0], [0.1], [1.0], [1.1], [1.2]])
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    acc = nearest_support_accuracy(z, labels, ways=2, shots=2, episodes=50, seed=0)
    assert 0 <= acc.mean <= 1 and acc.accuracies.shape == (50,)


def test_nearest_support_at_chance_on_random_embeddings():
    torch.manual_seed(0)
    z, labels = torch.randn(400, 8), torch.arange(40).repeat_interleave(10)
    acc = nearest_support_accuracy(z, labels, ways=10, queries=5, episodes=300, seed=0)
    assert abs(acc.mean - 0.1) < 0.03
    with pytest.raises(ValueError, match="embed the images first"):
        nearest_support_accuracy(torch.randn(10, 1, 2, 2), labels[:10], ways=2)
