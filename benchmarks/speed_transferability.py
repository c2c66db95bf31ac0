"""Side-by-side timing of LogME and LEEP: the package's previous implementation against the current one.

LogME used to take a thin SVD of the (n, D) feature matrix; it now eigendecomposes the smaller Gram
matrix (``f^T f`` when n >= D). LEEP used to copy and re-check its input several times. The previous
version is loaded from ``git show 49c52c6:tlcourse/transferability.py``, the last commit before
the change (``--rev`` picks another), so the comparison is with the code as it was, not a re-creation of it.

One thread (BLAS limited to one thread by ``threadpoolctl``, as ``OMP_NUM_THREADS=1`` would;
``torch.set_num_threads(1)``), 5,000 x 1,280 random features and
10 classes for LogME, 5,000 x 1,000 source softmax outputs for LEEP; best of ``--repeats`` runs.
Writes ``benchmarks/speed_transferability.json`` (kept in git). Not registered as a benchmark (no ``BENCHMARKS``): run it with
``python -m benchmarks.speed_transferability`` or ``python benchmarks/speed_transferability.py``.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from tlcourse import transferability as current

ROOT = Path(__file__).resolve().parents[1]
PREVIOUS = "49c52c6"  # the last commit with the SVD-based LogME and the copying LEEP


def load_previous(rev: str = PREVIOUS):
    """``tlcourse/transferability.py`` as of git revision ``rev``, imported as a throwaway module."""
    source = subprocess.run(["git", "show", f"{rev}:tlcourse/transferability.py"], cwd=ROOT,
                            check=True, capture_output=True, text=True).stdout
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "transferability_previous.py"
        path.write_text(source)
        spec = importlib.util.spec_from_file_location("transferability_previous", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up while it executes
        spec.loader.exec_module(module)
    return module


def best_time(fn, *args, repeats: int) -> tuple[float, float]:
    """Smallest wall-clock time of ``repeats`` calls, in seconds, and the value returned."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        value = fn(*args)
        times.append(time.perf_counter() - start)
    return min(times), value


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", default=PREVIOUS, help="git revision holding the previous version")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--dim", type=int, default=1280)
    parser.add_argument("--source-classes", type=int, default=1000)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "speed_transferability.json",
                        help="where the timings are written as JSON ('-' for nowhere)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        results = _compare(load_previous(args.rev), args)
    if str(args.out) != "-":
        record = {"setting": {"threads": 1, "n": args.n, "dim": args.dim, "source_classes": args.source_classes,
                              "classes": args.classes, "repeats": args.repeats, "previous": args.rev},
                  "results": results}
        args.out.write_text(json.dumps(record, indent=2) + "\n")
        print(f"wrote {args.out}")
    return results


def _compare(previous, args) -> dict:

    rng = np.random.default_rng(0)
    features = rng.normal(size=(args.n, args.dim))
    labels = rng.integers(0, args.classes, size=args.n)
    logits = rng.normal(size=(args.n, args.source_classes)) * 2.0
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    cases = {"logme": (features, labels), "leep": (probs, labels)}

    results = {}
    print(f"one thread; n={args.n}, D={args.dim}, Z={args.source_classes}, K={args.classes}; "
          f"best of {args.repeats}; previous = git {args.rev}")
    print(f"{'score':6} {'previous s':>11} {'current s':>10} {'ratio':>6}  |difference|")
    for name, inputs in cases.items():
        t_old, v_old = best_time(getattr(previous, name), *inputs, repeats=args.repeats)
        t_new, v_new = best_time(getattr(current, name), *inputs, repeats=args.repeats)
        results[name] = {"previous_s": t_old, "current_s": t_new, "ratio": t_new / t_old,
                         "abs_difference": abs(v_new - v_old)}
        print(f"{name:6} {t_old:11.4f} {t_new:10.4f} {t_new / t_old:6.2f}  {abs(v_new - v_old):.1e}")
    return results


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
