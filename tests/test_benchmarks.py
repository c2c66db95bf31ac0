"""The benchmark runner, and every benchmark's ``smoke`` setting (seconds each), so none rots."""
from __future__ import annotations

import math

import pytest

from benchmarks import core
from benchmarks.core import Benchmark, Metric, Target, render_table, run_benchmark, summarise


def _toy(setting, seed):
    return {"acc": 0.5 + 0.1 * seed, "loss": setting["scale"] * seed}


TOY = Benchmark(
    name="toy", title="Toy", settings={"smoke": {"scale": 1.0}, "cpu": {"scale": 2.0}}, run=_toy,
    metrics=(Metric("acc", "accuracy (%)", anchor=0.9, scale=100), Metric("loss", "loss", digits=2)),
    anchor="Nobody (2026), a made-up number.", describe=lambda p: f"Scale {p['scale']}.",
    targets=(Target("accuracy at least 55 %", lambda m, s: m["acc"] >= 0.55),),
)


def test_summarise_mean_and_sample_std():
    assert summarise([1.0, 3.0]) == (2.0, math.sqrt(2.0))
    assert summarise([4.0]) == (4.0, 0.0)
    with pytest.raises(ValueError, match="NaN"):
        summarise([1.0, float("nan")])
    with pytest.raises(ValueError, match="at least one seed"):
        summarise([])


def test_run_benchmark_record_and_table():
    rec = run_benchmark(TOY, "cpu", seeds=[0, 1, 2], log=lambda _: None)
    assert rec["per_seed"][2] == {"acc": 0.7, "loss": 4.0}
    assert rec["summary"]["acc"]["mean"] == pytest.approx(0.6)
    assert rec["summary"]["loss"]["std"] == pytest.approx(2.0)
    assert rec["targets"] == [{"text": "accuracy at least 55 %", "met": True}]
    page = render_table([rec], {"toy": TOY})
    assert "| accuracy (%) | 60.0 ± 10.0 | 90.0 |" in page
    assert "| loss | 2.00 ± 2.00 |  |" in page
    assert "Seeds 0, 1, 2" in page and "Scale 2.0." in page


def test_run_benchmark_rejects_unknown_setting_and_missing_metric():
    with pytest.raises(ValueError, match="no setting 'full'"):
        run_benchmark(TOY, "full", seeds=[0])
    broken = Benchmark(**{**TOY.__dict__, "run": lambda s, seed: {"acc": 1.0}})
    with pytest.raises(RuntimeError, match=r"\['loss'\]"):
        run_benchmark(broken, "smoke", seeds=[0], log=lambda _: None)


def test_unrun_benchmark_is_listed_as_not_run():
    assert "Not run yet." in render_table([], {"toy": TOY})


def test_committed_table_matches_results():
    """RESULTS.md is generated: it must equal what the saved JSON renders to."""
    assert core.TABLE.read_text() == render_table(core.load_results())


@pytest.mark.slow
@pytest.mark.parametrize("name", list(core.benchmarks()))
def test_smoke_setting_runs(name):
    bench = core.benchmarks()[name]
    assert "full" in bench.settings, f"{name} has no full (GPU) setting"
    for params in bench.settings.values():
        assert bench.describe(params).endswith("."), "describe() should return a sentence"
    rec = run_benchmark(bench, "smoke", seeds=[0], log=lambda _: None)
    for m in bench.metrics:
        if m.optional and m.name not in rec["summary"]:
            continue
        assert math.isfinite(rec["summary"][m.name]["mean"]), m.name
    assert any(m.name in rec["summary"] for m in bench.metrics if m.optional) or \
        not any(m.optional for m in bench.metrics), "no optional metric was produced at all"


def test_a_benchmark_without_a_cpu_setting_says_how_to_run_it(capsys):
    from benchmarks.__main__ import main

    gpu_only = Benchmark(**{**TOY.__dict__, "name": "gpu_only", "settings": {"smoke": {"scale": 1.0},
                                                                            "full": {"scale": 3.0}}})
    assert "No cpu setting" in render_table([], {"gpu_only": gpu_only})
    assert "No cpu setting" not in render_table([], {"toy": TOY})
    assert "cpu" not in core.benchmarks()["maml_omniglot"].settings
    with pytest.raises(SystemExit):
        main(["maml_omniglot", "--setting", "cpu"])
    assert "maml_omniglot has no 'cpu' setting" in capsys.readouterr().err


def test_optional_metrics_may_be_absent_but_required_ones_may_not():
    optional = Benchmark(**{**TOY.__dict__, "metrics": (*TOY.metrics, Metric("extra", "extra", optional=True))})
    rec = run_benchmark(optional, "cpu", seeds=[0, 1], log=lambda _: None)
    assert "extra" not in rec["summary"] and "| extra |" not in render_table([rec], {"toy": optional})
    present = Benchmark(**{**optional.__dict__, "run": lambda s, seed: {**_toy(s, seed), "extra": 2.0}})
    rec = run_benchmark(present, "cpu", seeds=[0, 1], log=lambda _: None)
    assert "| extra | 2.0 ± 0.0 |  |" in render_table([rec], {"toy": present})
