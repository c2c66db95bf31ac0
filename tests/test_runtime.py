import pytest
import torch

from tlcourse import runtime


@pytest.mark.parametrize("cuda, mps, expected", [
    (False, False, "cpu"),   # nothing else: the CPU
    (True, True, "cuda"),    # CUDA is preferred over MPS
    (False, True, "mps"),    # MPS before the CPU
])
def test_device_preference_order(monkeypatch, cuda, mps, expected):
    monkeypatch.delenv("TLCOURSE_DEVICE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(runtime, "_mps_available", lambda: mps)
    assert runtime.device() == torch.device(expected)


def test_forced_device_that_is_missing_fails_loudly(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="not available"):
        runtime.device("cuda")
    monkeypatch.setenv("TLCOURSE_DEVICE", "cuda")
    with pytest.raises(RuntimeError, match="TLCOURSE_DEVICE"):
        runtime.device()


def test_unknown_device_name():
    with pytest.raises(ValueError, match="unknown device"):
        runtime.device("xla")


def test_seed_everything_repeats_numpy_torch_python():
    import random

    import numpy as np

    def draw():
        return random.random(), np.random.rand(), torch.rand(1).item()

    runtime.seed_everything(3)
    a = draw()
    runtime.seed_everything(3)
    assert draw() == a
    runtime.seed_everything(4)
    assert draw() != a


@pytest.mark.parametrize("bad", [-1, 1.5, "0", True])
def test_seed_must_be_a_natural_number(bad):
    with pytest.raises(ValueError, match="seed"):
        runtime.seed_everything(bad)
