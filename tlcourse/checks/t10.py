"""Checks for exercise T10 (the pretrained-model zoo): facts read from the installed torchvision
rather than from memory, a latency measurement that warms up and times in inference mode, and a
choice under a one-request latency budget.

Every ``collect`` runs in the student's kernel and returns plain data; every ``grade`` runs in the
trusted process. The reference facts are read there from the installed torchvision's weights
metadata (:func:`tlcourse.zoo_table.torchvision_weights_table`); nothing in the student's
namespace is trusted.

- **q1** (2 points) ``facts``: ``{model: {"parameters", "top1", "gmacs"}}`` for the models of
  :data:`FACT_MODELS`, their ``DEFAULT`` weights. Numbers from an older release (the
  ``IMAGENET1K_V1`` top-1 that most tables quote), top-5 for top-1, a fraction for a percentage
  and FLOPs (two per multiply-add) for ``_ops`` are recognised and named.
- **q2** (2 points) ``time_forward(model, x)``, the median wall-clock milliseconds of one
  forward pass. *collect* calls it on a probe module whose first :data:`COLD_CALLS` calls sleep
  :data:`COLD_MS` (a cold start: allocation, kernel selection) and later ones :data:`STEADY_MS`,
  and which records its mode and the autograd state at every call. *grade*: every call in eval
  mode without autograd, more than one call, and a result near :data:`STEADY_MS`; the usual
  mistakes (no warm-up with a mean, training mode with autograd, a sum of calls, seconds or CPU
  time instead of wall-clock milliseconds) are named.
- **q3** (1 point) ``answer_q3``: a choice, checked by letter.
"""
from __future__ import annotations

import functools
import numbers
import time

import numpy as np
import torch
from torch import nn

from tlcourse.grading import Question
from tlcourse.grading.answers import NOT_PLAIN as _NOT_PLAIN
from tlcourse.grading.choice import choice_question

FACT_MODELS = ("resnet50", "mobilenet_v2", "efficientnet_b1", "vit_b_16")
FIELDS = ("parameters", "top1", "gmacs")
COLD_CALLS, COLD_MS, STEADY_MS = 3, 200.0, 10.0
#: Keras's count_params() for the same names, which includes BatchNorm statistics (keras 3.15).
_KERAS_COUNTS = {"resnet50": 25_636_712, "mobilenet_v2": 3_538_984}


def _scalar(value):
    """A number (0-d tensors and NumPy scalars included) as a float; anything else described."""
    if isinstance(value, bool):
        return f"{_NOT_PLAIN}bool>"
    if isinstance(value, (torch.Tensor, np.ndarray)) and value.ndim == 0 and value.dtype != object:
        return float(value)
    if isinstance(value, (numbers.Real, np.generic)) and not isinstance(value, str):
        return float(value)
    kind = type(value).__name__
    return f"{_NOT_PLAIN}{'`...`, the placeholder' if kind == 'ellipsis' else kind}>"


def _shown(value) -> str:
    if isinstance(value, str) and value.startswith(_NOT_PLAIN):
        return value[len(_NOT_PLAIN):-1]
    return repr(value)


# ---------------------------------------------------------------- q1
@functools.lru_cache(maxsize=1)
def reference_facts() -> dict:
    """``{model: {"default": {...}, "weights": name, "v1": {...}}}`` read from the installed torchvision."""
    from tlcourse.zoo_table import torchvision_weights_table

    every = torchvision_weights_table(FACT_MODELS, all_weights=True)
    out = {}
    for name in FACT_MODELS:
        rows = every.loc[[name]]
        default = rows[rows.default].iloc[0]
        v1 = rows[rows.weights == "IMAGENET1K_V1"].iloc[0]
        out[name] = {"weights": default.weights, "top5": float(default.top5),
                     "default": {"parameters": int(default.parameters), "top1": float(default.top1),
                                 "gmacs": float(default.gmacs)},
                     "v1_top1": float(v1.top1)}
    return out


def _collect_facts(ns, seed):
    facts = ns["facts"]
    if not isinstance(facts, dict):
        return {"error": f"facts should be a dict {{model name: {{field: value}}}}, got {_shown(_scalar(facts))}"}
    out = {}
    for name, row in facts.items():
        if not isinstance(row, dict):
            out[str(name)] = f"{_NOT_PLAIN}{type(row).__name__}>"
            continue
        out[str(name)] = {str(k): _scalar(v) for k, v in row.items()}
    return {"facts": out}


