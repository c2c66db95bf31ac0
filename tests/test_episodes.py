"""Tests for tlcourse.meta.episodes: episode sampling, the alphabet split, rotations and the CI."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tlcourse.meta.episodes import (EVALUATION_ALPHABETS, Episode, evaluate_episodes,
                                    mean_confidence_interval, rotate_classes, sample_episode_indices,
                                    sample_episodes, split_by_alphabet)


def _toy(classes=6, per_class=5):
    """Items whose value encodes (class, example): item i is [i], label i // per_class."""
    labels = torch.arange(classes).repeat_interleave(per_class)
    return torch.arange(classes * per_class, dtype=torch.float32).reshape(-1, 1), labels


# --- sampling ------------------------------------------------------------------------------------

def test_episode_shapes_and_relabelling():
    items = torch.rand(30, 1, 4, 4)
    labels = torch.arange(6).repeat_interleave(5)
    ep = sample_episodes(items, labels, ways=3, shots=2, queries=3, tasks=4, seed=0)
    assert isinstance(ep, Episode)
    xs, ys, xq, yq = ep
    assert xs.shape == (4, 6, 1, 4, 4) and xq.shape == (4, 9, 1, 4, 4)
    assert ys.shape == (4, 6) and yq.shape == (4, 9) and ys.dtype == yq.dtype == torch.int64
    assert ys.tolist() == [[0, 0, 1, 1, 2, 2]] * 4 and yq.tolist() == [[0, 0, 0, 1, 1, 1, 2, 2, 2]] * 4


def test_episode_examples_match_their_labels_and_never_overlap():
    items, labels = _toy(classes=8, per_class=6)
    idx = sample_episode_indices(labels, ways=5, shots=2, queries=4, tasks=50, seed=3)
    for t in range(50):
        support, query, classes = idx.support[t], idx.query[t], idx.classes[t]
        assert len(set(classes.tolist())) == 5  # distinct classes per episode
        assert not set(support.tolist()) & set(query.tolist())  # no example is support and query
        assert len(set(query.tolist())) == 20
        # episode class n holds examples of original class classes[n] only
        assert torch.equal(labels[support].reshape(5, 2), classes[:, None].expand(5, 2))
        assert torch.equal(labels[query].reshape(5, 4), classes[:, None].expand(5, 4))
    ep = sample_episodes(items, labels, ways=5, shots=2, queries=4, tasks=50, seed=3)
    assert torch.equal(ep.x_support[..., 0].long(), idx.support)  # the same draw, gathered


def test_label_order_is_random_across_tasks():
    _, labels = _toy(classes=10)
    idx = sample_episode_indices(labels, ways=5, shots=1, queries=1, tasks=40, seed=0)
    assert len({tuple(c.tolist()) for c in idx.classes}) > 30
    assert len(set(idx.classes[:, 0].tolist())) > 5  # label 0 is not always the same class


def test_only_requested_classes_are_sampled():
    _, labels = _toy(classes=10)
    allowed = [1, 4, 7, 8]
    idx = sample_episode_indices(labels, ways=3, shots=2, queries=2, tasks=100, classes=allowed, seed=0)
    assert set(idx.classes.unique().tolist()) == set(allowed)
    assert set(labels[idx.query].unique().tolist()) <= set(allowed)


def test_seed_and_generator():
    _, labels = _toy()
    a = sample_episode_indices(labels, ways=3, shots=1, queries=2, tasks=3, seed=5)
    b = sample_episode_indices(labels, ways=3, shots=1, queries=2, tasks=3, seed=5)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    g = torch.Generator().manual_seed(5)
    c = sample_episode_indices(labels, ways=3, shots=1, queries=2, tasks=3, seed=g)
    d = sample_episode_indices(labels, ways=3, shots=1, queries=2, tasks=3, seed=g)
    assert torch.equal(c.support, a.support) and not torch.equal(d.support, c.support)


def test_uneven_classes_and_device_and_dtype_follow_items():
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2])
    items = torch.randn(9, 3, dtype=torch.float64)
    for seed in range(20):
        xs, ys, xq, yq = sample_episodes(items, labels, ways=3, shots=1, queries=1, seed=seed)
        assert xs.dtype == torch.float64 and xs.device == items.device
        assert xs.shape == (1, 3, 3)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 6), st.integers(1, 4), st.integers(1, 4), st.integers(0, 1000))
