import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tlcourse.meta.maml import Tasks
from tlcourse.meta.sinusoid import (AMPLITUDE_RANGE, PHASE_RANGE, X_RANGE, sample_sinusoid_functions,
                                    sample_sinusoid_tasks, sinusoid, sinusoid_mlp, sinusoid_task_sampler,
                                    sinusoid_tasks)

FAST = settings(max_examples=25, deadline=None)


def test_ranges_of_the_paper():
    assert AMPLITUDE_RANGE == (0.1, 5.0) and PHASE_RANGE == (0.0, math.pi) and X_RANGE == (-5.0, 5.0)


def test_samples_lie_in_their_ranges_and_fill_them():
    amplitude, phase = sample_sinusoid_functions(20_000, seed=0)
    assert 0.1 <= amplitude.min() and amplitude.max() <= 5.0
    assert 0.0 <= phase.min() and phase.max() <= math.pi
    # uniform: mean (a + b) / 2 and the extremes close to the ends (standard error of the mean ~0.01)
    assert amplitude.mean().item() == pytest.approx(2.55, abs=0.05)
    assert phase.mean().item() == pytest.approx(math.pi / 2, abs=0.05)
    assert amplitude.min() < 0.11 and amplitude.max() > 4.99
    tasks = sinusoid_tasks(amplitude[:500], phase[:500], 10, 30, seed=1)
    x = torch.cat([tasks.x_support, tasks.x_query], 1)
    assert -5.0 <= x.min() < -4.9 and 4.9 < x.max() <= 5.0
    assert x.mean().item() == pytest.approx(0.0, abs=0.1)


def test_targets_are_the_sine_waves_at_the_inputs():
    amplitude, phase = sample_sinusoid_functions(6, seed=2)
    tasks = sinusoid_tasks(amplitude, phase, 10, 5, seed=3)
    for t in range(6):
        for x, y in ((tasks.x_support[t], tasks.y_support[t]), (tasks.x_query[t], tasks.y_query[t])):
            assert torch.allclose(y, amplitude[t] * torch.sin(x + phase[t]))
            assert (y.abs() <= amplitude[t] + 1e-6).all()


def test_sample_tasks_is_functions_then_tasks_from_one_generator():
    g = torch.Generator().manual_seed(5)
    amplitude, phase = sample_sinusoid_functions(4, generator=g)
    expected = sinusoid_tasks(amplitude, phase, 10, 10, generator=g)
    got = sample_sinusoid_tasks(4, 10, 10, seed=5)
    assert isinstance(got, Tasks)
    assert all(torch.equal(a, b) for a, b in zip(got, expected))


def test_determinism_and_generator_state():
    a, b = sample_sinusoid_tasks(3, seed=0), sample_sinusoid_tasks(3, seed=0)
    assert all(torch.equal(s, t) for s, t in zip(a, b))
    c = sample_sinusoid_tasks(3, seed=1)
    assert not torch.equal(a.y_support, c.y_support)
    g = torch.Generator().manual_seed(0)
    first, second = sample_sinusoid_tasks(3, generator=g), sample_sinusoid_tasks(3, generator=g)
    assert all(torch.equal(s, t) for s, t in zip(first, a))  # a generator seeded 0 equals seed=0
    assert not torch.equal(first.x_support, second.x_support)  # and it moves on
    state = torch.random.get_rng_state()
    sample_sinusoid_tasks(3, seed=0)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global generator is not used


def test_sampler_for_meta_training():
    sample = sinusoid_task_sampler(25)
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    tasks = sample(g1)
    assert [tuple(t.shape) for t in tasks] == [(25, 10, 1)] * 4
    assert all(torch.equal(s, t) for s, t in zip(tasks, sample(g2)))
    assert sinusoid_task_sampler(2, dtype=torch.float64)(g1).x_query.dtype == torch.float64


@FAST
@given(n=st.integers(1, 6), k=st.integers(1, 12), q=st.integers(1, 12),
       dtype=st.sampled_from([torch.float32, torch.float64]), seed=st.integers(0, 2 ** 31))
def test_shapes_and_dtype(n, k, q, dtype, seed):
    tasks = sample_sinusoid_tasks(n, k, q, seed=seed, dtype=dtype, device="cpu")
    assert [tuple(t.shape) for t in tasks] == [(n, k, 1), (n, k, 1), (n, q, 1), (n, q, 1)]
    assert all(t.dtype == dtype for t in tasks)


@FAST
@given(bad=st.one_of(st.integers(max_value=0), st.floats(), st.booleans()))
def test_bad_counts_are_rejected(bad):
    with pytest.raises(ValueError, match="must be a positive integer"):
        sample_sinusoid_tasks(bad, seed=0)
    with pytest.raises(ValueError, match="k_support must be a positive integer"):
        sample_sinusoid_tasks(2, bad, seed=0)
    with pytest.raises(ValueError, match="k_query must be a positive integer"):
        sinusoid_task_sampler(2, 10, bad)


def test_randomness_must_be_explicit():
    with pytest.raises(ValueError, match="exactly one of seed="):
        sample_sinusoid_tasks(2)
    with pytest.raises(ValueError, match="exactly one of seed="):
        sample_sinusoid_functions(2, seed=0, generator=torch.Generator())
    with pytest.raises(ValueError, match="seed must be an int"):
        sample_sinusoid_functions(2, seed=1.5)


def test_sinusoid_broadcasting_and_checks():
    x = torch.zeros(3, 4, 1)
    y = sinusoid(x, torch.tensor([1.0, 2.0, 3.0]), torch.full((3,), math.pi / 2))
    assert torch.allclose(y[:, :, 0], torch.tensor([1.0, 2.0, 3.0]).unsqueeze(1).expand(3, 4))
    with pytest.raises(ValueError, match="same\nT|same T"):
        sinusoid(x, torch.ones(2), torch.zeros(2))
    with pytest.raises(ValueError, match="same shape"):
        sinusoid_tasks(torch.ones(3), torch.zeros(2), seed=0)
    with pytest.raises(ValueError, match=r"shape \(T,\)"):
        sinusoid_tasks(torch.ones(3, 1), torch.zeros(3, 1), seed=0)


def test_mlp_of_the_paper():
    net = sinusoid_mlp(seed=0)
    widths = [(m.in_features, m.out_features) for m in net if isinstance(m, torch.nn.Linear)]
    assert widths == [(1, 40), (40, 40), (40, 1)]
    assert sum(isinstance(m, torch.nn.ReLU) for m in net) == 2
    assert net(torch.zeros(7, 1)).shape == (7, 1)
    state = torch.random.get_rng_state()
    again = sinusoid_mlp(seed=0)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(a, b) for a, b in zip(net.parameters(), again.parameters()))
    assert not torch.equal(net[0].weight, sinusoid_mlp(seed=1)[0].weight)
    assert [m.out_features for m in sinusoid_mlp((8,)) if isinstance(m, torch.nn.Linear)] == [8, 1]
    with pytest.raises(ValueError, match="positive layer widths"):
        sinusoid_mlp((40, 0))
