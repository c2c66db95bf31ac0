"""The sinusoid-regression task family of the MAML paper, and its 1-40-40-1 regressor.

Finn, Abbeel & Levine (2017), "Model-Agnostic Meta-Learning for Fast Adaptation of Deep Networks",
ICML, section 5.1. A task is one sine wave

    y = A * sin(x + b),    A ~ U[0.1, 5],   b ~ U[0, pi],   x ~ U[-5, 5],

observed at K points (the support set, K = 10 here as in most of the paper's plots); the model
must predict the whole curve (the query set) after a few gradient steps on those K points. No
single function fits all tasks: a network trained on all of them jointly learns their average,
E[A] (1/pi) int_0^pi sin(x + b) db = (2/pi) E[A] cos x, about 1.6 cos x (the phases span only half
a period, so they do not cancel), and its fine-tuned predictions stay poor, while MAML learns a starting point from which one step already recovers
the amplitude and the phase. The loss is the mean squared error, and the regressor is an MLP
with two hidden layers of 40 ReLU units (:func:`sinusoid_mlp`).

Sampling is explicit: every sampler takes ``seed=`` or a ``torch.Generator``. Inputs and targets
have a trailing feature dimension of 1, i.e. shape (T, K, 1), so that ``F.mse_loss`` compares
(K, 1) predictions with (K, 1) targets without broadcasting.

>>> tasks = sample_sinusoid_tasks(4, k_support=10, k_query=20, seed=0)
>>> [tuple(t.shape) for t in tasks]
[(4, 10, 1), (4, 10, 1), (4, 20, 1), (4, 20, 1)]
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from .maml import Tasks

__all__ = ["AMPLITUDE_RANGE", "PHASE_RANGE", "X_RANGE", "sinusoid", "sample_sinusoid_functions",
           "sinusoid_tasks", "sample_sinusoid_tasks", "sinusoid_task_sampler", "sinusoid_mlp"]

AMPLITUDE_RANGE = (0.1, 5.0)
PHASE_RANGE = (0.0, math.pi)
X_RANGE = (-5.0, 5.0)


def _generator(seed: int | None, generator: torch.Generator | None) -> torch.Generator:
    if (seed is None) == (generator is None):
        raise ValueError("pass exactly one of seed= (an int) or generator= (a torch.Generator), so "
                         "that the sampled tasks are reproducible")
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise ValueError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        if generator.device.type != "cpu":
            raise ValueError(f"generator must live on the CPU (tasks are drawn there and moved to "
                             f"device=), got one on {generator.device}")
        return generator
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")
    return torch.Generator().manual_seed(seed)


def _count(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def _uniform(shape: tuple[int, ...], low: float, high: float, generator: torch.Generator,
             dtype: torch.dtype) -> torch.Tensor:
    return low + (high - low) * torch.rand(shape, generator=generator, dtype=dtype)


def sinusoid(x: torch.Tensor, amplitude: torch.Tensor | float, phase: torch.Tensor | float) -> torch.Tensor:
    """``amplitude * sin(x + phase)``, broadcasting as torch does.

    For a batch of tasks pass ``x`` (T, N, 1) and ``amplitude``, ``phase`` of shape (T,): they are
    reshaped to (T, 1, 1). Dtype and device follow ``x``.

    >>> sinusoid(torch.tensor([0.0, math.pi / 2]), 2.0, 0.0)
    tensor([0., 2.])
    """
    amplitude = torch.as_tensor(amplitude, dtype=x.dtype, device=x.device)
    phase = torch.as_tensor(phase, dtype=x.dtype, device=x.device)
    if amplitude.ndim == 1 and x.ndim > 1:
        if amplitude.shape[0] != x.shape[0] or phase.shape != amplitude.shape:
            raise ValueError(f"amplitude and phase of shape (T,) need x of shape (T, ...) with the same "
                             f"T, got {tuple(amplitude.shape)}, {tuple(phase.shape)} and {tuple(x.shape)}")
        view = (-1,) + (1,) * (x.ndim - 1)
        amplitude, phase = amplitude.view(view), phase.view(view)
    return amplitude * torch.sin(x + phase)


def sample_sinusoid_functions(num_tasks: int, *, seed: int | None = None,
                              generator: torch.Generator | None = None,
                              dtype: torch.dtype = torch.float32,
                              device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw ``num_tasks`` sine waves: amplitudes ~ U[0.1, 5] and phases ~ U[0, pi], each of shape (T,).

    >>> amplitude, phase = sample_sinusoid_functions(3, seed=0)
    >>> amplitude.shape, bool((amplitude >= 0.1).all() and (phase <= math.pi).all())
    (torch.Size([3]), True)
    """
    g = _generator(seed, generator)
    n = _count(num_tasks, "num_tasks")
    amplitude = _uniform((n,), *AMPLITUDE_RANGE, g, dtype)
    phase = _uniform((n,), *PHASE_RANGE, g, dtype)
    return amplitude.to(device), phase.to(device)


