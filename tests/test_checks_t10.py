"""Tests of the T10 checks: each question accepts correct answers written in more than one way and
rejects the obvious wrong approach (numbers from memory or an older release, a latency timed cold
or in training mode) with a message that names it."""
from __future__ import annotations

import statistics
import time

import numpy as np
import pytest
import torch

from tlcourse.checks import t10
from tlcourse.zoo_table import measure_latency, torchvision_weights_table
from tests.check_helpers import question_helpers

SEED = 1234


# ---------------------------------------------------------------- answers, right and wrong
def facts_from_meta():
    from torchvision.models import get_model_weights

    out = {}
    for name in t10.FACT_MODELS:
        meta = get_model_weights(name).DEFAULT.meta
        out[name] = {"parameters": meta["num_params"], "top1": meta["_metrics"]["ImageNet-1K"]["acc@1"],
                     "gmacs": meta["_ops"]}
    return out


def time_forward(model, x, warmup=3, repeats=7):
    """The solution's way: eval, inference_mode, warm-up, median of perf_counter."""
    model.eval()
    times = []
    with torch.inference_mode():
        for _ in range(warmup):
            model(x)
        for _ in range(repeats):
            start = time.perf_counter()
            model(x)
            times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)


def time_forward_package(model, x):
    """Another way: the package's measurement, as a NumPy float."""
    return np.float64(measure_latency(model, lambda b, d: x, batch_sizes=(len(x),)).median_ms[0])


def time_forward_no_grad_many(model, x):
    """Another way: torch.no_grad, no explicit warm-up but many repeats and a median (robust)."""
    model.eval()
    with torch.no_grad():
        times = []
        for _ in range(15):
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
    return torch.tensor(1000 * statistics.median(times))


def cold_mean(model, x):
    """No warm-up, the mean of five calls: the cold start is averaged in."""
    model.eval()
    with torch.inference_mode():
        start = time.perf_counter()
        for _ in range(5):
            model(x)
    return 1000 * (time.perf_counter() - start) / 5


def training_mode_autograd(model, x):
    """The usual slip: a freshly built model, timed as it is (training mode, autograd on)."""
    for _ in range(3):
        model(x)
    start = time.perf_counter()
    model(x)
    return 1000 * (time.perf_counter() - start)


def eval_but_autograd(model, x):
    model.eval()
    for _ in range(3):
        model(x)
    start = time.perf_counter()
    model(x)
    return 1000 * (time.perf_counter() - start)


def summed(model, x):
    model.eval()
    with torch.inference_mode():
        for _ in range(3):
            model(x)
        start = time.perf_counter()
        for _ in range(5):
            model(x)
    return 1000 * (time.perf_counter() - start)


def in_seconds(model, x):
    return time_forward(model, x) / 1000


def cpu_time(model, x):
    model.eval()
    with torch.inference_mode():
        for _ in range(3):
            model(x)
        times = []
        for _ in range(5):
            start = time.process_time()
            model(x)
            times.append(1000 * (time.process_time() - start))
    return statistics.median(times)


def one_call(model, x):
    model.eval()
    with torch.inference_mode():
        start = time.perf_counter()
        model(x)
    return 1000 * (time.perf_counter() - start)


@pytest.fixture(scope="module")
def namespace():
    return dict(facts=facts_from_meta(), time_forward=time_forward, answer_q3="b")


grade, passes, fails = question_helpers(t10, SEED)


def with_fact(facts, name, **fields):
    return {**facts, name: {**facts[name], **fields}}


def test_points_come_from_the_questions():
    assert [(q.name, q.points) for q in t10.QUESTIONS] == [("q1", 2), ("q2", 2), ("q3", 1)]


# ---------------------------------------------------------------- q1
def test_q1_accepts_the_facts_read_several_ways(namespace):
    passes(namespace, "q1")
    table = torchvision_weights_table(t10.FACT_MODELS)
    from_table = {n: {"parameters": np.int64(r.parameters), "top1": np.float32(r.top1),
                      "gmacs": torch.tensor(r.gmacs)} for n, r in table.iterrows()}
    passes(namespace, "q1", facts=from_table)
    rounded = {n: {**r, "top1": round(r["top1"], 1), "gmacs": round(r["gmacs"], 3)}
               for n, r in namespace["facts"].items()}
    passes(namespace, "q1", facts={**rounded, "extra_model": {"parameters": 1}})


def test_q1_reference_reads_the_installed_defaults():
    ref = t10.reference_facts()
    assert ref["resnet50"]["weights"] == "IMAGENET1K_V2" and ref["resnet50"]["v1_top1"] == pytest.approx(76.13)


