import torch

from tlcourse import cli, runtime, selfcheck


def test_selfcheck_on_cpu_agrees_and_exercises_mixed_precision(monkeypatch):
    monkeypatch.delenv("TLCOURSE_DEVICE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(runtime, "_mps_available", lambda: False)
    report = selfcheck.selfcheck()
    assert report["device"] == "cpu" and report["ok"]
    assert report["fp32_max_diff"] == 0.0  # the same device and precision: bit-identical
    assert 0 < report["amp_max_diff"] < 5e-2  # bfloat16 really ran, and stayed close
    assert report["versions"]["torch"] == torch.__version__
    assert report["data_dirs"] and isinstance(report["data_dirs"], list)


def test_selfcheck_command_prints_a_verdict(capsys):
    assert cli.main(["selfcheck", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "device chosen     : cpu" in out and "self-check passed" in out


def test_cli_rejects_unknown_commands(capsys):
    assert cli.main(["frobnicate"]) == 2
    assert "unknown command" in capsys.readouterr().err
