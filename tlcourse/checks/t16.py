"""Checks for exercise T16 (transfer in reinforcement learning): discounted returns that stop at
episode ends, an inter-task mapping that lets the nominal CartPole policy balance a long pole, and
one prediction about the jumpstart of feature transfer.

Every ``collect`` runs in the student's kernel and returns plain data; every ``grade`` runs in the
trusted process and rebuilds what it compares with: the returns from the definition, and the
source agent from :func:`tlcourse.rl.source_agent` (seeded, cached; about 3 s to train when the
cache is empty), evaluated here on the test episodes. Nothing in the student's namespace is trusted.

- **q1** (2 points) ``returns_to_go(rewards, dones, gamma)``: 1-D arrays in, the array
  ``G_t = r_t + gamma * (1 - done_t) * G_{t+1}`` out. *collect*: the function on five random
  rollouts drawn from the seed (episodes of random lengths, several per rollout). *grade*: compared
  with the definition in float64; the usual mistakes (the sum runs on across an episode end, no
  discount, the sum built forwards, the current reward left out) are recognised and named.
- **q2** (2 points) ``long_pole_map(obs)``, a per-coordinate rescaling of observations (N, 4)
  that shows the nominal policy a pole of half-length 4 m as if it were its own 0.5 m pole.
  *collect*: the map on probe observations drawn from the seed. *grade*: the four scales are read
  off the probes (a map that is not a per-coordinate rescaling is refused with that reason), and
  the source agent is evaluated here with those scales on the 64 test episodes of the long pole.
  It passes when the mean return reaches 190 of 200, whatever scales achieve it; no mapping, the
  scale inverted, or the cart's velocity rescaled too are named.
- **q3** (1 point) ``answer_q3``: a choice, checked by letter.
"""
from __future__ import annotations

import functools
import math

import numpy as np

from tlcourse.grading import Question
from tlcourse.grading.answers import call, describe
from tlcourse.grading.choice import choice_question

# ---------------------------------------------------------------- the exercise's fixed setting
SOURCE_SEED = 0
SOURCE_STEPS = 20_480
LONG_POLE = 4.0            # half-length of the "real" pole, metres
NOMINAL_POLE = 0.5
TEST_SEED = 20_000         # the reset seed of the 64 test episodes
TEST_EPISODES = 64
PASS_RETURN = 190.0
Q1_GAMMAS = (0.99, 0.9, 0.5, 1.0, 0.0)


# ---------------------------------------------------------------- q1
def q1_inputs(seed: int) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """Five rollouts ``(rewards (T,), dones (T,) of 0/1, gamma)``, several episodes each, from ``seed``."""
    rng = np.random.default_rng(seed)
    cases = []
    for gamma in Q1_GAMMAS:
        T = int(rng.integers(12, 20))
        rewards = np.round(rng.normal(1.0, 1.0, T), 3)
        dones = np.zeros(T)
        ends = rng.choice(np.arange(2, T - 2), size=2, replace=False)   # two episode ends inside, none last
        dones[ends] = 1.0
        cases.append((rewards, dones, gamma))
    return cases


def _reference_returns(rewards, dones, gamma, *, cut=True, discount=True, forwards=False, include_now=True):
    r, d = np.asarray(rewards, float), np.asarray(dones, float)
    g_factor = gamma if discount else 1.0
    out = np.zeros_like(r)
    if forwards:
        running = 0.0
        for t in range(len(r)):
            running = r[t] + g_factor * running * ((1 - d[t - 1]) if (cut and t > 0) else 1.0)
            out[t] = running
        return out
    running = 0.0
    for t in range(len(r) - 1, -1, -1):
        keep = (1 - d[t]) if cut else 1.0
        if include_now:
            running = r[t] + g_factor * keep * running
            out[t] = running
        else:
            out[t] = g_factor * keep * running
            running = r[t] + g_factor * keep * running
    return out


