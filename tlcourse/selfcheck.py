"""``tlcourse selfcheck``: what a reader runs first on their own machine.

It reports the device that :func:`tlcourse.device` picks, the library versions, where data is
looked for, and then trains a tiny network for a few steps on that device and on the CPU, in full
precision and in mixed precision, and checks that the results agree. On a machine without a GPU the
"device" run is the CPU run and the mixed-precision run uses bfloat16 autocast, so the same code
path that a GPU would take is still exercised.
"""
from __future__ import annotations

import importlib
import platform
import sys

import torch
from torch import nn

from .runtime import device as pick_device

__all__ = ["selfcheck", "training_step_agreement", "main"]

_LIBS = ("numpy", "torch", "torchvision", "sklearn", "matplotlib", "transformers", "tensorflow", "keras")


def _version(name: str) -> str:
    try:
        return getattr(importlib.import_module(name), "__version__", "?")
    except Exception:  # a broken optional install should not stop the report
        return "not installed"


def _tiny_run(dev: torch.device, amp: bool, steps: int = 5, seed: int = 0) -> tuple[list[float], torch.Tensor]:
    from .train import fit, make_loader

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(256, 20, generator=g)
    y = (x[:, :2].sum(1) > 0).long()
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 2)).to(dev)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    losses = []
    for _ in range(steps):
        history = fit(net, make_loader(x, y, batch_size=256), epochs=1, optimizer=opt, amp=amp, progress=False)
        losses.append(history.rows[-1]["train_loss"])
    return losses, torch.cat([p.detach().float().cpu().flatten() for p in net.parameters()])


def training_step_agreement(dev: torch.device, amp: bool = False) -> float:
    """Largest absolute difference between the weights after 5 SGD steps on ``dev`` and on the CPU.

    With ``amp=True`` the ``dev`` run uses mixed precision (float16 on CUDA, bfloat16 elsewhere)
    and the CPU reference stays in float32, so the difference measures mixed-precision error.
    """
    _, ref = _tiny_run(torch.device("cpu"), amp=False)
    _, other = _tiny_run(dev, amp=amp)
    return float((ref - other).abs().max())


def selfcheck(prefer: str | None = None) -> dict:
    """Run the checks and return a report dict; ``report["ok"]`` is True when all passed."""
    dev = pick_device(prefer)
    report: dict = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "device": str(dev),
        "cuda_available": torch.cuda.is_available(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch_threads": torch.get_num_threads(),
        "versions": {name: _version(name) for name in _LIBS},
    }
    try:
        from .data import data_dirs

        report["data_dirs"] = [str(p) for p in data_dirs()]
    except Exception as err:  # the report must still come out when the data layer is misconfigured
        report["data_dirs"] = f"error: {err}"
    # float32 on another device differs from the CPU by rounding only (TF32 is off by default for
    # matmuls in PyTorch); mixed precision keeps ~3 significant digits.
    report["fp32_max_diff"] = training_step_agreement(dev, amp=False)
    report["amp_max_diff"] = training_step_agreement(dev, amp=True)
    report["fp32_ok"] = report["fp32_max_diff"] < 1e-4
    report["amp_ok"] = report["amp_max_diff"] < 5e-2
    report["ok"] = report["fp32_ok"] and report["amp_ok"]
    return report


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="tlcourse selfcheck", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None, help="force a device (cpu, cuda, mps)")
    args = parser.parse_args(argv)
    r = selfcheck(args.device)
    print(f"device chosen     : {r['device']}" + (f" ({r['gpu']})" if r["gpu"] else ""))
    print(f"python / platform : {r['python']} / {r['platform']}")
    print(f"torch threads     : {r['torch_threads']}")
    for name, version in r["versions"].items():
        print(f"  {name:<15} {version}")
    print(f"data searched in  : {r['data_dirs']}")
    amp_kind = "float16" if r["device"].startswith("cuda") else "bfloat16"
    print(f"train step float32 on {r['device']} vs CPU: max |dw| = {r['fp32_max_diff']:.2e} "
          f"{'ok' if r['fp32_ok'] else 'MISMATCH'}")
    print(f"train step {amp_kind} autocast vs CPU float32: max |dw| = {r['amp_max_diff']:.2e} "
          f"{'ok' if r['amp_ok'] else 'MISMATCH'}")
    print("self-check passed" if r["ok"] else "self-check FAILED: see the lines marked MISMATCH")
    return 0 if r["ok"] else 1
