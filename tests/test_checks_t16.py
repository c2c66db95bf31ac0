"""Tests of the T16 checks: each question accepts correct answers written in more than one way and
rejects the obvious wrong approach with a message that names it."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tlcourse import rl
from tlcourse.checks import t16
from tests.check_helpers import question_helpers

SEED = 1234


# ---------------------------------------------------------------- answers, right and wrong
def returns_to_go(rewards, dones, gamma):
    out, running = np.zeros(len(rewards)), 0.0
    for t in range(len(rewards) - 1, -1, -1):
        running = rewards[t] + gamma * (1 - dones[t]) * running
        out[t] = running
    return out


def returns_with_the_package(rewards, dones, gamma):
    return rl.discounted_returns(torch.tensor(rewards), gamma, dones=torch.tensor(dones))   # a float32 tensor


def returns_ignoring_episode_ends(rewards, dones, gamma):
    return returns_to_go(rewards, np.zeros_like(dones), gamma)


def returns_undiscounted(rewards, dones, gamma):
    return returns_to_go(rewards, dones, 1.0)


def returns_forwards(rewards, dones, gamma):
    out, running = np.zeros(len(rewards)), 0.0
    for t in range(len(rewards)):
        running = rewards[t] + gamma * running * (1 - dones[t - 1] if t else 1)
        out[t] = running
    return out


def returns_without_the_current_reward(rewards, dones, gamma):
    return returns_to_go(rewards, dones, gamma) - rewards


K = np.sqrt(t16.LONG_POLE / t16.NOMINAL_POLE)


def scaled(s0, s1, s2, s3):
    scales = np.array([s0, s1, s2, s3], dtype=np.float32)
    return lambda obs: np.asarray(obs, dtype=np.float32) * scales


NAMESPACE = dict(returns_to_go=returns_to_go, long_pole_map=scaled(1, 1, 1, K), answer_q3="b")
grade, passes, fails = question_helpers(t16, SEED)


def test_points_come_from_the_questions():
    assert [(q.name, q.points) for q in t16.QUESTIONS] == [("q1", 2), ("q2", 2), ("q3", 1)]


# ---------------------------------------------------------------- q1
@pytest.mark.parametrize("fn", [returns_to_go, returns_with_the_package])
def test_q1_accepts_the_returns_written_several_ways(fn):
    for seed in (0, 1, SEED):
        result = grade(NAMESPACE, "q1", seed=seed, returns_to_go=fn)
        assert result.passed, result.message


@pytest.mark.parametrize("wrong, words", [
    (returns_ignoring_episode_ends, "runs on across an episode end"),
    (returns_undiscounted, "not discounted"),
    (returns_forwards, "built forwards"),
    (returns_without_the_current_reward, "current reward is left out"),
])
def test_q1_names_each_classic_mistake(wrong, words):
    fails(NAMESPACE, "q1", words, returns_to_go=wrong)


def test_q1_rejects_other_wrong_answers_with_a_useful_message():
    fails(NAMESPACE, "q1", "expected", returns_to_go=lambda r, d, g: returns_to_go(r, d, g) + 0.01)
    fails(NAMESPACE, "q1", "NotImplementedError",
          returns_to_go=lambda *a: (_ for _ in ()).throw(NotImplementedError("replace this line")))
    fails(NAMESPACE, "q1", "raised ZeroDivisionError", returns_to_go=lambda r, d, g: 1 / 0)
    fails(NAMESPACE, "q1", "one return per step", returns_to_go=lambda r, d, g: returns_to_go(r, d, g)[:-1])
    fails(NAMESPACE, "q1", "placeholder", returns_to_go=lambda r, d, g: ...)


def test_q1_inputs_hold_several_episodes_and_depend_on_the_seed():
    cases = t16.q1_inputs(0)
    assert all(d.sum() == 2 and d[-1] == 0 for _, d, _ in cases)
    assert not np.array_equal(cases[0][0], t16.q1_inputs(1)[0][0])


# ---------------------------------------------------------------- q2
def test_q2_accepts_the_physics_mapping_and_other_spellings():
    passes(NAMESPACE, "q2")
    passes(NAMESPACE, "q2", long_pole_map=rl.pole_length_map(t16.LONG_POLE))
    passes(NAMESPACE, "q2", long_pole_map=lambda obs: torch.tensor(obs) * torch.tensor([1.0, 1.0, 1.0, float(K)]))


def test_q2_names_the_wrong_mappings():
    fails(NAMESPACE, "q2", "changes nothing", long_pole_map=lambda obs: obs)
    fails(NAMESPACE, "q2", "goes the wrong way", long_pole_map=scaled(1, 1, 1, 1 / K))
    fails(NAMESPACE, "q2", "cart's velocity is rescaled too", long_pole_map=scaled(1, K, 1, K))
    fails(NAMESPACE, "q2", "not a per-coordinate rescaling", long_pole_map=lambda obs: obs[:, ::-1].copy())
    fails(NAMESPACE, "q2", "raised", long_pole_map=lambda obs: obs @ np.ones((3, 3)))
    fails(NAMESPACE, "q2", "placeholder", long_pole_map=lambda obs: ...)


def test_q2_reference_is_what_the_docstring_says():
    assert t16.mapped_return((1.0, 1.0, 1.0, float(K))) >= t16.PASS_RETURN
    assert t16.mapped_return((1.0, 1.0, 1.0, 1.0)) < 50     # the nominal policy breaks on the long pole


# ---------------------------------------------------------------- q3
@pytest.mark.parametrize("answer", ["b", "B", " (b) "])
def test_q3_accepts_the_right_choice_in_any_spelling(answer):
    passes(NAMESPACE, "q3", answer_q3=answer)


def test_q3_teaches_without_giving_the_answer_away():
    for wrong in ("a", "c", "d"):
        result = fails(NAMESPACE, "q3", "not '", answer_q3=wrong)
        assert t16.Q3_CHOICES["b"] not in result.message and "'b'" not in result.message
    fails(NAMESPACE, "q3", "one letter as a string", answer_q3=...)
