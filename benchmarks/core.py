"""The benchmark runner: settings, seeds, timing, summaries and the markdown table.

A benchmark is declared once, as data (:class:`Benchmark`), so that the table, the tests and the
command line all read the same description. ``run(setting, seed)`` does the work of one seed and
returns ``{metric: value}``; the runner repeats it over seeds, times it, and summarises each metric
as mean ± sample standard deviation.
"""
from __future__ import annotations

import json
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"
TABLE = Path(__file__).resolve().parent / "RESULTS.md"
SETTINGS = ("smoke", "cpu", "full")


@dataclass(frozen=True)
class Metric:
    """One number a benchmark reports.

    ``anchor`` is the published value it is set beside (``None`` when the paper has none),
    ``scale`` multiplies the raw value for display (100 for accuracies kept as fractions), and
    ``unit`` is printed after it. An ``optional`` metric may be absent from a setting (say, a
    per-model row for a model that only the larger settings include); it is then left out of
    that setting's summary and table instead of being an error.
    """

    name: str
    label: str
    anchor: float | None = None
    scale: float = 1.0
    unit: str = ""
    digits: int = 1
    optional: bool = False


@dataclass(frozen=True)
class Target:
    """A pass/fail goal on the summary of one setting: ``check(means, stds) -> bool``."""

    text: str
    check: Callable[[Mapping[str, float], Mapping[str, float]], bool]
    settings: tuple[str, ...] = ("cpu", "full")


@dataclass(frozen=True)
class Benchmark:
    """Everything the runner needs about one benchmark.

    ``settings`` maps ``smoke``/``cpu``/``full`` to keyword dictionaries passed to ``run``;
    ``describe(setting)`` turns one of them into a sentence for the table (data, sizes, model,
    steps); ``anchor`` names the published source and says how its setting differs from ours.
    """

    name: str
    title: str
    settings: Mapping[str, Mapping]
    run: Callable[[Mapping, int], Mapping[str, float]]
    metrics: Sequence[Metric]
    anchor: str
    describe: Callable[[Mapping], str]
    targets: Sequence[Target] = field(default_factory=tuple)
    seeds: tuple[int, ...] = (0, 1, 2)


ORDER = ("dann_digits", "maml_sinusoid", "protonets_omniglot", "maml_omniglot", "leep_selection",
         "distill_digits", "dark_knowledge", "proxy_a_distance")


def _registry() -> dict[str, Benchmark]:
    """Collect ``BENCHMARKS`` from every module of this package, in :data:`ORDER`."""
    import importlib
    import pkgutil

    found: dict[str, Benchmark] = {}
    for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if info.name in ("core", "__main__"):
            continue
        module = importlib.import_module(f"{__package__}.{info.name}")
        for bench in getattr(module, "BENCHMARKS", ()):
            if bench.name in found:
                raise RuntimeError(f"two benchmarks are named {bench.name!r}")
            found[bench.name] = bench
    rank = {name: i for i, name in enumerate(ORDER)}
    return dict(sorted(found.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0])))


def benchmarks() -> dict[str, Benchmark]:
    """All declared benchmarks by name, in table order."""
    return _registry()


