"""Tests for tlcourse.meta.protonets: prototypes, distance logits, the loss, training and evaluation."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from tlcourse.meta.episodes import sample_episodes
from tlcourse.meta.protonets import (conv4_embedding, evaluate_protonet, protonet_logits, protonet_loss,
                                     prototype_logits, prototypes, train_protonet)


def test_prototypes_are_class_means():
    z = torch.randn(2, 7, 3, dtype=torch.float64)
    y = torch.tensor([[0, 1, 2, 0, 1, 2, 2], [1, 1, 0, 0, 0, 2, 1]])
    c = prototypes(z, y)
    assert c.shape == (2, 3, 3) and c.dtype == torch.float64
    for t in range(2):
        for n in range(3):
            torch.testing.assert_close(c[t, n], z[t][y[t] == n].mean(0))
    torch.testing.assert_close(prototypes(z[0], y[0]), c[0])  # unbatched input
    assert prototypes(z[:, :1], torch.zeros(2, 1, dtype=torch.long), ways=1).shape == (2, 1, 3)


def test_logits_are_negative_squared_distances():
    q, c = torch.randn(2, 5, 4), torch.randn(2, 3, 4)
    logits = prototype_logits(q, c)
    assert logits.shape == (2, 5, 3)
    torch.testing.assert_close(logits, -torch.cdist(q, c) ** 2, rtol=1e-5, atol=1e-5)
    assert prototype_logits(torch.tensor([[1.0, 2.0]]), torch.tensor([[4.0, 6.0]])).item() == -25.0


def test_a_query_equal_to_a_prototype_is_classified_to_it():
    c = torch.randn(1, 6, 8)
    logits = prototype_logits(c[:, [4, 1, 1, 5]], c)
    assert logits.argmax(-1).tolist() == [[4, 1, 1, 5]]
    assert torch.all(logits[0, 0, 4] == 0) and torch.all(logits.max(-1).values == 0)


def test_prototype_inputs_are_checked():
    z = torch.randn(4, 3)
    with pytest.raises(ValueError, match="class 1 has no support example"):
        prototypes(z, torch.tensor([0, 0, 2, 2]))
    with pytest.raises(ValueError, match="support_labels must be integers of shape"):
        prototypes(z, torch.tensor([0, 1, 1]))
    with pytest.raises(ValueError, match=r"support_labels must be in 0\.\.1 for ways=2"):
        prototypes(z, torch.tensor([0, 1, 2, 1]), ways=2)
    with pytest.raises(ValueError, match="same T and D"):
        prototype_logits(torch.randn(5, 3), torch.randn(2, 4))
    with pytest.raises(ValueError, match="same T and D"):
        prototype_logits(torch.randn(2, 5, 3), torch.randn(3, 2, 3))


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(1, 4), min_size=0, max_size=5).filter(lambda s: len(s) not in (2, 3)))
def test_prototypes_reject_bad_shapes(shape):
    with pytest.raises(ValueError, match="support must be a tensor with 2 dimensions"):
        prototypes(torch.zeros(shape), torch.zeros(shape[:-1], dtype=torch.long))


def test_protonet_logits_match_the_pieces():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 5))  # no BatchNorm: embedding per example
    xs, xq = torch.randn(3, 6, 1, 4, 4), torch.randn(3, 4, 1, 4, 4)
    ys = torch.tensor([0, 1, 0, 1, 2, 2]).repeat(3, 1)
    expected = prototype_logits(net(xq.flatten(0, 1)).reshape(3, 4, 5),
                                prototypes(net(xs.flatten(0, 1)).reshape(3, 6, 5), ys))
    torch.testing.assert_close(protonet_logits(net, xs, ys, xq), expected)


def test_loss_is_cross_entropy_and_embedding_learns_from_it():
    torch.manual_seed(0)
    items, labels = torch.randn(40, 1, 4, 4), torch.arange(8).repeat(5)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 5))
    ep = sample_episodes(items, labels, ways=4, shots=2, queries=3, tasks=2, seed=0)
    loss, acc = protonet_loss(net, ep)
    logits = protonet_logits(net, ep.x_support, ep.y_support, ep.x_query)
    manual = -logits.log_softmax(-1).gather(-1, ep.y_query.unsqueeze(-1)).mean()
    torch.testing.assert_close(loss, manual)
    assert acc == (logits.argmax(-1) == ep.y_query).float().mean()
    loss.backward()
    assert net[1].weight.grad.abs().sum() > 0


def test_training_on_separable_data_reaches_perfect_test_accuracy():
    """Classes are distinct mean patterns plus noise; unseen classes must be recognised after training."""
    gen = torch.Generator().manual_seed(0)
    centres = torch.randn(16, 1, 8, 8, generator=gen)
    labels = torch.arange(16).repeat_interleave(6)
    images = centres[labels] + 0.3 * torch.randn(96, 1, 8, 8, generator=gen)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 16))
    train, test = list(range(10)), list(range(10, 16))
    history = train_protonet(net, images, labels, ways=5, shots=1, queries=3, episodes=60,
                             classes=train, lr=3e-3, halve_lr_every=30, log_every=20, progress=False)
    assert history["step"] == [20, 40, 60]
    assert history["lr"] == [3e-3, 1.5e-3, 1.5e-3]  # the rate of each row's last step
    assert history["loss"][-1] < history["loss"][0]
    result = evaluate_protonet(net, images, labels, ways=5, shots=1, queries=2, episodes=50,
                               classes=test, seed=1)
    assert result.mean > 0.95 and result.accuracies.shape == (50,)
    again = evaluate_protonet(net, images, labels, ways=5, shots=1, queries=2, episodes=50,
                              classes=test, seed=1)
    assert torch.equal(result.accuracies, again.accuracies)  # same seed, same episodes


def test_training_is_reproducible_and_restores_global_rng():
    items, labels = torch.rand(32, 1, 28, 28), torch.arange(8).repeat(4)

    def run():
        torch.manual_seed(1)
        net = conv4_embedding(hidden=8, out_channels=8)
        state = torch.random.get_rng_state()
        h = train_protonet(net, items, labels, ways=3, shots=1, queries=1, episodes=3, seed=7,
                           progress=False)
        assert torch.equal(torch.random.get_rng_state(), state)
        return h["loss"], net[0].weight.detach().clone()

    (loss_a, w_a), (loss_b, w_b) = run(), run()
    assert loss_a == loss_b and torch.equal(w_a, w_b)


def test_evaluation_uses_running_statistics_and_restores_mode():
    torch.manual_seed(0)
    net = conv4_embedding(hidden=8, out_channels=8).train()
    items, labels = torch.rand(30, 1, 28, 28), torch.arange(6).repeat(5)
    before = net[1].running_mean.clone()
    evaluate_protonet(net, items, labels, ways=3, shots=1, queries=2, episodes=5)
    assert net.training and torch.equal(net[1].running_mean, before)


def test_training_rejects_impossible_requests():
    items, labels = torch.rand(12, 1, 28, 28), torch.arange(4).repeat(3)
    net = conv4_embedding(hidden=4, out_channels=4)
    with pytest.raises(ValueError, match="ways=5 but only 4 classes"):
        train_protonet(net, items, labels, ways=5, shots=1, queries=1, episodes=1, progress=False)
    with pytest.raises(ValueError, match="exceeds the 3 examples"):
        train_protonet(net, items, labels, ways=2, shots=2, queries=2, episodes=1, progress=False)
    with pytest.raises(ValueError, match="lr must be a positive finite number"):
        train_protonet(net, items, labels, ways=2, shots=1, queries=1, episodes=1, lr=0.0)
    with pytest.raises(ValueError, match="episodes must be an integer >= 1"):
        train_protonet(net, items, labels, ways=2, shots=1, queries=1, episodes=0)


def test_conv4_shapes():
    net = conv4_embedding()
    assert net(torch.zeros(3, 1, 28, 28)).shape == (3, 64)
    assert conv4_embedding(in_channels=3)(torch.zeros(2, 3, 84, 84)).shape == (2, 1600)
