"""Reinforcement learning, small and seeded: PPO on Gymnasium's vectorised CartPole, its physics as
parameters, exact evaluation, and the forms of transfer of chapter T16.

The environment is ``gymnasium.envs.classic_control.cartpole.CartPoleVectorEnv`` (Gymnasium 1.x,
Barto, Sutton & Anderson, 1983): ``N`` carts simulated together in NumPy, one observation
``(x, x_dot, theta, theta_dot)`` of shape (N, 4) per step, two actions (push left, push right),
reward 1 per step until the pole falls past 12 degrees or the cart leaves the track, episodes cut
at ``max_episode_steps`` (200 here, the original v0 limit, to fit a CPU budget). Its physics are plain
attributes (``gravity``, ``masscart``, ``masspole``, ``length`` = half the pole's length,
``force_mag``) read at every step, so :func:`set_physics` can change them, with one value for all
carts or one per cart (an array of shape (N,)), which is what domain randomisation needs.

The learner is PPO (Schulman et al., 2017) with generalised advantage estimation (Schulman et al.,
2016). For a rollout of rewards ``r_t``, values ``V(s_t)`` and ``d_t = 1`` where the episode
*terminated* at step t (a time limit is not a termination: the value of the last state is
bootstrapped)::

    delta_t = r_t + gamma * (1 - d_t) * V(s_{t+1}) - V(s_t)
    A_t     = delta_t + gamma * lam * (1 - d_t) * (1 - e_t) * A_{t+1}     (e_t = 1 where an episode ended at t)
    L       = -E[min(rho_t A_t, clip(rho_t, 1 - eps, 1 + eps) A_t)] + c_v E[(V(s_t) - (A_t + V_old(s_t)))^2]
              + w(progress) * E[KL(pi_teacher(.|s_t) || pi(.|s_t))]

with ``rho_t = pi(a_t|s_t) / pi_old(a_t|s_t)``. The last term is **kickstarting** (Schmitt et al.,
2018): policy distillation from a teacher on the states the *student* visits, which is what
DAgger (Ross et al., 2011) prescribes against compounding errors; its weight ``w`` is a plain
function of the fraction of the budget spent (:func:`linear_decay`), never a hidden counter.

Transfer, as Taylor & Stone (2009) classify it, is then a choice of arguments:

- *policy and value initialisation*: train an :func:`copy_agent` of the source agent;
- *policy distillation from a teacher*: :func:`distil_policy` on states from :func:`collect_states`
  (no reward), or, inside RL, ``teacher=`` and ``distill_weight=`` for :func:`train_ppo`;
- *feature transfer*: :func:`transfer_features` keeps the source's hidden layers (frozen or not)
  under fresh output layers;
- *inter-task mapping*: :func:`evaluate` takes ``obs_map`` and ``action_map``;
- *domain randomisation* (Tobin et al., 2017; Peng et al., 2018): ``randomise=uniform_physics(...)``
  draws new physics for every cart at every reset.

Every source of randomness is explicit: initial weights from ``seed`` (:func:`make_agent`),
initial states from ``env.reset(seed=...)``, actions and minibatches from a ``torch.Generator``,
randomised physics from a ``numpy.random.Generator``. Training runs with one torch thread, so the
same seed gives the same agent on every machine.

>>> agent = make_agent(seed=0, hidden=(8,))
>>> returns = evaluate(agent, episodes=4, seed=123)
>>> returns.shape, bool((returns >= 1).all() and (returns <= 200).all())
((4,), True)
>>> discounted_returns(torch.tensor([1.0, 1.0, 1.0]), gamma=0.5).tolist()
[1.75, 1.5, 1.0]
"""
from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .distill import distillation_loss
from .train import model_device

__all__ = ["NOMINAL_PHYSICS", "make_cartpole", "set_physics", "physics_of", "uniform_physics",
           "make_agent", "copy_agent", "transfer_features", "discounted_returns", "gae", "evaluate",
           "PPOConfig", "linear_decay", "train_ppo", "source_agent", "pole_length_map", "collect_states",
           "distil_policy"]

#: CartPole's physics as Gymnasium sets them (``length`` is half the pole's length, in metres).
NOMINAL_PHYSICS = {"gravity": 9.8, "masscart": 1.0, "masspole": 0.1, "length": 0.5, "force_mag": 10.0}
MAX_EPISODE_STEPS = 200


