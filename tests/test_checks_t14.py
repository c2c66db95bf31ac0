"""Tests of the T14 checks: each question accepts correct answers written in more than one way and
rejects the obvious wrong approach (the seed errors of the chapter) with a message that names it."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from tlcourse.checks import t14
from tlcourse.grading.feedback import evaluate_question
from tlcourse.meta.episodes import sample_episode_indices
from tlcourse.meta.maml import maml_loss

SEED = 1234


# ---------------------------------------------------------------- q1 answers, right and wrong
def meta_gradient(w, xs, ys, xq, yq, lr, first_order=False):
    """The solution's way: torch.autograd.grad, create_graph for the second order."""
    (g,) = torch.autograd.grad(F.mse_loss(xs @ w, ys), w, create_graph=not first_order)
    (out,) = torch.autograd.grad(F.mse_loss(xq @ (w - lr * g), yq), w)
    return out


def meta_gradient_closed_form(w, xs, ys, xq, yq, lr, first_order=False):
    """Another way: the closed form in NumPy float64, returned as a nested list."""
    w, xs, ys, xq, yq = (t.detach().double().numpy() for t in (w, xs, ys, xq, yq))
    phi = w - lr * 2 / len(xs) * xs.T @ (xs @ w - ys)
    g_q = 2 / len(xq) * xq.T @ (xq @ phi - yq)
    if not first_order:
        g_q = (np.eye(len(w)) - lr * 2 / len(xs) * xs.T @ xs) @ g_q
    return g_q.tolist()


