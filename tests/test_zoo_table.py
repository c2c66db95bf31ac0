"""Tests of tlcourse.zoo_table: facts read from the libraries, FLOPs on tiny layers, latency."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from tlcourse import zoo_table


def test_parameter_count_of_tiny_known_models():
    assert zoo_table.parameter_count(nn.Linear(3, 2)) == 3 * 2 + 2
    assert zoo_table.parameter_count(nn.Conv2d(3, 4, 3, bias=False)) == 3 * 4 * 9
    bn = nn.BatchNorm1d(5)
    assert zoo_table.parameter_count(bn) == 10  # weight and bias; running statistics are buffers
    with torch.device("meta"):
        assert zoo_table.parameter_count(nn.Linear(1000, 1000)) == 1_001_000
    with pytest.raises(TypeError, match="nn.Module"):
        zoo_table.parameter_count("resnet50")


def test_torchvision_table_reads_metadata_not_memory():
    from torchvision.models import get_model, get_model_weights

    table = zoo_table.torchvision_weights_table(["resnet18", "mobilenet_v3_small"])
    assert list(table.index) == ["resnet18", "mobilenet_v3_small"]
    row = table.loc["resnet18"]
    assert row.parameters == get_model_weights("resnet18").DEFAULT.meta["num_params"]
    assert row.parameters == zoo_table.parameter_count(get_model("resnet18", weights=None))
    assert 0 < row.top1 < row.top5 < 100 and row.gmacs > 0 and row.crop == 224 and bool(row.default)
    every = zoo_table.torchvision_weights_table(["resnet50"], all_weights=True)
    assert set(every.weights) == {"IMAGENET1K_V1", "IMAGENET1K_V2"}
    assert every.default.sum() == 1
    with pytest.raises(ValueError, match="list_models"):
        zoo_table.torchvision_weights_table(["resnet51"])


def test_count_flops_counts_two_per_multiply_add():
    assert zoo_table.count_flops(nn.Linear(3, 2, bias=False), torch.zeros(4, 3)) == 2 * 4 * 3 * 2
    conv = nn.Conv2d(1, 1, 3, padding=1, bias=False)
    assert zoo_table.count_flops(conv, torch.zeros(1, 1, 5, 5)) == 2 * 25 * 9
    with torch.device("meta"):
        big = nn.Linear(4096, 4096)
        assert zoo_table.count_flops(big, torch.zeros(2, 4096)) == 2 * 2 * 4096 * 4096


def test_torchvision_ops_are_multiply_adds():
    from torchvision.models import get_model

    with torch.device("meta"):
        net = get_model("resnet18", weights=None)
        flops = zoo_table.count_flops(net.eval(), torch.zeros(1, 3, 224, 224))
    gmacs = zoo_table.torchvision_weights_table(["resnet18"]).loc["resnet18", "gmacs"]
    assert flops / 1e9 == pytest.approx(2 * gmacs, rel=0.02)


def test_transformers_table_and_reference_checkpoint():
    import transformers

    cfg = transformers.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=64, vocab_size=100)
    table = zoo_table.transformers_config_table({"tiny": cfg}, {"tiny": {"input_ids": (1, 8)}})
    row = table.loc["tiny"]
    assert row.architecture == "BertModel" and row.defaults_of == "custom"
    default = zoo_table.transformers_config_table({"d": transformers.DistilBertConfig()}, {"d": {"input_ids": (1, 8)}})
    assert default.loc["d", "defaults_of"] == "google/distilbert-base-uncased"
    assert zoo_table.config_reference_checkpoint(transformers.BertConfig) == "google-bert/bert-base-uncased"
    assert row.parameters == zoo_table.parameter_count(transformers.BertModel(cfg))
    assert row.gflops > 0
    with pytest.raises(ValueError, match="no input shapes"):
        zoo_table.transformers_config_table({"tiny": cfg}, {})
    assert zoo_table.config_reference_checkpoint(type("NoDoc", (), {})) is None


class _Recorder(nn.Module):
    """Records its mode, autograd state and thread count at every call."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 2)
        self.calls = []

    def forward(self, x):
        self.calls.append((x.shape[0], self.training, torch.is_grad_enabled(),
                           torch.is_inference_mode_enabled(), torch.get_num_threads()))
        return self.lin(x)


def test_measure_latency_warms_up_times_in_eval_and_restores_state():
    net = _Recorder().train()
    threads = torch.get_num_threads()
    table = zoo_table.measure_latency(net, lambda b, d: torch.zeros(b, 4, device=d),
                                      batch_sizes=(1, 3), warmup=2, repeats=4)
    assert list(table.batch_size) == [1, 3]
    assert (table.median_ms > 0).all() and (table.q1_ms <= table.median_ms).all()
    assert (table.median_ms <= table.q3_ms).all()
    assert table.ms_per_item.tolist() == pytest.approx((table.median_ms / table.batch_size).tolist())
    assert [c[0] for c in net.calls] == [1] * 6 + [3] * 6       # warm-up + repeats per batch size
    assert all(not training and not grad and inference and n == 1
               for _, training, grad, inference, n in net.calls)
    assert net.training and torch.get_num_threads() == threads   # mode and threads restored


def test_measure_latency_accepts_tuples_and_dicts():
    class Two(nn.Module):
        def forward(self, a, b=None):
            return a + (0 if b is None else b)

    zoo_table.measure_latency(Two(), lambda b, d: (torch.zeros(b), torch.ones(b)), batch_sizes=(2,), repeats=1)
    out = zoo_table.measure_latency(Two(), lambda b, d: {"a": torch.zeros(b)}, batch_sizes=(2,), warmup=0,
                                    repeats=1, threads=None)
    assert out.loc[0, "q1_ms"] == out.loc[0, "median_ms"] == out.loc[0, "q3_ms"]


@pytest.mark.parametrize("kwargs, words", [
    (dict(batch_sizes=(0,)), "batch sizes must be integers >= 1"),
    (dict(batch_sizes=(1.5,)), "batch sizes must be integers >= 1"),
    (dict(batch_sizes=(True,)), "batch sizes must be integers >= 1"),
    (dict(batch_sizes=()), "batch_sizes is empty"),
    (dict(repeats=0), "repeats must be an integer >= 1"),
    (dict(warmup=-1), "warmup must be an integer >= 0"),
    (dict(threads=0), "threads must be"),
])
def test_measure_latency_refuses_bad_arguments(kwargs, words):
    with pytest.raises(ValueError, match=words):
        zoo_table.measure_latency(nn.Linear(2, 2), lambda b, d: torch.zeros(b, 2, device=d), **kwargs)


def test_measure_latency_refuses_meta_models_and_non_modules():
    with torch.device("meta"):
        net = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="meta device"):
        zoo_table.measure_latency(net, lambda b, d: torch.zeros(b, 2, device=d))
    with pytest.raises(TypeError, match="nn.Module"):
        zoo_table.measure_latency(lambda x: x, lambda b, d: torch.zeros(b, 2))


def test_a_much_larger_model_is_slower():
    small = nn.Sequential(nn.Linear(64, 64))
    large = nn.Sequential(*[nn.Linear(512, 512) for _ in range(8)])  # about 500x the multiply-adds
    make = lambda width: (lambda b, d: torch.zeros(b, width, device=d))  # noqa: E731
    t_small = zoo_table.measure_latency(small, make(64), batch_sizes=(32,), repeats=7).median_ms[0]
    t_large = zoo_table.measure_latency(large, make(512), batch_sizes=(32,), repeats=7).median_ms[0]
    assert t_large > 3 * t_small