# ---------------------------------------------------------------- the environment and its physics
def make_cartpole(num_envs: int = 1, *, max_episode_steps: int = MAX_EPISODE_STEPS, **physics):
    """A ``CartPoleVectorEnv`` of ``num_envs`` carts, with ``physics`` changed by :func:`set_physics`.

    Not reset yet: call ``env.reset(seed=...)``, which draws every cart's initial state from one
    generator seeded with ``seed``. Gymnasium resets a cart on the step *after* its episode ended
    (autoreset mode "next step"); that step's reward is 0 and its transition is not a real one.

    >>> env = make_cartpole(3, length=0.25)
    >>> obs, _ = env.reset(seed=0)
    >>> obs.shape, env.length, env.polemass_length
    ((3, 4), 0.25, 0.025)
    """
    from gymnasium.envs.classic_control.cartpole import CartPoleVectorEnv

    if not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
        raise ValueError(f"num_envs must be an integer >= 1, got {num_envs!r}")
    env = CartPoleVectorEnv(num_envs=int(num_envs), max_episode_steps=int(max_episode_steps))
    return set_physics(env, **physics)


def set_physics(env, **physics):
    """Set CartPole's physics on ``env`` (its ``unwrapped`` env) and recompute the derived terms.

    Each value is a positive float, or an array of shape (num_envs,) with one value per cart (the
    vector env broadcasts it). ``total_mass = masscart + masspole`` and ``polemass_length =
    masspole * length`` are cached by Gymnasium at construction: forgetting to recompute them is
    the classic bug of changing the pole's mass on ``env.unwrapped`` by hand. Returns ``env``.

    >>> env = set_physics(make_cartpole(2), masspole=np.array([0.1, 0.5]))
    >>> env.total_mass.tolist(), env.polemass_length.tolist()
    ([1.1, 1.5], [0.05, 0.25])
    >>> set_physics(make_cartpole(), mass=1.0)
    Traceback (most recent call last):
    ValueError: unknown physics 'mass'; CartPole has gravity, masscart, masspole, length, force_mag
    """
    base = getattr(env, "unwrapped", env)
    n = getattr(base, "num_envs", 1)
    for name, value in physics.items():
        if name not in NOMINAL_PHYSICS:
            raise ValueError(f"unknown physics {name!r}; CartPole has {', '.join(NOMINAL_PHYSICS)}")
        arr = np.asarray(value, dtype=np.float64)
        if arr.ndim > 1 or (arr.ndim == 1 and arr.shape != (n,)):
            raise ValueError(f"{name} must be a number or an array of shape ({n},), got shape {arr.shape}")
        if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
            raise ValueError(f"{name} must be positive and finite, got {value!r}")
        setattr(base, name, float(arr) if arr.ndim == 0 else arr)
    base.total_mass = base.masspole + base.masscart
    base.polemass_length = base.masspole * base.length
    return env


def physics_of(env) -> dict:
    """The physics ``env`` simulates now: ``{name: float or array (num_envs,)}``."""
    base = getattr(env, "unwrapped", env)
    return {name: getattr(base, name) for name in NOMINAL_PHYSICS}


def uniform_physics(**ranges: tuple[float, float]) -> Callable[[np.random.Generator, int], dict]:
    """Domain randomisation: a sampler ``(rng, n) -> {name: array (n,)}`` drawing each named
    parameter uniformly from its ``(low, high)`` range (the others keep their nominal values).

    >>> draw = uniform_physics(length=(0.25, 1.0))
    >>> v = draw(np.random.default_rng(0), 1000)["length"]
    >>> bool(v.min() >= 0.25 and v.max() <= 1.0), v.shape
    (True, (1000,))
    """
    for name, bounds in ranges.items():
        if name not in NOMINAL_PHYSICS:
            raise ValueError(f"unknown physics {name!r}; CartPole has {', '.join(NOMINAL_PHYSICS)}")
        low, high = bounds
        if not 0 < low <= high:
            raise ValueError(f"{name} range must satisfy 0 < low <= high, got {bounds!r}")

    def draw(rng: np.random.Generator, n: int) -> dict:
        return {name: rng.uniform(low, high, size=n) for name, (low, high) in ranges.items()}

    draw.ranges = dict(ranges)
    return draw


