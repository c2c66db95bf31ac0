"""Tests of the T04 checks: each question accepts correct answers written in more than one way and
rejects the obvious wrong approach (dropout on while collecting statistics, source statistics
blended in, a weight update, the fresh images leaked into the adaptation pool) with a message that
names it."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from tlcourse.adapt import adapt_batchnorm
from tlcourse.batchnorm import BATCHNORM
from tlcourse.checks import t04
from tests.check_helpers import question_helpers

SEED = 1234


def norms(model):
    return [m for m in model.modules() if isinstance(m, BATCHNORM)]


# ---------------------------------------------------------------- q1 answers, right and wrong
def bn_solution(model, pool_x):
    """The solution's way: a copy, eval mode, only BatchNorm in train mode, momentum None."""
    model = copy.deepcopy(model).eval()
    saved = [m.momentum for m in norms(model)]
    for m in norms(model):
        m.reset_running_stats()
        m.momentum = None
        m.train()
    with torch.no_grad():
        model(pool_x)
    for m, momentum in zip(norms(model), saved):
        m.momentum = momentum
    return model.eval()


def bn_in_place_momentum_one(model, pool_x):
    """Another way: in place, momentum 1 over one batch (the running stats become that batch's)."""
    model.eval()
    for m in norms(model):
        m.momentum = 1.0
        m.train()
    with torch.no_grad():
        model(pool_x)
    for m in norms(model):
        m.momentum = 0.1
    return model.eval()


def bn_in_batches(model, pool_x):
    """In batches of 64 with a cumulative average."""
    model = copy.deepcopy(model).eval()
    for m in norms(model):
        m.reset_running_stats()
        m.momentum = None
        m.train()
    with torch.no_grad():
        for i in range(0, len(pool_x), 64):
            model(pool_x[i:i + 64])
    return model.eval()


def bn_package(model, pool_x):
    return adapt_batchnorm(model, pool_x)


def bn_unchanged(model, pool_x):
    return copy.deepcopy(model).eval()


def bn_not_reset(model, pool_x):
    """The default momentum 0.1 and no reset: the source statistics are blended in."""
    model = copy.deepcopy(model).eval()
    for m in norms(model):
        m.train()
    with torch.no_grad():
        model(pool_x)
    return model.eval()


def bn_whole_model_train(model, pool_x):
    """The whole model in train mode while collecting: dropout is active (as in a common recipe)."""
    model = copy.deepcopy(model)
    for m in norms(model):
        m.reset_running_stats()
        m.momentum = None
    model.train()
    with torch.no_grad():
        model(pool_x)
    return model.eval()


def bn_left_in_train_mode(model, pool_x):
    return bn_solution(model, pool_x).train()


def bn_with_a_weight_update(model, pool_x):
    """An entropy-minimisation step on top: the weights change."""
    model = bn_solution(model, pool_x)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    probs = model(pool_x).softmax(1)
    (-(probs * probs.log()).sum(1).mean()).backward()
    opt.step()
    return model


# ---------------------------------------------------------------- q2 answers
def accuracy(model, x, y):
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def pf_solution(model, pool_x, pool_y, fresh_x, fresh_y):
    adapted = bn_solution(model, pool_x)
    return accuracy(adapted, pool_x, pool_y), accuracy(adapted, fresh_x, fresh_y)


def pf_dict_tensors(model, pool_x, pool_y, fresh_x, fresh_y):
    adapted = adapt_batchnorm(model, pool_x, batch_size=64)
    with torch.no_grad():
        return {"pool_acc": (adapted(pool_x).argmax(1) == pool_y).float().mean(),
                "fresh_acc": (adapted(fresh_x).argmax(1) == fresh_y).float().mean()}


def pf_leaky(model, pool_x, pool_y, fresh_x, fresh_y):
    """The fresh (test) images put into the adaptation pool."""
    adapted = bn_solution(model, torch.cat([pool_x, fresh_x]))
    return accuracy(adapted, pool_x, pool_y), accuracy(adapted, fresh_x, fresh_y)


def pf_not_adapted(model, pool_x, pool_y, fresh_x, fresh_y):
    return accuracy(model, pool_x, pool_y), accuracy(model, fresh_x, fresh_y)


def pf_swapped(model, pool_x, pool_y, fresh_x, fresh_y):
    return pf_solution(model, pool_x, pool_y, fresh_x, fresh_y)[::-1]