def _grade_facts(answer, seed):
    assert isinstance(answer, dict), "the collected answer is malformed: run the notebook's cells in order"
    assert "error" not in answer, answer.get("error")
    facts = answer["facts"]
    missing = [m for m in FACT_MODELS if m not in facts]
    assert not missing, f"facts has no entry for {missing}; it needs one per model of {list(FACT_MODELS)}"
    ref = reference_facts()
    for name in FACT_MODELS:
        row = facts[name]
        assert isinstance(row, dict), f"facts[{name!r}] should be a dict of {list(FIELDS)}, got {_shown(row)}"
        lacking = [f for f in FIELDS if f not in row]
        assert not lacking, f"facts[{name!r}] lacks {lacking}; give {list(FIELDS)}"
        for field in FIELDS:
            value = row[field]
            assert not isinstance(value, str), f"facts[{name!r}][{field!r}] should be a number, got {_shown(value)}"
        want, r = ref[name]["default"], ref[name]
        got = {f: float(row[f]) for f in FIELDS}
        # parameters
        if got["parameters"] != want["parameters"]:
            if _KERAS_COUNTS.get(name) == got["parameters"]:
                raise AssertionError(
                    f"facts[{name!r}]['parameters'] = {got['parameters']:,.0f} is Keras's count_params(), "
                    "which adds BatchNorm statistics (and, for ResNet50, convolution biases); give torchvision's "
                    "meta['num_params']")
            raise AssertionError(
                f"facts[{name!r}]['parameters'] = {got['parameters']:,.0f}, but the installed torchvision records "
                f"{want['parameters']:,} (get_model_weights({name!r}).DEFAULT.meta['num_params'])")
        # top-1
        if abs(got["top1"] - want["top1"]) > 0.05:
            if abs(got["top1"] - r["v1_top1"]) <= 0.05 and r["weights"] != "IMAGENET1K_V1":
                raise AssertionError(
                    f"facts[{name!r}]['top1'] = {got['top1']:g} is the IMAGENET1K_V1 weights' figure, the "
                    f"number older tables quote; the installed torchvision's DEFAULT is {r['weights']}: read "
                    "get_model_weights(name).DEFAULT.meta instead of a number from memory")
            if abs(got["top1"] - r["top5"]) <= 0.05:
                raise AssertionError(f"facts[{name!r}]['top1'] = {got['top1']:g} is the top-5 accuracy (acc@5); "
                                     "give acc@1")
            if abs(100 * got["top1"] - want["top1"]) <= 0.05:
                raise AssertionError(f"facts[{name!r}]['top1'] = {got['top1']:g} is a fraction; torchvision "
                                     "records per cent, give it as recorded")
            raise AssertionError(
                f"facts[{name!r}]['top1'] = {got['top1']:g}, but the installed torchvision records "
                f"{want['top1']:g} for {name}'s DEFAULT weights ({r['weights']}), meta['_metrics']['ImageNet-1K']['acc@1']")
        # multiply-adds
        if abs(got["gmacs"] - want["gmacs"]) > max(0.005, 0.01 * want["gmacs"]):
            if abs(got["gmacs"] - 2 * want["gmacs"]) <= 0.02 * want["gmacs"]:
                raise AssertionError(
                    f"facts[{name!r}]['gmacs'] = {got['gmacs']:g} is twice the recorded figure: that is FLOPs "
                    "counting a multiply-add as two operations (FlopCounterMode); torchvision's meta['_ops'] "
                    "counts multiply-adds")
            raise AssertionError(
                f"facts[{name!r}]['gmacs'] = {got['gmacs']:g}, but the installed torchvision records "
                f"{want['gmacs']:g} GMACs (meta['_ops'])")


# ---------------------------------------------------------------- q2
class ColdStartProbe(nn.Module):
    """A stand-in model: slow first calls like a real cold start, then steady; records every call.

    Each call appends ``[training, grad_enabled, inference_mode]`` to :attr:`calls` and sleeps
    :data:`COLD_MS` for the first :data:`COLD_CALLS` calls, :data:`STEADY_MS` afterwards. Sleeping
    uses wall-clock time but no CPU time, so a CPU-time clock sees almost nothing.
    """

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1))
        self.calls: list[list[bool]] = []

    def forward(self, x):
        self.calls.append([self.training, torch.is_grad_enabled(), torch.is_inference_mode_enabled()])
        time.sleep((COLD_MS if len(self.calls) <= COLD_CALLS else STEADY_MS) / 1000)
        return x * self.weight