# ---------------------------------------------------------------- the agent
class Agent(nn.Module):
    """Actor-critic with separate MLPs: ``policy`` (N, 4) -> logits (N, 2), ``value`` (N, 4) -> (N,).

    Hidden layers use tanh. ``policy[:-1]`` is the policy's feature extractor, ``policy[-1]`` its
    output layer (the same for ``value``), which is what :func:`transfer_features` relies on.
    """

    def __init__(self, hidden: Sequence[int] = (32, 32), obs_dim: int = 4, n_actions: int = 2):
        super().__init__()
        self.hidden = tuple(int(h) for h in hidden)
        self.policy = _mlp([obs_dim, *self.hidden, n_actions])
        self.value_net = _mlp([obs_dim, *self.hidden, 1])

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.policy(obs)

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.value_net(obs).squeeze(-1)


def _mlp(sizes: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.Tanh())
    return nn.Sequential(*layers)


def make_agent(seed: int, hidden: Sequence[int] = (32, 32)) -> Agent:
    """A fresh :class:`Agent` whose initial weights depend only on ``seed`` (the global RNG is untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Agent(hidden)


def copy_agent(agent: Agent) -> Agent:
    """An independent copy (policy *and* value network): policy and value initialisation."""
    return copy.deepcopy(agent)


def transfer_features(source: Agent, seed: int, *, freeze: bool = True) -> Agent:
    """Feature transfer: the source's hidden layers under fresh output layers drawn from ``seed``.

    With ``freeze`` the copied layers get ``requires_grad = False`` and only the two output layers
    learn. The new policy head is random, so the agent starts about as badly as one from scratch:
    any benefit shows in how fast it learns, not at step 0.
    """
    agent = make_agent(seed, source.hidden)
    for net, src in ((agent.policy, source.policy), (agent.value_net, source.value_net)):
        for layer, src_layer in zip(list(net)[:-1], list(src)[:-1]):
            layer.load_state_dict(src_layer.state_dict())
            for p in layer.parameters():
                p.requires_grad_(not freeze)
    return agent


# ---------------------------------------------------------------- returns and advantages
def discounted_returns(rewards: torch.Tensor, gamma: float, dones: torch.Tensor | None = None,
                       bootstrap: torch.Tensor | float = 0.0) -> torch.Tensor:
    """``G_t = r_t + gamma * (1 - done_t) * G_{t+1}``, with ``G_T = bootstrap``.

    Shapes: rewards (T,) or (T, N), dones the same (1 where the episode ended at t, so nothing
    after it counts), bootstrap scalar or (N,) (the value of the state after the last step).

    >>> discounted_returns(torch.tensor([1.0, 1.0, 1.0, 1.0]), 0.9, dones=torch.tensor([0, 1, 0, 0])).tolist()
    [1.899999976158142, 1.0, 1.899999976158142, 1.0]
    """
    if not 0 <= gamma <= 1:
        raise ValueError(f"gamma must lie in [0, 1], got {gamma}")
    r = rewards.float()
    d = torch.zeros_like(r) if dones is None else dones.float()
    if d.shape != r.shape:
        raise ValueError(f"dones has shape {tuple(d.shape)} but rewards {tuple(r.shape)}")
    out = torch.empty_like(r)
    g = torch.as_tensor(bootstrap, dtype=r.dtype).expand_as(r[0]).clone()
    for t in range(len(r) - 1, -1, -1):
        g = r[t] + gamma * (1 - d[t]) * g
        out[t] = g
    return out


def gae(rewards: torch.Tensor, values: torch.Tensor, next_values: torch.Tensor, terminated: torch.Tensor,
        ended: torch.Tensor, gamma: float, lam: float) -> torch.Tensor:
    """Generalised advantage estimates (Schulman et al., 2016), shapes (T, N) -> (T, N).

    ``next_values[t]`` is ``V(s_{t+1})`` for the state reached at step t (the final state when the
    episode ended there); ``terminated[t]`` cuts the bootstrap (a fall), ``ended[t]`` (terminated
    *or* truncated) cuts the sum over later steps. With ``lam = 1`` and zero values the advantage
    is the discounted return; with ``lam = 0`` it is the one-step TD error.

    >>> r = torch.ones(3, 1); z = torch.zeros(3, 1)
    >>> gae(r, z, z, z, z, gamma=0.5, lam=1.0).squeeze(1).tolist()
    [1.75, 1.5, 1.0]
    """
    T = len(rewards)
    if not all(x.shape == rewards.shape for x in (values, next_values, terminated, ended)):
        raise ValueError("rewards, values, next_values, terminated and ended must share one shape (T, N)")
    adv = torch.zeros_like(values)
    running = torch.zeros_like(values[0])
    for t in range(T - 1, -1, -1):
        live = 1.0 - terminated[t].float()
        delta = rewards[t] + gamma * live * next_values[t] - values[t]
        running = delta + gamma * lam * (1.0 - ended[t].float()) * running
        adv[t] = running
    return adv


# ---------------------------------------------------------------- an inter-task mapping from physics
def pole_length_map(target_length: float, source_length: float = NOMINAL_PHYSICS["length"]) -> Callable:
    """A state mapping from a CartPole with pole half-length ``target_length`` to one with
    ``source_length``, derived by dimensional analysis: ``theta_dot * sqrt(target / source)``.

    Near upright the pole's angle obeys ``theta'' ~ (g * theta - x'') / (4/3 * L)``: its time scale
    is ``sqrt(L / g)``, so a pole ``k**2`` times longer tips over ``k`` times more slowly. Rescaling
    the angular velocity by ``k`` shows the source policy the motion it was trained on, measured in
    its own time units. The cart's position and velocity are left alone: the same force moves the
    same cart. The mapping is approximate (the coupling through the cart does not scale), so it is
    measured, not assumed. Shapes: observations (N, 4) -> (N, 4), float32.

    >>> pole_length_map(2.0)(np.array([[0.1, 0.2, 0.3, 0.4]], dtype=np.float32)).tolist()
    [[0.10000000149011612, 0.20000000298023224, 0.30000001192092896, 0.800000011920929]]
    """
    if not (target_length > 0 and source_length > 0):
        raise ValueError(f"lengths must be positive, got {target_length} and {source_length}")
    scale = np.array([1.0, 1.0, 1.0, math.sqrt(target_length / source_length)], dtype=np.float32)
    return lambda obs: np.asarray(obs, dtype=np.float32) * scale


# ---------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate(policy: nn.Module | Callable, *, episodes: int = 32, seed: int = 10_000,
             physics: Mapping | None = None, max_episode_steps: int = MAX_EPISODE_STEPS,
             obs_map: Callable | None = None, action_map: Callable | None = None,
             greedy: bool = True) -> np.ndarray:
    """Undiscounted return of each of ``episodes`` episodes, run side by side: array (episodes,).

    The initial states come from ``env.reset(seed=seed)`` (use one block of seeds for choices, the
    validation episodes, and another for the numbers you report). ``policy`` maps observations
    (N, 4) to logits (N, 2); the greedy action is the arg-max (``greedy=False`` samples from a
    generator seeded with ``seed``). ``obs_map`` turns the environment's observations into the
    policy's, ``action_map`` the policy's actions (a NumPy int array) into the environment's: an
    inter-task mapping. A deterministic policy on a deterministic simulator gives exact returns.
    """
    env = make_cartpole(episodes, max_episode_steps=max_episode_steps, **(physics or {}))
    obs, _ = env.reset(seed=seed)
    g = torch.Generator().manual_seed(seed)
    total = np.zeros(episodes)
    alive = np.ones(episodes, dtype=bool)
    was_training = getattr(policy, "training", False)
    device = model_device(policy) if isinstance(policy, nn.Module) else torch.device("cpu")
    if isinstance(policy, nn.Module):
        policy.eval()
    try:
        for _ in range(max_episode_steps):
            o = torch.from_numpy(obs if obs_map is None else np.asarray(obs_map(obs), dtype=np.float32))
            logits = policy(o.to(device)).cpu()
            if greedy:
                a = logits.argmax(1).numpy()
            else:
                a = torch.multinomial(F.softmax(logits, 1), 1, generator=g).squeeze(1).numpy()
            if action_map is not None:
                a = np.asarray(action_map(a), dtype=np.int64)
            obs, r, term, trunc, _ = env.step(a)
            total += r * alive
            alive &= ~(term | trunc)
            if not alive.any():
                break
    finally:
        if isinstance(policy, nn.Module):
            policy.train(was_training)
    return total


# ---------------------------------------------------------------- PPO with optional distillation
@dataclass(frozen=True)
class PPOConfig:
    """PPO's hyperparameters, fixed on the nominal task and reused unchanged by every arm."""

    num_envs: int = 64
    rollout_steps: int = 16       # per cart, so num_envs * rollout_steps environment steps per update
    epochs: int = 4
    minibatches: int = 4
    lr: float = 3e-3              # Adam, annealed linearly to 0 over the budget
    gamma: float = 0.99
    lam: float = 0.95
    clip: float = 0.2
    value_coef: float = 0.5
    max_grad_norm: float = 0.5

    @property
    def steps_per_update(self) -> int:
        return self.num_envs * self.rollout_steps