def meta_gradient_package(w, xs, ys, xq, yq, lr, first_order=False):
    """A third way: tlcourse.meta.maml.maml_loss on a bias-free nn.Linear holding w."""
    model = nn.Linear(w.shape[0], 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(w.T)
    loss = maml_loss(model, (xs[None], ys[None], xq[None], yq[None]), F.mse_loss, steps=1, inner_lr=lr,
                     first_order=first_order)
    loss.backward()
    return model.weight.grad.T


def first_order_always(w, xs, ys, xq, yq, lr, first_order=False):
    """The seed error: the inner gradient detached (no create_graph) even when second order is asked."""
    return meta_gradient(w, xs, ys, xq, yq, lr, first_order=True)


def inner_step_on_query(w, xs, ys, xq, yq, lr, first_order=False):
    return meta_gradient(w, xq, yq, xq, yq, lr, first_order)


def no_inner_step(w, xs, ys, xq, yq, lr, first_order=False):
    return torch.autograd.grad(F.mse_loss(xq @ w, yq), w)[0]


def uphill(w, xs, ys, xq, yq, lr, first_order=False):
    return meta_gradient(w, xs, ys, xq, yq, -lr, first_order)


def outer_on_support(w, xs, ys, xq, yq, lr, first_order=False):
    return meta_gradient(w, xs, ys, xs, ys, lr, first_order)


def summed_query_loss(w, xs, ys, xq, yq, lr, first_order=False):
    (g,) = torch.autograd.grad(F.mse_loss(xs @ w, ys), w, create_graph=not first_order)
    return torch.autograd.grad(F.mse_loss(xq @ (w - lr * g), yq, reduction="sum"), w)[0]


def second_order_always(w, xs, ys, xq, yq, lr, first_order=False):
    return meta_gradient(w, xs, ys, xq, yq, lr, first_order=False)


# ---------------------------------------------------------------- q2 answers, right and wrong
def make_episode(labels, ways, shots, queries, seed):
    """The solution's way: per class, a permutation cut into support and query."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    classes = rng.choice(np.unique(labels), size=ways, replace=False)
    s, ys, q, yq = [], [], [], []
    for new, c in enumerate(classes):
        members = rng.permutation(np.flatnonzero(labels == c))
        s += members[:shots].tolist()
        q += members[shots:shots + queries].tolist()
        ys += [new] * shots
        yq += [new] * queries
    return s, ys, q, yq


def make_episode_package(labels, ways, shots, queries, seed):
    """Another way: tlcourse's sampler, torch tensors, labels class-major."""
    idx = sample_episode_indices(torch.as_tensor(labels), ways=ways, shots=shots, queries=queries, seed=seed)
    new = torch.arange(ways)
    return idx.support[0], new.repeat_interleave(shots), idx.query[0], new.repeat_interleave(queries)


def make_episode_interleaved(labels, ways, shots, queries, seed):
    """A third way: query examples listed in random order (any order is fine if labels follow)."""
    s, ys, q, yq = make_episode(labels, ways, shots, queries, seed)
    order = np.random.default_rng(seed + 1).permutation(len(q))
    return np.array(s), np.array(ys), np.array(q)[order], np.array(yq)[order]


def query_overlaps_support(labels, ways, shots, queries, seed):
    """The seed error: support and query drawn independently, so they share examples."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    classes = rng.choice(np.unique(labels), size=ways, replace=False)
    s, ys, q, yq = [], [], [], []
    for new, c in enumerate(classes):
        members = np.flatnonzero(labels == c)
        s += members[:shots].tolist()
        q += members[:queries].tolist()          # the first examples again
        ys += [new] * shots
        yq += [new] * queries
    return s, ys, q, yq


def original_labels(labels, ways, shots, queries, seed):
    s, _, q, _ = make_episode(labels, ways, shots, queries, seed)
    labels = np.asarray(labels)
    return s, labels[s], q, labels[q]


def inconsistent_labels(labels, ways, shots, queries, seed):
    s, ys, q, yq = make_episode(labels, ways, shots, queries, seed)
    return s, ys, q, [(y + 1) % ways for y in yq]


def first_classes_always(labels, ways, shots, queries, seed):
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    s, ys, q, yq = [], [], [], []
    for new, c in enumerate(np.unique(labels)[:ways]):
        members = rng.permutation(np.flatnonzero(labels == c))
        s += members[:shots].tolist()
        q += members[shots:shots + queries].tolist()
        ys += [new] * shots
        yq += [new] * queries
    return s, ys, q, yq


def with_replacement(labels, ways, shots, queries, seed):
    s, ys, q, yq = make_episode(labels, ways, shots, queries, seed)
    s[1] = s[0]
    return s, ys, q, yq


@pytest.fixture
def namespace():
    return dict(maml_meta_gradient=meta_gradient, make_episode=make_episode, answer_q3="b")


def grade(namespace, question, seed=SEED, **changes):
    q = next(q for q in t14.QUESTIONS if q.name == question)
    return evaluate_question(q, {**namespace, **changes}, seed, time_limit=None)


def passes(namespace, question, seed=SEED, **changes):
    result = grade(namespace, question, seed=seed, **changes)
    assert result.passed, f"{question}: {result.message}"


def fails(namespace, question, words, **changes):
    result = grade(namespace, question, **changes)
    assert not result.passed, f"{question} passed although it should not"
    assert words in result.message, result.message
    return result


def test_points_come_from_the_questions():
    assert [(q.name, q.points) for q in t14.QUESTIONS] == [("q1", 2), ("q2", 2), ("q3", 1)]


# ---------------------------------------------------------------- q1
@pytest.mark.parametrize("fn", [meta_gradient, meta_gradient_closed_form, meta_gradient_package])
def test_q1_accepts_the_meta_gradient_written_several_ways(namespace, fn):
    for seed in (0, 1, SEED):
        passes(namespace, "q1", seed=seed, maml_meta_gradient=fn)


@pytest.mark.parametrize("wrong, words", [
    (first_order_always, "this is the first-order (FOMAML) gradient"),
    (second_order_always, "asks for FOMAML"),
    (inner_step_on_query, "the inner step uses the query set"),
    (no_inner_step, "there is no inner step"),
    (uphill, "goes uphill"),
    (outer_on_support, "the outer loss is the support loss"),
    (summed_query_loss, "summed, not averaged"),
])
def test_q1_names_each_classic_mistake(namespace, wrong, words):
    fails(namespace, "q1", words, maml_meta_gradient=wrong)


def test_q1_rejects_other_wrong_answers_with_a_useful_message(namespace):
    fails(namespace, "q1", "expected", maml_meta_gradient=lambda *a, **k: meta_gradient(*a, **k) + 0.01)
    fails(namespace, "q1", "NotImplementedError",
          maml_meta_gradient=lambda *a, **k: (_ for _ in ()).throw(NotImplementedError("replace this line")))
    fails(namespace, "q1", "raised TypeError", maml_meta_gradient=lambda w, xs, ys, xq, yq, lr: w)
    fails(namespace, "q1", "expected the 3 entries", maml_meta_gradient=lambda *a, **k: torch.zeros(2))
    fails(namespace, "q1", "return the gradient", maml_meta_gradient=lambda *a, **k: ...)


def test_q1_reference_matches_the_package_and_second_order_differs():
    for (w, xs, ys, xq, yq), (lr, first) in zip(t14.q1_inputs(SEED), t14.Q1_CASES):
        ref = t14._variants(w, xs, ys, xq, yq, lr, first)["right"]
        assert np.allclose(meta_gradient_package(w.clone().requires_grad_(True), xs, ys, xq, yq, lr, first).numpy(),
                           ref, atol=1e-5)
        if not first:  # the cases must tell the two orders apart
            fo = t14._variants(w, xs, ys, xq, yq, lr, True)["right"]
            assert np.abs(fo - ref).max() > 1e-2


def test_q1_inputs_depend_on_the_seed():
    a, b = t14.q1_inputs(0), t14.q1_inputs(1)
    assert not torch.equal(a[0][0], b[0][0]) and torch.equal(a[0][0], t14.q1_inputs(0)[0][0])


# ---------------------------------------------------------------- q2
@pytest.mark.parametrize("fn", [make_episode, make_episode_package, make_episode_interleaved])
def test_q2_accepts_any_correct_sampler(namespace, fn):
    for seed in (0, 1, SEED):
        passes(namespace, "q2", seed=seed, make_episode=fn)


@pytest.mark.parametrize("wrong, words", [
    (query_overlaps_support, "the query set overlaps the support set"),
    (original_labels, "rename the classes of each episode"),
    (inconsistent_labels, "two different episode labels"),
    (first_classes_always, "chose the same 5 classes"),
    (with_replacement, "repeats an example"),
])
def test_q2_names_each_classic_mistake(namespace, wrong, words):
    fails(namespace, "q2", words, make_episode=wrong)


def test_q2_rejects_malformed_episodes(namespace):
    fails(namespace, "q2", "must return four things", make_episode=lambda *a, **k: (1, 2))
    fails(namespace, "q2", "support_idx has", make_episode=lambda l, w, s, q, seed: ([0], [0], [1], [0]))
    fails(namespace, "q2", "NotImplementedError",
          make_episode=lambda *a, **k: (_ for _ in ()).throw(NotImplementedError("replace this line")))


def test_q2_labels_are_uneven_and_shuffled():
    labels = t14.q2_labels(SEED)
    counts = np.bincount(labels)[10:]
    assert counts.min() >= t14.Q2_SHOTS + t14.Q2_QUERIES and len(set(counts.tolist())) > 1
    assert not np.all(np.diff(labels) >= 0)


# ---------------------------------------------------------------- q3
@pytest.mark.parametrize("answer", ["b", "B", " b ", "b\n"])
def test_q3_accepts_the_right_choice_in_any_spelling(namespace, answer):
    passes(namespace, "q3", answer_q3=answer)


def test_q3_rejects_the_zero_average_belief_without_giving_the_answer_away(namespace):
    for wrong in ("a", "C", "d"):
        result = fails(namespace, "q3", "not '", answer_q3=wrong)
        assert t14.Q3_CHOICES["b"] not in result.message and "'b'" not in result.message
    fails(namespace, "q3", "one letter as a string", answer_q3=2)
    fails(namespace, "q3", "choose one of", answer_q3="e")


def test_q3_answer_is_what_the_average_task_is():
    # E[A] * mean over b in [0, pi] of sin(x + b) = (2 / pi) * 2.55 * cos(x): about 1.6 cos x
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0.1, 5, 200_000), rng.uniform(0, np.pi, 200_000)
    x = np.array([0.0, 1.0, 2.5])
    average = (a[:, None] * np.sin(x[None] + b[:, None])).mean(0)
    assert np.allclose(average, 1.62 * np.cos(x), atol=0.03)
