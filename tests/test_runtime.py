import pytest
import torch

from tlcourse import runtime


def test_cpu_when_nothing_else(monkeypatch):
    monkeypatch.delenv("TLCOURSE_DEVICE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(runtime, "_mps_available", lambda: False)
    assert runtime.device() == torch.device("cpu")


def test_cuda_preferred_over_mps(monkeypatch):
    monkeypatch.delenv("TLCOURSE_DEVICE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(runtime, "_mps_available", lambda: True)
    assert runtime.device() == torch.device("cuda")


def test_mps_before_cpu(monkeypatch):
    monkeypatch.delenv("TLCOURSE_DEVICE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(runtime, "_mps_available", lambda: True)
    assert runtime.device() == torch.device("mps")


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