def linear_decay(start: float, until: float = 1.0) -> Callable[[float], float]:
    """``w(progress) = start * max(0, 1 - progress / until)``: a weight that fades out by ``until``.

    >>> w = linear_decay(2.0, until=0.5)
    >>> w(0.0), w(0.25), w(0.5), w(0.9)
    (2.0, 1.0, 0.0, 0.0)
    """
    if not 0 < until <= 1:
        raise ValueError(f"until must lie in (0, 1], got {until}")
    return lambda progress: start * max(0.0, 1.0 - progress / until)


def train_ppo(agent: Agent, *, steps: int, seed: int, physics: Mapping | None = None,
              randomise: Callable | None = None, config: PPOConfig = PPOConfig(),
              teacher: nn.Module | None = None, distill_weight: Callable[[float], float] | None = None,
              eval_every: int | None = None, eval_episodes: int = 32, eval_seed: int = 10_000,
              eval_physics: Mapping | None = None) -> dict:
    """Train ``agent`` in place with PPO for exactly ``steps`` environment steps; record a curve.

    ``physics`` fixes the training physics; ``randomise`` (see :func:`uniform_physics`) instead
    draws new physics for each cart at every reset, starting with the first. ``teacher`` with
    ``distill_weight(progress)`` adds ``w * KL(pi_teacher || pi_agent)`` on the agent's own states
    (kickstarting). ``steps`` must be a multiple of ``config.steps_per_update``, and so must
    ``eval_every``: every arm given the same ``steps`` and ``eval_every`` is scored at the same x
    positions. The curve is the mean greedy return of :func:`evaluate` on ``eval_episodes``
    validation episodes (``eval_seed``, ``eval_physics``, default: the training physics), before
    training (step 0) and every ``eval_every`` steps; evaluation episodes do not count as training steps.

    Returns ``{"agent", "steps" (K,), "returns" (K,), "env_steps", "updates", "seconds"}``.
    """
    per = config.steps_per_update
    if not isinstance(steps, (int, np.integer)) or steps < per or steps % per:
        raise ValueError(f"steps={steps!r} must be a positive multiple of num_envs * rollout_steps = {per}")
    if eval_every is not None and (eval_every % per or eval_every < per):
        raise ValueError(f"eval_every={eval_every} must be a positive multiple of {per}")
    if physics and randomise is not None:
        raise ValueError("pass physics (fixed) or randomise (a sampler), not both")
    if (teacher is None) != (distill_weight is None):
        raise ValueError("teacher and distill_weight go together")
    eval_physics = dict(physics or {}) if eval_physics is None else dict(eval_physics)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # one thread: the same seed gives the same agent on every machine
    try:
        return _train(agent, steps, seed, physics or {}, randomise, config, teacher, distill_weight,
                      eval_every, eval_episodes, eval_seed, eval_physics)
    finally:
        torch.set_num_threads(threads)


