"""Tests of tlcourse.rl on tiny cases: returns and advantages from their definitions, the physics
knobs, exact evaluation of deterministic policies, seeding, equal budgets and the forms of transfer."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tlcourse import rl


# ---------------------------------------------------------------- returns and advantages
def test_discounted_returns_by_hand():
    r = torch.tensor([1.0, 2.0, 3.0])
    assert torch.allclose(rl.discounted_returns(r, 0.5), torch.tensor([1 + 0.5 * 2 + 0.25 * 3, 2 + 0.5 * 3, 3.0]))
    assert torch.allclose(rl.discounted_returns(r, 1.0), torch.tensor([6.0, 5.0, 3.0]))
    assert torch.allclose(rl.discounted_returns(r, 0.0), r)


def test_discounted_returns_stop_at_episode_ends_and_bootstrap():
    r = torch.ones(4)
    d = torch.tensor([0.0, 1.0, 0.0, 0.0])
    out = rl.discounted_returns(r, 0.9, dones=d, bootstrap=10.0)
    assert torch.allclose(out, torch.tensor([1.9, 1.0, 1 + 0.9 * (1 + 0.9 * 10), 1 + 0.9 * 10]))
    batched = rl.discounted_returns(torch.ones(3, 2), 0.5, bootstrap=torch.tensor([0.0, 4.0]))
    assert torch.allclose(batched[:, 1], torch.tensor([1 + 0.5 + 0.25 + 0.5, 1 + 0.5 + 1, 1 + 2.0]))
    with pytest.raises(ValueError, match="gamma"):
        rl.discounted_returns(r, 1.5)


def test_gae_limits():
    torch.manual_seed(0)
    r, v, nv = torch.randn(5, 3), torch.randn(5, 3), torch.randn(5, 3)
    zeros = torch.zeros(5, 3)
    # lam = 0: the one-step TD error
    assert torch.allclose(rl.gae(r, v, nv, zeros, zeros, 0.9, 0.0), r + 0.9 * nv - v)
    # lam = 1, zero values: the discounted return; a termination cuts both bootstrap and sum
    term = torch.zeros(5, 3)
    term[2] = 1
    adv = rl.gae(r, zeros, zeros, term, term, 0.9, 1.0)
    assert torch.allclose(adv, rl.discounted_returns(r, 0.9, dones=term), atol=1e-6)


def test_gae_truncation_bootstraps_but_cuts_the_sum():
    r, v = torch.ones(2, 1), torch.zeros(2, 1)
    ended = torch.tensor([[1.0], [0.0]])       # step 0 truncated (time limit), not terminated
    adv = rl.gae(r, v, torch.tensor([[7.0], [5.0]]), torch.zeros(2, 1), ended, 0.5, 1.0)
    assert adv[0, 0] == pytest.approx(1 + 0.5 * 7)      # bootstrapped from V(final state), step 1 not added
    assert adv[1, 0] == pytest.approx(1 + 0.5 * 5)
    terminated = rl.gae(r, v, torch.tensor([[7.0], [5.0]]), ended, ended, 0.5, 1.0)
    assert terminated[0, 0] == pytest.approx(1.0)         # a fall: no bootstrap


# ---------------------------------------------------------------- physics
def test_set_physics_recomputes_the_cached_terms():
    env = rl.make_cartpole(2, masspole=0.3, length=2.0)
    assert env.polemass_length == pytest.approx(0.6) and env.total_mass == pytest.approx(1.3)
    rl.set_physics(env, length=np.array([0.5, 1.0]))
    assert np.allclose(env.polemass_length, [0.15, 0.3])
    assert rl.physics_of(env)["masspole"] == 0.3
    with pytest.raises(ValueError, match="positive"):
        rl.set_physics(env, gravity=-1.0)
    with pytest.raises(ValueError, match="shape"):
        rl.set_physics(env, length=np.ones(3))


def test_uniform_physics_stays_in_range_and_is_seeded():
    draw = rl.uniform_physics(length=(0.5, 5.0))
    a, b = draw(np.random.default_rng(1), 500), draw(np.random.default_rng(1), 500)
    assert np.array_equal(a["length"], b["length"]) and a["length"].min() >= 0.5 and a["length"].max() <= 5.0
    with pytest.raises(ValueError):
        rl.uniform_physics(length=(2.0, 1.0))


def _single_env_return(action: int, length: float, seed: int) -> tuple[float, np.ndarray]:
    """The same constant-action episode, stepped by hand with the scalar Gymnasium CartPole."""
    import gymnasium as gym

    env = gym.make("CartPole-v1", max_episode_steps=200).unwrapped
    env.length, env.polemass_length = length, env.masspole * length
    env.reset(seed=0)
    start = rl.make_cartpole(1).reset(seed=seed)[0][0].astype(np.float64)
    env.state = start.copy()
    total, done = 0.0, False
    while not done and total < 200:
        _, r, term, trunc, _ = env.step(action)
        total += r
        done = term or trunc
    return total, start


@pytest.mark.parametrize("action, length", [(0, 0.5), (1, 0.5), (1, 2.0)])
def test_a_deterministic_policy_is_evaluated_exactly(action, length):
    policy = lambda obs: torch.tensor([[1.0, 0.0] if action == 0 else [0.0, 1.0]] * len(obs))  # noqa: E731
    got = rl.evaluate(policy, episodes=1, seed=3, physics={"length": length})
    want, _ = _single_env_return(action, length, seed=3)
    assert got.tolist() == [want] and 5 <= want < 200


def test_evaluate_is_seeded_and_maps_actions():
    agent = rl.make_agent(0, hidden=(8,))
    a = rl.evaluate(agent, episodes=5, seed=1)
    assert np.array_equal(a, rl.evaluate(agent, episodes=5, seed=1))
    always_left = lambda obs: torch.tensor([[1.0, 0.0]] * len(obs))  # noqa: E731
    flipped = rl.evaluate(always_left, episodes=4, seed=2, action_map=lambda act: 1 - act)
    always_right = lambda obs: torch.tensor([[0.0, 1.0]] * len(obs))  # noqa: E731
    assert np.array_equal(flipped, rl.evaluate(always_right, episodes=4, seed=2))


def test_pole_length_map_scales_only_the_angular_velocity():
    obs = np.ones((2, 4), dtype=np.float32)
    assert np.allclose(rl.pole_length_map(2.0)(obs), [[1, 1, 1, 2]] * 2)
    assert np.allclose(rl.pole_length_map(0.5)(obs), 1)


# ---------------------------------------------------------------- agents and training
def test_make_agent_is_seeded_without_touching_the_global_rng():
    torch.manual_seed(5)
    before = torch.rand(1)
    torch.manual_seed(5)
    a, b = rl.make_agent(1), rl.make_agent(1)
    assert torch.equal(torch.rand(1), before)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(rl.make_agent(2).policy[0].weight, a.policy[0].weight)


def test_transfer_features_copies_and_freezes_the_hidden_layers_only():
    src = rl.make_agent(0)
    agent = rl.transfer_features(src, seed=9)
    assert torch.equal(agent.policy[0].weight, src.policy[0].weight) and not agent.policy[0].weight.requires_grad
    assert not torch.equal(agent.policy[-1].weight, src.policy[-1].weight) and agent.policy[-1].weight.requires_grad
    assert rl.transfer_features(src, seed=9, freeze=False).policy[0].weight.requires_grad


def test_train_ppo_budget_curve_and_determinism():
    cfg = rl.PPOConfig(num_envs=8, rollout_steps=8, epochs=1, minibatches=1)
    runs = [rl.train_ppo(rl.make_agent(0, hidden=(8,)), steps=128, seed=0, config=cfg, eval_every=64, eval_episodes=4)
            for _ in range(2)]
    assert runs[0]["env_steps"] == 128 and runs[0]["updates"] == 2
    assert runs[0]["steps"].tolist() == [0, 64, 128]
    assert np.array_equal(runs[0]["returns"], runs[1]["returns"])
    assert all(torch.equal(p, q) for p, q in zip(runs[0]["agent"].parameters(), runs[1]["agent"].parameters()))
    with pytest.raises(ValueError, match="multiple"):
        rl.train_ppo(rl.make_agent(0), steps=100, seed=0, config=cfg)
    with pytest.raises(ValueError, match="together"):
        rl.train_ppo(rl.make_agent(0), steps=64, seed=0, config=cfg, teacher=rl.make_agent(1))


def test_kickstarting_pulls_the_student_towards_the_teacher():
    cfg = rl.PPOConfig(num_envs=8, rollout_steps=8, epochs=4, minibatches=1, lr=1e-2)
    teacher = rl.make_agent(3, hidden=(8,))
    obs = torch.from_numpy(rl.make_cartpole(64).reset(seed=0)[0])

    def kl(agent):
        from torch.nn import functional as F
        p_t = F.log_softmax(teacher(obs), 1)
        return (p_t.exp() * (p_t - F.log_softmax(agent(obs), 1))).sum(1).mean().item()

    plain = rl.train_ppo(rl.make_agent(0, hidden=(8,)), steps=256, seed=0, config=cfg)["agent"]
    kicked = rl.train_ppo(rl.make_agent(0, hidden=(8,)), steps=256, seed=0, config=cfg, teacher=teacher,
                          distill_weight=lambda progress: 5.0)["agent"]
    assert kl(kicked) < kl(plain)


def test_domain_randomisation_changes_physics_per_cart():
    cfg = rl.PPOConfig(num_envs=8, rollout_steps=8, epochs=1, minibatches=1)
    run = rl.train_ppo(rl.make_agent(0, hidden=(8,)), steps=64, seed=0, config=cfg,
                       randomise=rl.uniform_physics(length=(1.0, 2.0)))
    assert run["env_steps"] == 64
    with pytest.raises(ValueError, match="not both"):
        rl.train_ppo(rl.make_agent(0), steps=64, seed=0, config=cfg, physics={"length": 1.0},
                     randomise=rl.uniform_physics(length=(1.0, 2.0)))


def test_linear_decay():
    w = rl.linear_decay(1.0, until=0.5)
    assert [w(p) for p in (0.0, 0.25, 0.5, 1.0)] == [1.0, 0.5, 0.0, 0.0]


def test_source_agent_is_cached(tmp_path):
    cfg = rl.PPOConfig(num_envs=8, rollout_steps=8, epochs=1, minibatches=1)
    first = rl.source_agent(0, steps=64, hidden=(8,), config=cfg, cache_dir=tmp_path)
    second = rl.source_agent(0, steps=64, hidden=(8,), config=cfg, cache_dir=tmp_path)
    assert not first["loaded_from_cache"] and second["loaded_from_cache"]
    assert all(torch.equal(p, q) for p, q in zip(first["agent"].parameters(), second["agent"].parameters()))
    assert len(list(tmp_path.glob("cartpole_ppo-*.pt"))) == 1


def test_distil_policy_copies_the_teachers_actions_into_a_smaller_student():
    teacher = rl.make_agent(4, hidden=(32, 32)).policy
    states = rl.collect_states(teacher, 100, seed=0)
    assert states.shape == (100, 4)
    student = rl.distil_policy(rl.make_agent(5, hidden=(8,)).policy, teacher, states, steps=200)
    agree = (student(states).argmax(1) == teacher(states).argmax(1)).float().mean()
    assert agree > 0.9
    again = rl.distil_policy(rl.make_agent(5, hidden=(8,)).policy, teacher, states, steps=200)
    assert all(torch.equal(p, q) for p, q in zip(student.parameters(), again.parameters()))
