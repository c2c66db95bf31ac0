"""tlcourse.bridge on tiny cases: the colour recipe, the frame colour, the staged trainer, the splits."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from tlcourse.bridge import Stage, colour_bridge, dann_snapshots, few_labels, frame_colours, train_stages
from tlcourse.dann import DomainDiscriminator
from tlcourse.train import make_loader


def test_colour_bridge_is_the_absolute_difference_per_channel():
    d = torch.tensor([[[[0.0, 1.0], [0.25, 0.5]]]])
    out = colour_bridge(d, torch.tensor([[0.0, 1.0, 0.5]]))
    assert out.shape == (1, 3, 2, 2)
    assert torch.allclose(out[0, 0], d[0, 0])                # black background: the digit itself
    assert torch.allclose(out[0, 1], 1 - d[0, 0])            # white background: the digit inverted
    assert torch.allclose(out[0, 2], (0.5 - d[0, 0]).abs())


def test_colour_bridge_refuses_bad_inputs():
    with pytest.raises(ValueError, match="grey images"):
        colour_bridge(torch.zeros(2, 3, 4, 4), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="colours must be"):
        colour_bridge(torch.zeros(2, 1, 4, 4), torch.zeros(3, 3))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        colour_bridge(torch.full((1, 1, 2, 2), 2.0), torch.zeros(1, 3))


def test_frame_colours_reads_the_border_only():
    x = torch.zeros(2, 3, 6, 6)
    x[0, 1] = 0.4
    x[:, :, 2:4, 2:4] = 1.0                                   # the "digit" in the centre is ignored
    assert torch.allclose(frame_colours(x, border=2), torch.tensor([[0.0, 0.4, 0.0], [0.0, 0.0, 0.0]]))
    with pytest.raises(ValueError, match="border"):
        frame_colours(x, border=3)


def test_train_stages_takes_exactly_the_steps_and_is_seeded():
    def run(seed):
        torch.manual_seed(0)
        g, c = nn.Sequential(nn.Flatten(), nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU()), nn.Linear(6, 2)
        x, y = torch.randn(7, 1, 2, 2, generator=torch.Generator().manual_seed(1)), torch.tensor([0, 1] * 3 + [0])
        taken = train_stages(g, c, [Stage("a", x, y, 5), Stage("b", x[:3], y[:3], 4), Stage("none", x, y, 0)],
                             seed=seed, batch_size=2)
        return taken, c.weight.detach().clone(), g.training
    taken, w0, training = run(0)
    assert taken == {"a": 5, "b": 4, "none": 0} and not training
    assert torch.equal(run(0)[1], w0) and not torch.equal(run(1)[1], w0)


def test_train_stages_refuses_bad_stages():
    g, c = nn.Flatten(), nn.Linear(4, 2)
    with pytest.raises(ValueError, match="as many labels"):
        train_stages(g, c, [Stage("a", torch.zeros(3, 4), torch.zeros(2, dtype=torch.long), 1)], seed=0)
    with pytest.raises(ValueError, match="steps"):
        train_stages(g, c, [Stage("a", torch.zeros(3, 4), torch.zeros(3, dtype=torch.long), -1)], seed=0)


def test_few_labels_draws_per_class_and_checks_counts():
    y = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2])
    idx = few_labels(y, 2, seed=0)
    assert torch.bincount(y[idx]).tolist() == [2, 2, 2] and len(set(idx.tolist())) == 6
    with pytest.raises(ValueError, match="class 1"):
        few_labels(y, 3, seed=0)


def test_dann_snapshots_are_one_run_with_the_full_budget():
    torch.manual_seed(0)
    xs, ys, xt = torch.randn(32, 2), torch.randint(0, 2, (32,)), torch.randn(32, 2) + 2
    g, c, d = nn.Linear(2, 4), nn.Linear(4, 2), DomainDiscriminator(4, hidden=8, dropout=0.0)
    snaps = dann_snapshots(g, c, d, make_loader(xs, ys, 8), make_loader(xt, ys, 8), steps=12, every=4, seed=0)
    assert [s for s, _ in snaps] == [4, 8, 12]
    assert not torch.equal(snaps[0][1][1].weight, snaps[-1][1][1].weight)      # copies, not the live module
    assert torch.equal(snaps[-1][1][1].weight, c.weight)
    with pytest.raises(ValueError, match="divide"):
        dann_snapshots(g, c, d, make_loader(xs, ys, 8), make_loader(xt, ys, 8), steps=10, every=4)



def test_mnist_to_mnistm_keeps_every_image_in_one_role():
    from tlcourse.bridge import mnist_to_mnistm
    sh = mnist_to_mnistm(seed=0, n_source=200, n_source_val=100, n_target=200, few_per_class=2, n_select=100,
                         n_usps=50)
    assert sh.source_x.shape == (200, 3, 16, 16) and sh.source_digits.shape == (200, 1, 16, 16)
    assert sh.few_x.shape[0] == 20 and torch.bincount(sh.few_y).tolist() == [2] * 10
    assert sh.test_x.shape == (2000, 3, 16, 16) and sh.usps_x.shape == (50, 3, 16, 16)
    assert torch.equal(sh.source_x[:, :1], sh.source_digits)
