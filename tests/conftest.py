"""Shared test setup: seeded randomness, the offline data folder and a throw-away cache."""
import os

import torch._dynamo  # noqa: F401  (load before TensorFlow: Triton after TF segfaults here)
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_limits

# Tests read the shared offline data beside the repository unless the caller points elsewhere.
os.environ.setdefault("TLCOURSE_DATA", str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))
# Unit tests get a throw-away cache (below); notebook tests run like the book build and use the
# cache the caller chose (the Makefile's _build/cache), remembered here.
os.environ.setdefault("TLCOURSE_BOOK_CACHE", os.environ.get("TLCOURSE_CACHE", ""))


@pytest.fixture(autouse=True, scope="session")
def _tlcourse_cache(tmp_path_factory):
    """Point TLCOURSE_CACHE at a per-session temporary folder so tests never write into ~/.cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TLCOURSE_CACHE", str(tmp_path_factory.mktemp("tlcourse-cache")))
        yield


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """One torch thread and one BLAS/OpenMP thread in every test. The problems are tiny, and on a
    2-core machine shared with another test worker two threads oversubscribe it: the digit CNN's
    training took 20x longer (68 s instead of 3.6 s) and MAML-sized problems 3-50x longer."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        yield
    torch.set_num_threads(threads)
