"""Tests of the T15 checks: each question accepts correct answers written in more than one way and
rejects the obvious wrong approach with a message that names it."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from tests.check_helpers import question_helpers
from tlcourse.attention import attention_rollout
from tlcourse.checks import t15

SEED = 1234


# ---------------------------------------------------------------- q1 answers, right and wrong
def rollout(a, residual=0.5):
    layers = (1 - residual) * a.mean(1) + residual * torch.eye(a.shape[-1])
    layers = layers / layers.sum(-1, keepdim=True)
    out = layers[0]
    for layer in layers[1:]:
        out = layer @ out
    return out


def rollout_numpy(a, residual=0.5):
    """Another way: NumPy, A + I weighted then renormalised, np.linalg.multi_dot, float64."""
    a = np.asarray(a, dtype=np.float64)
    eye = np.eye(a.shape[-1])
    layers = [(1 - residual) * m.mean(0) + residual * eye for m in a]
    layers = [m / m.sum(1, keepdims=True) for m in layers]
    return layers[0] if len(layers) == 1 else np.linalg.multi_dot(layers[::-1])


def rollout_package(a, residual=0.5):
    return attention_rollout(a, residual=residual)


def wrong_order(a, residual=0.5):
    layers = (1 - residual) * a.mean(1) + residual * torch.eye(a.shape[-1])
    out = layers[0]
    for layer in layers[1:]:
        out = out @ layer
    return out


def no_residual(a, residual=0.5):
    return rollout(a, 0.0)


def not_renormalised(a, residual=0.5):
    layers = a.mean(1) + torch.eye(a.shape[-1])
    out = layers[0]
    for layer in layers[1:]:
        out = layer @ out
    return out


def heads_summed(a, residual=0.5):
    layers = (1 - residual) * a.sum(1) + residual * torch.eye(a.shape[-1])
    layers = layers / layers.sum(-1, keepdim=True)
    out = layers[0]
    for layer in layers[1:]:
        out = layer @ out
    return out


def layers_averaged(a, residual=0.5):
    layers = (1 - residual) * a.mean(1) + residual * torch.eye(a.shape[-1])
    return (layers / layers.sum(-1, keepdim=True)).mean(0)


def last_layer_only(a, residual=0.5):
    return rollout(a[-1:], residual)


# ---------------------------------------------------------------- q2: a stand-in for peft's MiniLM
class _Param:
    def __init__(self, shape, requires_grad):
        self.shape, self.requires_grad = torch.Size(shape), requires_grad

    def numel(self):
        return int(np.prod(self.shape))


class FakeModel:
    """The parameter listing of MiniLM wrapped by peft (names and shapes as peft 0.21 gives them),
    without loading the model: the checks only read names, shapes and requires_grad."""

    def __init__(self, rank=4, targets=("query", "value"), frozen=True, adapters=True, layers=6):
        self.params = [("base_model.model.embeddings.word_embeddings.weight", _Param((30522, 384), not frozen))]
        for i in range(layers):
            for proj in ("query", "key", "value"):
                base = f"base_model.model.encoder.layer.{i}.attention.self.{proj}"
                self.params.append((f"{base}.base_layer.weight" if adapters else f"{base}.weight",
                                    _Param((384, 384), not frozen)))
                if adapters and proj in targets:
                    self.params += [(f"{base}.lora_A.default.weight", _Param((rank, 384), True)),
                                    (f"{base}.lora_B.default.weight", _Param((384, rank), True))]

    def named_parameters(self):
        return iter(self.params)

    def parameters(self):
        return iter(p for _, p in self.params)


def _trainable(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.fixture(scope="module")
def namespace():
    return dict(rollout=rollout, lora_model=FakeModel(), n_trainable=t15.N_LORA, answer_q3="b")


grade, passes, fails = question_helpers(t15, SEED)


def test_points_come_from_the_questions():
    assert [(q.name, q.points) for q in t15.QUESTIONS] == [("q1", 2), ("q2", 2), ("q3", 1)]


# ---------------------------------------------------------------- q1
@pytest.mark.parametrize("fn", [rollout, rollout_numpy, rollout_package])
def test_q1_accepts_rollout_written_several_ways(namespace, fn):
    for seed in (0, 1, SEED):
        result = grade(namespace, "q1", seed=seed, rollout=fn)
        assert result.passed, result.message


@pytest.mark.parametrize("wrong, words", [
    (wrong_order, "wrong order"),
    (no_residual, "residual term is missing"),
    (not_renormalised, "not renormalised"),
    (heads_summed, "heads are summed"),
    (layers_averaged, "averaged instead of multiplied"),
    (last_layer_only, "only the last layer"),
])
def test_q1_names_each_classic_mistake(namespace, wrong, words):
    fails(namespace, "q1", words, rollout=wrong)


def test_q1_rejects_other_wrong_answers_with_a_useful_message(namespace):
    fails(namespace, "q1", "differs from the definition", rollout=lambda a, r=0.5: rollout(a, r) + 0.01)
    fails(namespace, "q1", "NotImplementedError", rollout=lambda a, r=0.5: (_ for _ in ()).throw(NotImplementedError()))
    fails(namespace, "q1", "raised RuntimeError", rollout=lambda a, r=0.5: a.view(7, -1, 3).sum())
    fails(namespace, "q1", "expected (", rollout=lambda a, r=0.5: a.mean(1))
    fails(namespace, "q1", "return a (T, T)", rollout=lambda a, r=0.5: "R")


def test_q1_inputs_are_row_stochastic_and_seeded():
    a, b = t15.q1_inputs(0), t15.q1_inputs(1)
    assert all(torch.allclose(x.sum(-1), torch.ones(1)) for x in a)
    assert not torch.equal(a[0], b[0]) and torch.equal(a[0], t15.q1_inputs(0)[0])


# ---------------------------------------------------------------- q2
def test_q2_accepts_the_solution_and_other_spellings(namespace):
    passes(namespace, "q2")
    passes(namespace, "q2", n_trainable=np.int64(t15.N_LORA))
    passes(namespace, "q2", n_trainable=torch.tensor(t15.N_LORA))
    passes(namespace, "q2", n_trainable=float(t15.N_LORA))
    assert _trainable(namespace["lora_model"]) == t15.N_LORA == 36_864


def test_q2_rejects_counting_the_frozen_weights(namespace):
    fake = namespace["lora_model"]
    everything = sum(p.numel() for p in fake.parameters())
    fails(namespace, "q2", "counts the frozen weights too", n_trainable=everything)
    fails(namespace, "q2", "counts the frozen weights too", n_trainable=22_750_080)   # peft's "all params"


def test_q2_rejects_the_wrong_projections_rank_or_no_adapters():
    ok = dict(rollout=rollout, answer_q3="b")
    with_key = FakeModel(targets=("query", "key", "value"))
    fails(dict(ok, lora_model=with_key, n_trainable=_trainable(with_key)), "q2", "query and value projections only")
    rank8 = FakeModel(rank=8)
    fails(dict(ok, lora_model=rank8, n_trainable=_trainable(rank8)), "q2", "rank [8]")
    plain = FakeModel(frozen=False, adapters=False)
    fails(dict(ok, lora_model=plain, n_trainable=_trainable(plain)), "q2", "no LoRA adapter")
    unfrozen = FakeModel(frozen=False)
    fails(dict(ok, lora_model=unfrozen, n_trainable=_trainable(unfrozen)), "q2", "must stay frozen")
    short = FakeModel(layers=3)
    fails(dict(ok, lora_model=short, n_trainable=_trainable(short)), "q2", "12")


def test_q2_rejects_a_wrong_or_malformed_count(namespace):
    fails(namespace, "q2", "the adapters hold 36,864", n_trainable=2 * 6 * 4 * 384)    # A only
    fails(namespace, "q2", "should be an integer", n_trainable=...)
    fails(namespace, "q2", "should be the model", lora_model="MiniLM")


@pytest.mark.slow
def test_q2_on_the_real_minilm():
    """The checks against the real peft model (loads MiniLM: a few seconds)."""
    from peft import LoraConfig, get_peft_model

    from tlcourse.zoo import minilm

    _, encoder = minilm()
    model = get_peft_model(copy.deepcopy(encoder), LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"]))
    ns = dict(rollout=rollout, answer_q3="b", lora_model=model, n_trainable=_trainable(model))
    passes(ns, "q2")
    fails(ns, "q2", "counts the frozen weights too", n_trainable=sum(p.numel() for p in model.parameters()))


# ---------------------------------------------------------------- q3
@pytest.mark.parametrize("answer", ["b", "B", " b ", "(b)"])
def test_q3_accepts_the_right_choice_in_any_spelling(namespace, answer):
    passes(namespace, "q3", answer_q3=answer)


def test_q3_teaches_without_giving_the_answer_away(namespace):
    for wrong in ("a", "C", "d"):
        result = fails(namespace, "q3", "not '", answer_q3=wrong)
        assert t15.Q3_CHOICES["b"] not in result.message and "'b'" not in result.message
    fails(namespace, "q3", "choose one of", answer_q3="e")
    fails(namespace, "q3", "one letter as a string", answer_q3=2)
    fails(namespace, "q3", "one letter as a string", answer_q3=...)