def _train(agent, steps, seed, physics, randomise, cfg, teacher, distill_weight, eval_every,
           eval_episodes, eval_seed, eval_physics) -> dict:
    n, T = cfg.num_envs, cfg.rollout_steps
    env = make_cartpole(n, **physics)
    rng = np.random.default_rng(seed)
    if randomise is not None:
        set_physics(env, **randomise(rng, n))
    obs, _ = env.reset(seed=seed)
    gen = torch.Generator().manual_seed(seed)      # actions and minibatches are drawn on the CPU
    device = model_device(agent)
    params = [p for p in agent.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=cfg.lr, foreach=True)
    if teacher is not None:
        teacher.eval()
    prev_done = np.zeros(n, dtype=bool)       # True: this cart's next step is Gymnasium's reset step
    done_steps, updates = 0, 0
    curve_x, curve_y = [], []

    def record():
        curve_x.append(done_steps)
        curve_y.append(float(evaluate(agent, episodes=eval_episodes, seed=eval_seed, physics=eval_physics).mean()))

    start = time.perf_counter()
    if eval_every:
        record()
    agent.train()
    while done_steps < steps:
        for group in optimizer.param_groups:
            group["lr"] = cfg.lr * (1 - done_steps / steps)
        buf = {k: [] for k in ("obs", "act", "logp", "val", "rew", "term", "ended", "real")}
        with torch.no_grad():
            for _ in range(T):
                o = torch.from_numpy(obs).to(device)
                logits = agent(o)
                a = torch.multinomial(F.softmax(logits, 1).cpu(), 1, generator=gen).squeeze(1).to(device)
                nxt, r, term, trunc, _ = env.step(a.cpu().numpy())
                ended = term | trunc
                buf["obs"].append(o), buf["act"].append(a), buf["val"].append(agent.value(o))
                buf["logp"].append(F.log_softmax(logits, 1).gather(1, a[:, None]).squeeze(1))
                for key, value in (("rew", r), ("term", term), ("ended", ended), ("real", ~prev_done)):
                    buf[key].append(torch.from_numpy(value).to(device))
                if randomise is not None and ended.any():
                    # new physics for the carts that reset on the next step (Gymnasium's reset step)
                    draw = randomise(rng, n)
                    cur = physics_of(env)
                    set_physics(env, **{k: np.where(ended, v, np.broadcast_to(cur[k], (n,))) for k, v in draw.items()})
                prev_done = ended
                obs = nxt
            last_val = agent.value(torch.from_numpy(obs).to(device))
        done_steps += n * T
        b = {k: torch.stack(v) for k, v in buf.items()}
        # V(s_{t+1}) is the next step's value: after an episode ends Gymnasium still returns the final
        # state, and only the following (reset) step brings the new episode's first state.
        next_val = torch.cat([b["val"][1:], last_val[None]])
        adv = gae(b["rew"], b["val"], next_val, b["term"], b["ended"], cfg.gamma, cfg.lam)
        ret = adv + b["val"]
        real = b["real"].reshape(-1)          # drop Gymnasium's reset steps: not real transitions
        o, a, lp_old = b["obs"].reshape(-1, 4)[real], b["act"].reshape(-1)[real], b["logp"].reshape(-1)[real]
        adv, ret = adv.reshape(-1)[real], ret.reshape(-1)[real]
        with torch.no_grad():
            teacher_logits = teacher(o.to(model_device(teacher))).to(device) if teacher is not None else None
        w = distill_weight(done_steps / steps) if distill_weight is not None else 0.0
        for _ in range(cfg.epochs):
            for idx in torch.randperm(len(o), generator=gen).to(device).chunk(cfg.minibatches):
                logits = agent(o[idx])
                logp = F.log_softmax(logits, 1).gather(1, a[idx][:, None]).squeeze(1)
                ad = adv[idx]
                ad = (ad - ad.mean()) / (ad.std() + 1e-8)
                ratio = (logp - lp_old[idx]).exp()
                policy_loss = -torch.min(ratio * ad, ratio.clamp(1 - cfg.clip, 1 + cfg.clip) * ad).mean()
                loss = policy_loss + cfg.value_coef * F.mse_loss(agent.value(o[idx]), ret[idx])
                if w > 0:
                    loss = loss + w * distillation_loss(logits, teacher_logits[idx], a[idx], temperature=1.0, alpha=1.0)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                optimizer.step()
        updates += 1
        if eval_every and done_steps % eval_every == 0:
            record()
    agent.eval()
    return {"agent": agent, "steps": np.array(curve_x), "returns": np.array(curve_y), "env_steps": done_steps,
            "updates": updates, "seconds": time.perf_counter() - start}