def test_q1_rejects_numbers_from_an_older_release(namespace):
    """The seed-style error: ResNet-50 'is' 76.1 % top-1 (the V1 weights, the paper-era number)."""
    facts = namespace["facts"]
    fails(namespace, "q1", "IMAGENET1K_V1", facts=with_fact(facts, "resnet50", top1=76.13))
    fails(namespace, "q1", "IMAGENET1K_V1", facts=with_fact(facts, "mobilenet_v2", top1=71.878))
    fails(namespace, "q1", "records", facts=with_fact(facts, "vit_b_16", top1=77.9))  # the ViT paper's number


def test_q1_names_the_other_usual_mistakes(namespace):
    facts = namespace["facts"]
    r50 = facts["resnet50"]
    fails(namespace, "q1", "top-5", facts=with_fact(facts, "resnet50", top1=95.434))
    fails(namespace, "q1", "fraction", facts=with_fact(facts, "resnet50", top1=r50["top1"] / 100))
    fails(namespace, "q1", "two operations", facts=with_fact(facts, "resnet50", gmacs=2 * r50["gmacs"]))
    fails(namespace, "q1", "Keras's count_params", facts=with_fact(facts, "resnet50", parameters=25_636_712))
    fails(namespace, "q1", "num_params", facts=with_fact(facts, "resnet50", parameters=25_600_000))
    fails(namespace, "q1", "meta['_ops']", facts=with_fact(facts, "vit_b_16", gmacs=17.0))


def test_q1_rejects_malformed_answers(namespace):
    facts = namespace["facts"]
    fails(namespace, "q1", "no entry for", facts={k: v for k, v in facts.items() if k != "vit_b_16"})
    fails(namespace, "q1", "lacks ['gmacs']", facts=with_fact(facts, "resnet50") | {
        "resnet50": {"parameters": facts["resnet50"]["parameters"], "top1": facts["resnet50"]["top1"]}})
    fails(namespace, "q1", "should be a number", facts=with_fact(facts, "resnet50", top1="80.9"))
    fails(namespace, "q1", "should be a dict", facts=[1, 2])
    fails(namespace, "q1", "should be a dict", facts=...)


# ---------------------------------------------------------------- q2
@pytest.mark.parametrize("fn", [time_forward, time_forward_package, time_forward_no_grad_many])
def test_q2_accepts_correct_measurements_written_several_ways(namespace, fn):
    passes(namespace, "q2", time_forward=fn)


@pytest.mark.parametrize("wrong, words", [
    (cold_mean, "not a mean that includes the cold calls"),
    (training_mode_autograd, "training mode"),
    (eval_but_autograd, "autograd on"),
    (summed, "total of several calls"),
    (in_seconds, "not seconds"),
    (cpu_time, "not CPU time"),
    (one_call, "called the model once"),
])
def test_q2_names_each_classic_mistake(namespace, wrong, words):
    fails(namespace, "q2", words, time_forward=wrong)


def test_q2_reports_errors_and_placeholders(namespace):
    def placeholder(model, x):
        raise NotImplementedError

    fails(namespace, "q2", "NotImplementedError", time_forward=placeholder)
    fails(namespace, "q2", "raised ValueError", time_forward=lambda m, x: int("x"))
    fails(namespace, "q2", "number of milliseconds", time_forward=lambda m, x: [m(x)])


def test_the_probe_is_slow_first_then_steady():
    probe = t10.ColdStartProbe()
    x = torch.zeros(1, 2)
    times = []
    for _ in range(t10.COLD_CALLS + 2):
        start = time.perf_counter()
        probe(x)
        times.append(1000 * (time.perf_counter() - start))
    assert min(times[:t10.COLD_CALLS]) >= t10.COLD_MS and max(times[t10.COLD_CALLS:]) < t10.COLD_MS / 2
    assert probe.calls[0] == [True, True, False]


# ---------------------------------------------------------------- q3
@pytest.mark.parametrize("answer", ["b", "B", " (b) "])
def test_q3_accepts_the_right_choice_in_any_spelling(namespace, answer):
    passes(namespace, "q3", answer_q3=answer)


def test_q3_rejects_the_batch_32_figure_and_teaches(namespace):
    result = fails(namespace, "q3", "throughput", answer_q3="a")  # per-image cost at batch 32 vs a batch-1 budget
    assert t10.Q3_CHOICES["b"] not in result.message and "'b'" not in result.message
    fails(namespace, "q3", "not 'c'", answer_q3="c")
    fails(namespace, "q3", "not 'd'", answer_q3="d")
    fails(namespace, "q3", "one letter as a string", answer_q3=...)