def test_valid_requests_always_give_well_formed_episodes(ways, shots, queries, seed):
    _, labels = _toy(classes=6, per_class=8)
    if shots + queries > 8:
        return
    idx = sample_episode_indices(labels, ways=ways, shots=shots, queries=queries, tasks=2, seed=seed)
    both = torch.cat([idx.support, idx.query], 1)
    assert idx.support.shape == (2, ways * shots) and idx.query.shape == (2, ways * queries)
    assert all(len(set(row.tolist())) == row.numel() for row in both)


# --- input checks ----------------------------------------------------------------------------------

@settings(max_examples=25, deadline=None)
@given(st.integers(2, 8), st.integers(1, 10))
def test_more_ways_than_classes_is_rejected(classes, extra):
    items, labels = _toy(classes=classes)
    with pytest.raises(ValueError, match=f"ways={classes + extra} but only {classes} classes .*lower ways"):
        sample_episodes(items, labels, ways=classes + extra, shots=1, queries=1)


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 6), st.integers(1, 6), st.integers(0, 6))
def test_more_shots_and_queries_than_examples_is_rejected(per_class, shots, extra):
    items, labels = _toy(classes=3, per_class=per_class)
    queries = max(1, per_class - shots + 1 + extra)
    message = f"exceeds the {per_class} examples of class .*lower shots or queries"
    with pytest.raises(ValueError, match=message):
        sample_episodes(items, labels, ways=2, shots=shots, queries=queries)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(1, 3), min_size=0, max_size=1))
def test_items_without_an_example_axis_are_rejected(shape):
    with pytest.raises(ValueError, match=r"items must be a tensor of shape \(M, \.\.\.\)"):
        sample_episodes(torch.zeros(shape), torch.zeros(shape[:1], dtype=torch.long), ways=1,
                        shots=1, queries=1)


@settings(max_examples=25, deadline=None)
@given(st.sampled_from(["ways", "shots", "queries", "tasks"]),
       st.one_of(st.integers(-5, 0), st.floats(0.5, 3.5), st.booleans(), st.none()))
def test_non_positive_or_non_integer_counts_are_rejected(name, value):
    items, labels = _toy()
    kwargs = dict(ways=2, shots=1, queries=1, tasks=1)
    kwargs[name] = value
    with pytest.raises(ValueError, match=f"{name} must be an integer >= 1"):
        sample_episodes(items, labels, **kwargs)


def test_bad_labels_and_classes_are_rejected():
    items, labels = _toy()
    with pytest.raises(ValueError, match="same length, got 30 items and 29 labels"):
        sample_episodes(items, labels[:-1], ways=2, shots=1, queries=1)
    with pytest.raises(ValueError, match="1-d integer tensor"):
        sample_episodes(items, labels.float(), ways=2, shots=1, queries=1)
    with pytest.raises(ValueError, match=r"classes \[9\] have no examples"):
        sample_episodes(items, labels, ways=2, shots=1, queries=1, classes=[0, 9])
    with pytest.raises(ValueError, match="seed must be an int or a torch.Generator"):
        sample_episodes(items, labels, ways=2, shots=1, queries=1, seed=0.5)


# --- the alphabet split ----------------------------------------------------------------------------

def test_alphabet_split_on_omniglot_is_disjoint_complete_and_deterministic():
    from tlcourse.data import load

    names = load("omniglot", "all").classes
    split = split_by_alphabet(names)
    assert split == split_by_alphabet(list(names))  # no randomness
    assert not set(split.background) & set(split.evaluation)
    assert sorted(split.background + split.evaluation) == list(range(242))
    assert (len(split.background), len(split.evaluation)) == (179, 63)
    assert split.evaluation_alphabets == EVALUATION_ALPHABETS
    assert len(split.background_alphabets) == 5
    train_alphabets = {names[k].split("/")[0] for k in split.background}
    test_alphabets = {names[k].split("/")[0] for k in split.evaluation}
    assert not train_alphabets & test_alphabets