_Q1_MISTAKES = {
    "the return runs on across an episode end: where dones[t] is 1 the episode is over, so "
    "G_t = r_t and nothing after t counts (multiply the future by 1 - dones[t])": {"cut": False},
    "the rewards are not discounted: each step further away is worth gamma times less": {"discount": False},
    "the sum is built forwards, from the first step: the return of step t is the discounted sum of "
    "the rewards from t ON, so loop backwards from the last step": {"forwards": True},
    "the current reward is left out: G_t starts with r_t itself": {"include_now": False},
}


def _collect_returns(ns, seed):
    fn = ns["returns_to_go"]
    return {"calls": [call(fn, r.copy(), d.copy(), g) for r, d, g in q1_inputs(seed)]}


def _as_vector(entry, where, expected_len):
    if "raised" in entry:
        if entry["raised"] == "NotImplementedError":
            raise AssertionError("returns_to_go raises NotImplementedError: replace the placeholder with your code")
        raise AssertionError(f"{where} raised {entry['raised']}: {entry['message']}")
    value = entry.get("value")
    try:
        v = np.asarray(value, dtype=float).reshape(-1)
    except (TypeError, ValueError):
        raise AssertionError(f"{where} returned {describe(value)}; return an array of {expected_len} returns") from None
    assert v.shape == (expected_len,), (
        f"{where} returned {v.shape[0]} values; return one return per step ({expected_len})")
    return v


def _grade_returns(answer, seed):
    assert isinstance(answer, dict) and "calls" in answer, "the collected answer is malformed: run the cells in order"
    cases = q1_inputs(seed)
    got = [_as_vector(e, f"returns_to_go(rewards, dones, gamma={g})", len(r))
           for e, (r, d, g) in zip(answer["calls"], cases)]
    close = lambda a, b: np.allclose(a, b, rtol=1e-5, atol=1e-5)  # noqa: E731
    wrong = [i for i, (v, (r, d, g)) in enumerate(zip(got, cases)) if not close(v, _reference_returns(r, d, g))]
    if not wrong:
        return
    for mistake, kw in _Q1_MISTAKES.items():
        hits = [close(v, _reference_returns(r, d, g, **kw)) for v, (r, d, g) in zip(got, cases)]
        # the gamma = 1 and gamma = 0 cases cannot tell every mistake apart: name one that fits all others
        if all(hits[i] for i in wrong):
            raise AssertionError(f"returns_to_go is off: {mistake}")
    i = wrong[0]
    r, d, g = cases[i]
    want = _reference_returns(r, d, g)
    t = int(np.argmax(np.abs(got[i] - want)))
    raise AssertionError(f"returns_to_go(..., gamma={g}) gives {got[i][t]:.4f} at step {t}, expected {want[t]:.4f} "
                         f"(wrong in {len(wrong)} of {len(cases)} rollouts); G_t = r_t + gamma * (1 - dones[t]) * G_(t+1)")


# ---------------------------------------------------------------- q2
def q2_probes(seed: int) -> np.ndarray:
    """Probe observations (16, 4), float32, no coordinate near zero, drawn from ``seed``."""
    rng = np.random.default_rng(seed + 7)
    signs = rng.choice([-1.0, 1.0], size=(16, 4))
    return (signs * rng.uniform(0.05, 0.5, size=(16, 4))).astype(np.float32)


def _collect_map(ns, seed):
    fn = ns["long_pole_map"]
    return {"call": call(fn, q2_probes(seed).copy())}


@functools.lru_cache(maxsize=1)
def _source():
    from tlcourse import rl

    return rl.source_agent(SOURCE_SEED, steps=SOURCE_STEPS)["agent"]


@functools.lru_cache(maxsize=32)
def mapped_return(scales: tuple[float, float, float, float]) -> float:
    """Mean test return of the source agent on the long pole, observations multiplied by ``scales``."""
    from tlcourse import rl

    s = np.asarray(scales, dtype=np.float32)
    return float(rl.evaluate(_source(), episodes=TEST_EPISODES, seed=TEST_SEED, physics={"length": LONG_POLE},
                             obs_map=lambda obs: obs * s).mean())


