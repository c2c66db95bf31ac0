import numpy as np
import pytest
import torch
from torch import nn

from tlcourse.transfer import balanced_subset, replace_head, scratch_vs_transfer, train_on_subset


def test_balanced_subset_is_balanced_distinct_nested_and_seeded():
    labels = np.repeat(np.arange(4), 30)
    small, big = balanced_subset(labels, 5, seed=1), balanced_subset(labels, 12, seed=1)
    assert np.bincount(labels[small]).tolist() == [5] * 4
    assert len(set(big)) == len(big) == 48
    assert set(small) <= set(big)
    assert np.array_equal(small, balanced_subset(labels, 5, seed=1))
    assert not np.array_equal(np.sort(small), np.sort(balanced_subset(labels, 5, seed=2)))
    with pytest.raises(ValueError, match="fewer than"):
        balanced_subset(labels, 31)
    with pytest.raises(ValueError, match=">= 1"):
        balanced_subset(labels, 0)


def test_replace_head_is_seeded_and_checks_type():
    a, b = nn.Module(), nn.Module()
    a.head, b.head = nn.Linear(4, 2), nn.Linear(4, 2)
    replace_head(a, 7, seed=3), replace_head(b, 7, seed=3)
    assert a.head.out_features == 7 and torch.equal(a.head.weight, b.head.weight)
    with pytest.raises(ValueError, match="nn.Linear"):
        replace_head(nn.Sequential(), 3)


class Tiny(nn.Module):
    def __init__(self, k=3):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(2, 16), nn.ReLU())
        self.head = nn.Linear(16, k)

    def forward(self, x):
        return self.head(self.body(x))


def _blobs(n, seed):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    return torch.tensor([[3.0, 0], [-3, 0], [0, 3]])[y] + torch.randn(n, 2, generator=g), y


def test_train_on_subset_keeps_frozen_blocks_fixed():
    x, y = _blobs(60, 0)
    xt, yt = _blobs(90, 1)
    net = Tiny()
    body = [p.clone() for p in net.body.parameters()]
    out = train_on_subset(net, x, y, xt, yt, steps=30, lr=1e-2, frozen_blocks=["body"])
    assert all(torch.equal(a, b) for a, b in zip(body, net.body.parameters()))
    assert out["accuracy"] > 0.8


def test_scratch_vs_transfer_table():
    x, y = _blobs(90, 0)
    xt, yt = _blobs(90, 1)
    table = scratch_vs_transfer({"a": Tiny, "b": Tiny}, x, y, xt, yt, sizes=[2, 10], seeds=[0, 1],
                                steps=20, lr=1e-2)
    assert len(table) == 2 * 2 * 2
    assert sorted(table["n_train"].unique()) == [6, 30]
    assert table["accuracy"].between(0, 1).all()
    with pytest.raises(ValueError, match="frozen"):
        scratch_vs_transfer({"a": Tiny}, x, y, xt, yt, sizes=[2], frozen={"zzz": ["body"]})