def summarise(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value); NaN values are an error."""
    if not values:
        raise ValueError("no values to summarise: run at least one seed")
    if any(math.isnan(v) for v in values):
        raise ValueError(f"a seed returned NaN: {list(values)}")
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return mean, std


def run_benchmark(bench: Benchmark, setting: str, seeds: Sequence[int] | None = None,
                  threads: int | None = 1, log: Callable[[str], None] = print) -> dict:
    """Run ``bench`` in ``setting`` over ``seeds``; return a JSON-ready record.

    ``threads`` fixes torch's intra-op threads (1 by default: on a shared 2-core machine two
    threads were 3-50x slower than one). ``None`` leaves torch's default (use it on a GPU box).
    """
    if setting not in bench.settings:
        raise ValueError(f"benchmark {bench.name!r} has no setting {setting!r}; "
                         f"choose one of {sorted(bench.settings)}")
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    seeds = tuple(bench.seeds if seeds is None else seeds)
    params = dict(bench.settings[setting])
    per_seed, seconds = [], []
    for seed in seeds:
        start = time.perf_counter()
        values = dict(bench.run(params, seed))
        seconds.append(time.perf_counter() - start)
        missing = [m.name for m in bench.metrics if m.name not in values and not m.optional]
        if missing:
            raise RuntimeError(f"benchmark {bench.name!r} did not return the metrics {missing}")
        per_seed.append({k: float(v) for k, v in values.items()})
        shown = ", ".join(f"{m.name}={values[m.name] * m.scale:.{m.digits}f}" for m in bench.metrics
                          if m.name in values)
        log(f"[{bench.name}/{setting}] seed {seed}: {shown} ({seconds[-1]:.1f} s)")
    summary = {}
    for m in bench.metrics:
        if not all(m.name in r for r in per_seed):
            continue  # an optional metric this setting does not produce
        mean, std = summarise([r[m.name] for r in per_seed])
        summary[m.name] = {"mean": mean, "std": std}
    means = {k: v["mean"] for k, v in summary.items()}
    stds = {k: v["std"] for k, v in summary.items()}
    targets = [{"text": t.text, "met": bool(t.check(means, stds))}
               for t in bench.targets if setting in t.settings]
    return {
        "name": bench.name, "setting": setting, "params": params, "seeds": list(seeds),
        "per_seed": per_seed, "summary": summary, "seconds": seconds, "targets": targets,
        "machine": _machine(threads),
        "date": time.strftime("%Y-%m-%d"),
    }


def _machine(threads: int | None) -> str:
    import torch

    if torch.cuda.is_available():
        where = torch.cuda.get_device_name(0)
    else:
        where = f"CPU ({os.cpu_count()} cores, {threads or torch.get_num_threads()} torch thread(s))"
    return f"{where}, torch {torch.__version__}, {platform.python_version()}"


def result_path(name: str, setting: str, results_dir: Path = RESULTS_DIR) -> Path:
    return Path(results_dir) / f"{name}-{setting}.json"


def save_result(record: dict, results_dir: Path = RESULTS_DIR) -> Path:
    path = result_path(record["name"], record["setting"], results_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    return path


def _fmt(value: float, metric: Metric) -> str:
    return f"{value * metric.scale:.{metric.digits}f}{metric.unit}"


def render_table(records: Sequence[dict], registry: Mapping[str, Benchmark] | None = None) -> str:
    """The markdown page: one section per benchmark, one row per metric and setting."""
    registry = benchmarks() if registry is None else registry
    lines = ["# Benchmarks", "",
             "Generated by `python -m benchmarks` (`make benchmarks`) from `benchmarks/results/*.json`;"
             " do not edit by hand. Each number is the mean ± sample standard deviation over the seeds"
             " listed; *seconds* is the wall time of one seed. Published numbers come from"
             " different settings (model size, data, steps): each section says how.", ""]
    by_name: dict[str, list[dict]] = {}
    for rec in records:
        if rec["setting"] != "smoke":
            by_name.setdefault(rec["name"], []).append(rec)
    for name, bench in registry.items():
        recs = sorted(by_name.get(name, []), key=lambda r: SETTINGS.index(r["setting"]))
        lines += [f"## {bench.title}", "", f"Published: {bench.anchor}", ""]
        if not recs:
            lines += ["Not run yet.", ""]
        if "cpu" not in bench.settings:
            lines += [f"No cpu setting: too slow for a CPU. Run it on a GPU with "
                      f"`make benchmarks SETTING=full BENCH={name}`.", ""]
        if not recs:
            continue
        for rec in recs:
            secs = rec["seconds"]
            lines += [f"**{rec['setting']} setting**: {bench.describe(rec['params'])} "
                      f"Seeds {', '.join(map(str, rec['seeds']))}; "
                      f"{statistics.fmean(secs):.0f} s per seed on {rec['machine']}, {rec['date']}.", "",
                      "| metric | ours | published |", "|---|---|---|"]
            for m in bench.metrics:
                if m.name not in rec["summary"]:
                    continue
                s = rec["summary"][m.name]
                anchor = "" if m.anchor is None else _fmt(m.anchor, m)
                lines.append(f"| {m.label} | {_fmt(s['mean'], m)} ± {_fmt(s['std'], m)} | {anchor} |")
            if rec["targets"]:
                lines += ["", "| target | met |", "|---|---|"]
                lines += [f"| {t['text']} | {'yes' if t['met'] else '**no**'} |" for t in rec["targets"]]
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def load_results(results_dir: Path = RESULTS_DIR) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(Path(results_dir).glob("*.json"))]
