"""Tests of tlcourse.meta.demo: the pretrained-classifier embedding, L2Normalize and the autograd
graph measurement used by chapter T14."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from tlcourse.meta.demo import L2Normalize, autograd_graph_bytes, train_classifier_embedding
from tlcourse.meta.maml import maml_loss
from tlcourse.meta.sinusoid import sample_sinusoid_tasks, sinusoid_mlp


def _blobs(seed=0, classes=6, per_class=20, dim=8):
    g = torch.Generator().manual_seed(seed)
    centres = 3 * torch.randn(classes, dim, generator=g)
    y = torch.arange(classes).repeat_interleave(per_class)
    return centres[y] + 0.5 * torch.randn(len(y), dim, generator=g), y


def test_classifier_embedding_learns_and_uses_only_the_training_classes():
    x, y = _blobs()
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    h = train_classifier_embedding(net, x, y, classes=[0, 1, 2, 3], steps=60, batch_size=16, lr=1e-2, log_every=20)
    assert h["step"] == [20, 40, 60]
    assert h["loss"][-1] < h["loss"][0] and h["accuracy"][-1] > 0.8


def test_classifier_embedding_is_reproducible_and_restores_the_global_rng():
    x, y = _blobs()
    outs = []
    for _ in range(2):
        torch.manual_seed(1)
        net = nn.Linear(8, 4)
        state = torch.random.get_rng_state()
        train_classifier_embedding(net, x, y, classes=[0, 1, 2], steps=5, batch_size=8, seed=3)
        assert torch.equal(state, torch.random.get_rng_state())
        outs.append(net.weight.detach().clone())
    assert torch.equal(*outs)


@pytest.mark.parametrize("kwargs, words", [
    (dict(steps=0), "steps must be a positive integer"),
    (dict(batch_size=True), "batch_size must be a positive integer"),
    (dict(lr=-1.0), "lr must be a positive finite number"),
    (dict(classes=[99]), "at least two class ids"),
])
def test_classifier_embedding_rejects_bad_arguments(kwargs, words):
    x, y = _blobs()
    args = dict(classes=[0, 1], steps=2, batch_size=4) | kwargs
    with pytest.raises(ValueError, match=words):
        train_classifier_embedding(nn.Linear(8, 4), x, y, **args)
    with pytest.raises(ValueError, match="same length"):
        train_classifier_embedding(nn.Linear(8, 4), x, y[:-1], classes=[0, 1], steps=2, batch_size=4)


def test_l2_normalize_gives_unit_rows():
    z = L2Normalize()(torch.randn(5, 3) * 10)
    assert torch.allclose(z.norm(dim=1), torch.ones(5))


def test_graph_bytes_counts_saved_tensors_once():
    w = torch.ones(4, requires_grad=True)
    x = torch.full((4,), 2.0)
    nodes, nbytes = autograd_graph_bytes((w * x).sum())
    assert (nodes, nbytes) == (3, 16)
    assert autograd_graph_bytes(torch.ones(3)) == (0, 0)
    with pytest.raises(ValueError, match="must be a tensor"):
        autograd_graph_bytes(3.0)


def test_second_order_maml_graph_grows_with_steps_and_first_order_does_not():
    tasks = sample_sinusoid_tasks(4, seed=0)
    sizes = {}
    for first in (False, True):
        for steps in (1, 2, 3):
            sizes[first, steps] = autograd_graph_bytes(
                maml_loss(sinusoid_mlp(seed=0), tasks, F.mse_loss, steps=steps, first_order=first))[1]
    assert sizes[True, 1] == sizes[True, 2] == sizes[True, 3]
    growth = sizes[False, 2] - sizes[False, 1]
    assert growth > 0 and sizes[False, 3] - sizes[False, 2] == growth
    assert sizes[False, 1] > sizes[True, 1]