def _collect_timing(ns, seed):
    probe = ColdStartProbe().train()          # a fresh model is often in training mode
    x = torch.zeros(2, 4)
    try:
        value = ns["time_forward"](probe, x)
    except NotImplementedError:
        return {"error": "time_forward raises NotImplementedError: replace the placeholder with your code"}
    except Exception as exc:  # noqa: BLE001 - reported to the student
        return {"error": f"time_forward(model, x) raised {type(exc).__name__}: {str(exc)[:200]}"}
    return {"value": _scalar(value), "calls": probe.calls}


def _grade_timing(answer, seed):
    assert isinstance(answer, dict), "the collected answer is malformed: run the notebook's cells in order"
    assert "error" not in answer, answer.get("error")
    value, calls = answer["value"], answer["calls"]
    assert not isinstance(value, str), f"time_forward should return a number of milliseconds, got {_shown(value)}"
    assert calls, "time_forward never called the model"
    if any(training for training, _, _ in calls):
        raise AssertionError(
            "the model ran in training mode: call model.eval() before timing (dropout and BatchNorm behave "
            "differently in training mode, and that is not the deployed model)")
    if any(grad for _, grad, _ in calls):
        raise AssertionError(
            "the model ran with autograd on: time it under torch.inference_mode() (or torch.no_grad()); "
            "recording the graph for a backward pass costs time and memory a deployed model never spends")
    assert len(calls) > 1, "time_forward called the model once: warm up, then repeat the timed call and take the median"
    cold, steady = COLD_MS, STEADY_MS
    if value < 0.5 * steady:
        raise AssertionError(
            f"time_forward returned {value:g}, but a warm call of this model takes about {steady:g} ms of "
            "wall-clock time: return milliseconds (not seconds), measured with a wall-clock timer "
            "(time.perf_counter), not CPU time (time.process_time), which misses time spent waiting")
    if value <= 2.5 * steady:
        return
    raise AssertionError(
        f"time_forward returned {value:g} ms, but a warm call of this model takes about {steady:g} ms: its first "
        f"{COLD_CALLS} calls are slow ({cold:g} ms each) like a real cold start. Make a few untimed warm-up calls "
        "first, then return the median time of ONE timed call: not a mean that includes the cold calls, nor the "
        "total of several calls")


# ---------------------------------------------------------------- q3
Q3_CHOICES = {
    "a": "Model A: its per-image cost at batch 32 (15 ms) fits the budget and it is the more accurate one.",
    "b": "Model B: a request arrives alone and is served at batch 1, where only B (35 ms) fits the 40 ms budget.",
    "c": "Model A, because it has fewer multiply-adds than B.",
    "d": "Neither: the budget must be checked on a server GPU first.",
}
_Q3_ANSWER = "b"
_Q3_FEEDBACK = {
    "a": "per-image cost at batch 32 is throughput. How long does ONE photo that arrives alone take with model A?",
    "c": "operation counts predict CPU latency only loosely (step 3 of the chapter); you have measured latency, use it.",
    "d": "the budget applies to the phone; a measurement on other hardware tells you little about it.",
}


QUESTIONS = [
    Question("q1", points=2, names=("facts",), collect=_collect_facts, grade=_grade_facts,
             hint="w = get_model_weights(name).DEFAULT; w.meta['num_params'], "
                  "w.meta['_metrics']['ImageNet-1K']['acc@1'], w.meta['_ops']"),
    Question("q2", points=2, names=("time_forward",), collect=_collect_timing, grade=_grade_timing,
             hint="model.eval(); with torch.inference_mode(): a few untimed calls, then time.perf_counter() "
                  "around each of several calls; return 1000 * statistics.median(times)"),
    choice_question("q3", "answer_q3", choices=Q3_CHOICES, answer=_Q3_ANSWER, feedback=_Q3_FEEDBACK, points=1,
                    hint="Which batch size does a single request run at? Step 4 of the chapter."),
]