def test_alphabet_split_rejects_bad_requests():
    names = ["A/c1", "A/c2", "B/c1"]
    assert split_by_alphabet(names, ["B"]).evaluation == (2,)
    with pytest.raises(ValueError, match="unknown alphabets \\['C'\\]; known alphabets: A, B"):
        split_by_alphabet(names, ["C"])
    with pytest.raises(ValueError, match="leave at least one for training"):
        split_by_alphabet(names, ["A", "B"])
    with pytest.raises(ValueError, match="write \\('B',\\)"):
        split_by_alphabet(names, "B")
    with pytest.raises(ValueError, match="'<alphabet>/<character>'"):
        split_by_alphabet(["A", "B"], ["A"])


# --- rotations ---------------------------------------------------------------------------------------

def test_rotations_are_new_classes():
    images = torch.rand(6, 1, 5, 5)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    x, y = rotate_classes(images, labels, 3)
    assert x.shape == (24, 1, 5, 5) and y.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5,
                                                       6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11]
    assert torch.equal(x[:6], images)
    assert torch.equal(x[12:18], images.flip(2, 3))  # 180 degrees
    assert torch.equal(torch.rot90(x[6:12], 3, dims=(2, 3)), images)  # 90 then 270 degrees
    with pytest.raises(ValueError, match="square images"):
        rotate_classes(torch.rand(2, 1, 4, 5), labels[:2], 3)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, num_classes=2\)"):
        rotate_classes(images, labels, 2)


# --- evaluation ----------------------------------------------------------------------------------------

def test_confidence_interval_is_1_96_standard_errors():
    values = [0.2, 0.4, 0.9, 1.0, 0.6]
    mean, half = mean_confidence_interval(values)
    assert mean == pytest.approx(0.62)
    assert half == pytest.approx(1.96 * np.std(values, ddof=1) / math.sqrt(5))
    assert mean_confidence_interval(torch.tensor(values)) == pytest.approx((mean, half))
    for bad in ([0.5], [], [[0.5, 0.5]], [0.5, float("nan")]):
        with pytest.raises(ValueError, match="at least 2 finite values"):
            mean_confidence_interval(bad)


def test_evaluate_episodes_counts_correct_queries():
    items, labels = _toy(classes=6, per_class=5)

    def perfect(xs, ys, xq):  # knows the class of every item from its value
        return torch.nn.functional.one_hot(_episode_class(xs, xq), xs.shape[1]).float()

    def _episode_class(xs, xq):  # index of the support item of the same original class (1-shot)
        return ((xq // 5) == (xs // 5).transpose(1, 2)).float().argmax(-1)

    result = evaluate_episodes(perfect, items, labels, ways=4, shots=1, queries=3, episodes=30,
                               tasks_per_call=7)
    assert (result.mean, result.ci95) == (1.0, 0.0) and result.accuracies.shape == (30,)

    def always_zero(xs, ys, xq):
        return torch.zeros(xq.shape[0], xq.shape[1], 4).index_fill_(2, torch.tensor([0]), 1.0)

    assert evaluate_episodes(always_zero, items, labels, ways=4, shots=1, queries=3,
                             episodes=30).mean == pytest.approx(0.25)  # one class in four
    with pytest.raises(ValueError, match=r"predict must return scores of shape \(T, N\*Q, N\)"):
        evaluate_episodes(lambda xs, ys, xq: xq, items, labels, ways=4, shots=1, queries=3, episodes=4)


def test_omniglot_by_alphabet_keeps_test_characters_out_of_training():
    from tlcourse.meta.episodes import omniglot_by_alphabet

    rotated, plain = omniglot_by_alphabet(rotations=True), omniglot_by_alphabet(rotations=False)
    n = len(plain.split.background) + len(plain.split.evaluation)
    assert n == 242 and len(plain.train_classes) == 179 and plain.test_classes == plain.split.evaluation
    assert rotated.test_classes == plain.test_classes and len(rotated.train_classes) == 4 * 179
    assert not {c % n for c in rotated.train_classes} & set(rotated.test_classes)
    # Class c + r * n holds the drawings of character c turned by r * 90 degrees.
    c = plain.train_classes[5]
    for r in (1, 3):
        turned = rotated.images[rotated.labels == c + r * n]
        assert torch.equal(turned, torch.rot90(plain.images[plain.labels == c], r, dims=(2, 3)))