def _grade_map(answer, seed):
    assert isinstance(answer, dict) and "call" in answer, "the collected answer is malformed: run the cells in order"
    entry = answer["call"]
    if "raised" in entry:
        if entry["raised"] == "NotImplementedError":
            raise AssertionError("long_pole_map raises NotImplementedError: replace the placeholder with your code")
        raise AssertionError(f"long_pole_map(obs) raised {entry['raised']}: {entry['message']}")
    probes = q2_probes(seed).astype(float)
    try:
        out = np.asarray(entry["value"], dtype=float)
    except (TypeError, ValueError):
        raise AssertionError(f"long_pole_map(obs) returned {describe(entry['value'])}; return an array of shape (N, 4)") from None
    assert out.shape == probes.shape, f"long_pole_map(obs) returned shape {out.shape} for obs of shape {probes.shape}"
    ratio = out / probes
    scales = np.median(ratio, axis=0)
    assert np.allclose(ratio, scales, rtol=1e-3, atol=1e-4), (
        "long_pole_map is not a per-coordinate rescaling (obs * [s0, s1, s2, s3]): the question asks for one "
        "scale factor per observation coordinate")
    ret = mapped_return(tuple(float(x) for x in scales))
    if ret >= PASS_RETURN:
        return
    k = math.sqrt(LONG_POLE / NOMINAL_POLE)
    if np.allclose(scales, 1, atol=1e-3):
        raise AssertionError(f"long_pole_map changes nothing: the nominal policy then balances the 4 m pole for "
                             f"{ret:.0f} of 200 steps on the test episodes. Which coordinate moves more slowly "
                             "on a longer pole?")
    if abs(scales[3] - 1 / k) < 0.05 * k:
        raise AssertionError(f"the scale of the angular velocity goes the wrong way (x{scales[3]:.2f}): a longer "
                             "pole falls MORE slowly, so its angular velocity looks small to the nominal policy; "
                             f"multiply it by sqrt(L_real / L_sim) ({ret:.0f} of 200 steps)")
    if abs(scales[1] - 1) > 0.05 and abs(scales[3] - k) < 0.05 * k:
        raise AssertionError(f"the cart's velocity is rescaled too (x{scales[1]:.2f}): the same force moves the "
                             "same cart whatever the pole, so leave the cart's coordinates alone "
                             f"({ret:.0f} of 200 steps)")
    raise AssertionError(f"with the scales {np.round(scales, 3).tolist()} the nominal policy balances the 4 m pole "
                         f"for {ret:.0f} of 200 steps on the test episodes; {PASS_RETURN:.0f} is needed. "
                         "Think about the pole's time scale, sqrt(L / g)")


# ---------------------------------------------------------------- q3
Q3_CHOICES = {
    "a": "About the jumpstart of the copied policy (more than 100 steps): the hidden layers hold what "
         "the source learnt.",
    "b": "About zero: the new output layer is random, so the agent starts like one trained from scratch.",
    "c": "Strongly negative: frozen layers cannot adapt, so it starts below scratch.",
    "d": "Exactly 200: the features already solve the task.",
}
_Q3_ANSWER = "b"
_Q3_FEEDBACK = {
    "a": "which part of the network chooses the action at step 0, and what do its weights know?",
    "c": "freezing limits what can be learnt later; at step 0 what decides the action is the output "
         "layer, which is random in both arms.",
    "d": "the features alone choose no action: something has to map them to 'left' or 'right'.",
}


QUESTIONS = [
    Question("q1", points=2, names=("returns_to_go",), collect=_collect_returns, grade=_grade_returns,
             hint="loop t from the last step down: running = rewards[t] + gamma * (1 - dones[t]) * running"),
    Question("q2", points=2, names=("long_pole_map",), collect=_collect_map, grade=_grade_map,
             hint="a pole k**2 times longer falls k times more slowly; which coordinate measures how fast it falls?"),
    choice_question("q3", "answer_q3", choices=Q3_CHOICES, answer=_Q3_ANSWER, feedback=_Q3_FEEDBACK, points=1,
                    hint="What chooses the action at step 0 in each arm?"),
]