# ---------------------------------------------------------------- policy distillation without reward
@torch.no_grad()
def collect_states(policy: nn.Module | Callable, n_states: int, *, seed: int, physics: Mapping | None = None,
                   num_envs: int = 8) -> torch.Tensor:
    """The first ``n_states`` observations (n_states, 4) met by ``policy`` acting greedily from
    ``env.reset(seed=seed)``: the states a teacher shows (behaviour cloning) or, called with the
    student, the states DAgger asks the teacher to label."""
    env = make_cartpole(num_envs, **(physics or {}))
    obs, _ = env.reset(seed=seed)
    out, count = [], 0
    while count < n_states:
        o = torch.from_numpy(obs)
        out.append(o)
        count += len(o)
        device = model_device(policy) if isinstance(policy, nn.Module) else torch.device("cpu")
        obs, *_ = env.step(policy(o.to(device)).argmax(1).cpu().numpy())
    return torch.cat(out)[:n_states]


def distil_policy(student: nn.Module, teacher: nn.Module, states: torch.Tensor, *, steps: int = 300,
                  lr: float = 1e-2) -> nn.Module:
    """Policy distillation (Rusu et al., 2016): full-batch Adam on ``KL(pi_teacher(.|s) || pi_student(.|s))``
    over ``states`` (N, 4), temperature 1, no reward. Student and teacher map (N, 4) to logits (N, 2)
    and may have different architectures. Deterministic given the student's initial weights.
    Returns the student, in eval mode."""
    teacher.eval()
    states = states.to(model_device(student))
    logits_t = teacher(states.to(model_device(teacher))).detach().to(states.device)
    optimizer = torch.optim.Adam(student.parameters(), lr=lr)
    student.train()
    dummy = torch.zeros(len(states), dtype=torch.long, device=states.device)     # alpha = 1: the hard-label term has no weight
    for _ in range(steps):
        loss = distillation_loss(student(states), logits_t, dummy, temperature=1.0, alpha=1.0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return student.eval()


# ---------------------------------------------------------------- the cached source agent
def source_agent(seed: int, *, steps: int, hidden: Sequence[int] = (32, 32), randomise: Mapping | None = None,
                 config: PPOConfig = PPOConfig(), eval_every: int | None = None,
                 cache_dir=None) -> dict:
    """A PPO agent trained on CartPole (nominal physics, or ``randomise={name: (low, high)}``),
    trained once and cached like the course's other source models.

    Cache: ``<cache_dir or tlcourse.zoo.models_cache_dir()>/cartpole_ppo-<hash12>.pt``, the hash of
    the recipe (steps, hidden sizes, ranges, PPO config, Gymnasium version) and the seed. Returns the
    :func:`train_ppo` record (``agent``, ``steps``, ``returns``, ...) plus ``loaded_from_cache``.
    """
    from pathlib import Path

    import gymnasium

    from .zoo import _atomic_write, models_cache_dir, recipe_hash

    recipe = {"env": "CartPoleVectorEnv", "gymnasium": gymnasium.__version__, "steps": int(steps),
              "hidden": list(hidden), "randomise": {k: list(v) for k, v in (randomise or {}).items()},
              "ppo": asdict(config), "eval_every": eval_every, "max_episode_steps": MAX_EPISODE_STEPS,
              "code": "tlcourse.rl v1"}
    key = recipe_hash(recipe, {}, seed)
    folder = Path(cache_dir).expanduser() if cache_dir is not None else models_cache_dir()
    path = folder / f"cartpole_ppo-{key}.pt"
    if path.is_file():
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
            agent = Agent(hidden)
            agent.load_state_dict(saved["state_dict"])
            info = saved["info"]
            return {"agent": agent.eval(), "steps": np.array(info["steps"]), "returns": np.array(info["returns"]),
                    "env_steps": info["env_steps"], "updates": info["updates"], "seconds": info["seconds"],
                    "loaded_from_cache": True}
        except Exception as err:  # noqa: BLE001 - an unreadable cache file is retrained, loudly
            import warnings
            warnings.warn(f"cached agent {path} could not be read ({err}); training it again", stacklevel=2)
    agent = make_agent(seed, hidden)
    sampler = uniform_physics(**randomise) if randomise else None
    run = train_ppo(agent, steps=steps, seed=seed, randomise=sampler, config=config, eval_every=eval_every)
    info = json.loads(json.dumps({"steps": run["steps"].tolist(), "returns": run["returns"].tolist(),
                                  "env_steps": run["env_steps"], "updates": run["updates"],
                                  "seconds": run["seconds"], "recipe": recipe}))
    state = {k: v.detach().clone() for k, v in agent.state_dict().items()}
    try:
        _atomic_write(path, lambda f: torch.save({"state_dict": state, "info": info}, f))
    except OSError as err:
        import warnings
        warnings.warn(f"could not cache the agent at {path} ({err}); set TLCOURSE_CACHE to a writable folder",
                      stacklevel=2)
    return {**run, "loaded_from_cache": False}