def sinusoid_tasks(amplitude: torch.Tensor, phase: torch.Tensor, k_support: int = 10,
                   k_query: int = 10, *, seed: int | None = None,
                   generator: torch.Generator | None = None) -> Tasks:
    """Support and query sets for given sine waves: ``x ~ U[-5, 5]``, ``y = A sin(x + b)``, noise-free.

    Args:
        amplitude, phase: (T,) tensors, e.g. from :func:`sample_sinusoid_functions`; dtype and device
            of the tasks follow ``amplitude``.
        k_support: K, points per support set (10 in the paper's main plots).
        k_query: points per query set.
        seed, generator: exactly one, for the x positions.

    Returns:
        :class:`~tlcourse.meta.maml.Tasks` of shapes (T, k_support, 1) and (T, k_query, 1).

    >>> tasks = sinusoid_tasks(torch.tensor([1.0]), torch.tensor([0.0]), 3, 2, seed=0)
    >>> torch.allclose(tasks.y_support, torch.sin(tasks.x_support))
    True
    """
    for name, t in (("amplitude", amplitude), ("phase", phase)):
        if not isinstance(t, torch.Tensor) or t.ndim != 1 or len(t) == 0:
            raise ValueError(f"{name} must be a non-empty tensor of shape (T,), got "
                             f"{tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__}")
    if amplitude.shape != phase.shape:
        raise ValueError(f"amplitude and phase must have the same shape (T,), got "
                         f"{tuple(amplitude.shape)} and {tuple(phase.shape)}")
    g = _generator(seed, generator)
    k_support, k_query = _count(k_support, "k_support"), _count(k_query, "k_query")
    x = _uniform((len(amplitude), k_support + k_query, 1), *X_RANGE, g, amplitude.dtype)
    x = x.to(amplitude.device)
    y = sinusoid(x, amplitude, phase)
    return Tasks(x[:, :k_support], y[:, :k_support], x[:, k_support:], y[:, k_support:])


def sample_sinusoid_tasks(num_tasks: int, k_support: int = 10, k_query: int = 10, *,
                          seed: int | None = None, generator: torch.Generator | None = None,
                          dtype: torch.dtype = torch.float32,
                          device: torch.device | str | None = None) -> Tasks:
    """A batch of ``num_tasks`` random sinusoid tasks: new waves and new x positions.

    The same ``seed`` (or a generator in the same state) gives the same tasks. Shapes:
    (T, k_support, 1) for the support tensors and (T, k_query, 1) for the query tensors.

    >>> a = sample_sinusoid_tasks(2, seed=7)
    >>> b = sample_sinusoid_tasks(2, seed=7)
    >>> all(torch.equal(s, t) for s, t in zip(a, b))
    True
    """
    g = _generator(seed, generator)
    amplitude, phase = sample_sinusoid_functions(num_tasks, generator=g, dtype=dtype, device=device)
    return sinusoid_tasks(amplitude, phase, k_support, k_query, generator=g)


def sinusoid_task_sampler(num_tasks: int = 25, k_support: int = 10, k_query: int = 10, *,
                          dtype: torch.dtype = torch.float32,
                          device: torch.device | str | None = None) -> Callable[[torch.Generator], Tasks]:
    """A ``generator -> Tasks`` function drawing meta-batches, for :func:`~tlcourse.meta.maml.train_maml`.

    The defaults are the paper's: 25 tasks per meta-batch, K = 10 support and 10 query points.

    >>> sample = sinusoid_task_sampler(5)
    >>> tuple(sample(torch.Generator().manual_seed(0)).x_query.shape)
    (5, 10, 1)
    """
    _count(num_tasks, "num_tasks")
    _count(k_support, "k_support")
    _count(k_query, "k_query")

    def sample(generator: torch.Generator) -> Tasks:
        return sample_sinusoid_tasks(num_tasks, k_support, k_query, generator=generator,
                                     dtype=dtype, device=device)

    return sample


def sinusoid_mlp(hidden: tuple[int, ...] = (40, 40), *, seed: int | None = None) -> nn.Sequential:
    """The regressor of the paper: 1 -> 40 -> 40 -> 1 with ReLU, inputs and outputs of shape (N, 1).

    ``seed`` makes the initialisation reproducible without touching the global random state;
    ``None`` uses the global generator like any ``nn.Module``.

    >>> net = sinusoid_mlp(seed=0)
    >>> net
    Sequential(
      (0): Linear(in_features=1, out_features=40, bias=True)
      (1): ReLU()
      (2): Linear(in_features=40, out_features=40, bias=True)
      (3): ReLU()
      (4): Linear(in_features=40, out_features=1, bias=True)
    )
    >>> sum(p.numel() for p in net.parameters())
    1761
    """
    widths = tuple(hidden)
    if any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in widths):
        raise ValueError(f"hidden must be a tuple of positive layer widths, got {hidden!r}")

    def build() -> nn.Sequential:
        layers: list[nn.Module] = []
        width = 1
        for w in widths:
            layers += [nn.Linear(width, w), nn.ReLU()]
            width = w
        layers.append(nn.Linear(width, 1))
        return nn.Sequential(*layers)

    if seed is None:
        return build()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()