@pytest.fixture()
def namespace():
    return dict(target_batchnorm=bn_solution, pool_and_fresh_accuracy=pf_solution, answer_q3="b")


grade, passes, fails = question_helpers(t04, SEED)


def test_points_come_from_the_questions():
    assert [(q.name, q.points) for q in t04.QUESTIONS] == [("q1", 2), ("q2", 2), ("q3", 1)]


# ---------------------------------------------------------------- q1
@pytest.mark.parametrize("fn", [bn_solution, bn_in_place_momentum_one, bn_in_batches, bn_package])
def test_q1_accepts_the_update_written_several_ways(namespace, fn):
    for seed in (0, 1, SEED):
        result = grade(namespace, "q1", seed=seed, target_batchnorm=fn)
        assert result.passed, result.message


@pytest.mark.parametrize("wrong, words", [
    (bn_unchanged, "still the source's"),
    (bn_not_reset, "blended in"),
    (bn_whole_model_train, "dropout was active"),
    (bn_left_in_train_mode, "training mode"),
    (bn_with_a_weight_update, "AdaBN changes no weight"),
])
def test_q1_names_each_classic_mistake(namespace, wrong, words):
    for seed in (0, SEED):
        fails(namespace, "q1", words, seed=seed, target_batchnorm=wrong)


def test_q1_rejects_broken_answers_with_a_useful_message(namespace):
    fails(namespace, "q1", "NotImplementedError",
          target_batchnorm=lambda m, x: (_ for _ in ()).throw(NotImplementedError("replace this line")))
    fails(namespace, "q1", "return the adapted model", target_batchnorm=lambda m, x: None)
    fails(namespace, "q1", "raised RuntimeError", target_batchnorm=lambda m, x: m(x.flatten(1)))


def test_q1_probe_depends_on_the_seed_and_leaves_no_trace():
    a, b = t04.probe_model(0), t04.probe_model(1)
    assert not torch.equal(a[0].weight, b[0].weight) and torch.equal(a[0].weight, t04.probe_model(0)[0].weight)
    assert isinstance(a[4], nn.Dropout) and isinstance(a[6], nn.BatchNorm1d)  # dropout sits before a BatchNorm


# ---------------------------------------------------------------- q2
@pytest.mark.parametrize("fn", [pf_solution, pf_dict_tensors])
def test_q2_accepts_correct_answers_in_several_forms(namespace, fn):
    for seed in (0, 1, SEED):
        result = grade(namespace, "q2", seed=seed, pool_and_fresh_accuracy=fn)
        assert result.passed, result.message


def test_q2_rejects_fresh_images_in_the_adaptation_pool(namespace):
    for seed in (0, SEED):
        fails(namespace, "q2", "leaked into the adaptation pool", seed=seed, pool_and_fresh_accuracy=pf_leaky)


def test_q2_names_the_other_mistakes(namespace):
    fails(namespace, "q2", "unadapted source model", pool_and_fresh_accuracy=pf_not_adapted)
    fails(namespace, "q2", "swapped", pool_and_fresh_accuracy=pf_swapped)
    fails(namespace, "q2", "two floats", pool_and_fresh_accuracy=lambda *a: 0.9)
    fails(namespace, "q2", "fractions in [0, 1]",
          pool_and_fresh_accuracy=lambda *a: tuple(100 * v for v in pf_solution(*a)))
    fails(namespace, "q2", "expected", pool_and_fresh_accuracy=lambda *a: (0.5, 0.5))


def test_q2_probe_makes_leakage_visible():
    p = t04.q2_probe(SEED)
    adapted = adapt_batchnorm(p["model"], p["pool"][0])
    leaked = adapt_batchnorm(p["model"], torch.cat([p["pool"][0], p["other"][0]]))
    assert accuracy(adapted, *p["pool"]) > 0.9 > 0.7 > accuracy(leaked, *p["pool"])
    assert accuracy(p["model"], *p["pool"]) < 0.75  # the unadapted model is clearly worse


# ---------------------------------------------------------------- q3
@pytest.mark.parametrize("answer", ["b", "B", " b ", "b\n"])
def test_q3_accepts_the_right_choice_in_any_spelling(namespace, answer):
    passes(namespace, "q3", answer_q3=answer)


def test_q3_teaches_without_giving_the_answer_away(namespace):
    for wrong in ("a", "C", "d"):
        result = fails(namespace, "q3", "not '", answer_q3=wrong)
        assert t04.Q3_CHOICES["b"] not in result.message and "'b'" not in result.message
