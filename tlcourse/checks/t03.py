"""Checks for exercise T03 (the benefits of transfer on a learning curve): the area under a curve and
the time to a threshold written by hand, the benefits read off a colleague's logged runs without
the two usual traps, and one prediction about the asymptote with more target data.

Every ``collect`` runs in the student's kernel and returns plain data; every ``grade`` runs in the
trusted process and recomputes what it compares with from the seed, with :mod:`tlcourse.curves`,
or from :data:`LOGGED_RUNS`, the log kept in this module (never from the student's namespace).

- **q1** (2 points) ``auc(steps, accuracy)`` and ``time_to_threshold(steps, accuracy, threshold)``.
  *collect*: both functions on four curves drawn from the seed, recorded at unevenly spaced steps
  (as a logger that scores more often early on does), with thresholds one of which is never
  reached. *grade*: ``auc`` must equal the trapezoidal area divided by the span
  (:func:`tlcourse.curves.area_under_curve`) and ``time_to_threshold`` the first recorded step
  with ``accuracy >= threshold``, ``inf`` when none (:func:`tlcourse.curves.time_to_threshold`).
  Named mistakes: the plain mean of the points (wrong with uneven steps), the area not divided by
  the span, the index returned instead of the step, the last step below the threshold, ``None``
  or ``-1`` or the final step for "never".
- **q2** (2 points) ``auc_gap`` and ``asymptotic_gap`` (pretrained minus scratch, fractions) from
  :func:`logged_runs`: the validation curves, compared over the common budget (the pretrained run
  was logged for twice as many steps as the scratch one), asymptote = mean of the last 3 points.
  The usual mistakes are recognised and named: the test-set curves, the longer run left uncut,
  both, and points instead of fractions.
- **q3** (1 point) ``answer_q3``: a prediction (choice) about the asymptotic gap when the target set
  grows and the schedule is long enough.

:data:`LOGGED_RUNS` was recorded once with the chapter's setting by
``tlcourse.curves.record_curve`` (the digit CNN of ``zoo.pretrained_digit_cnn(seed=0)`` with a new
19-class head, or a random ``DigitCNN``; EMNIST letters A-S, 20 per class, seed 7, Adam lr 1e-3,
batches of 16, validation 5 letters per class, scored every 15 steps, the test split of
``holdout_split("emnist_letters", n_test=380, seed=0)`` tracked at the same steps). It is stored as
counts of correct images, so the accuracies are exact.
"""
from __future__ import annotations

import math
import numbers

import numpy as np
import pandas as pd
import torch

from tlcourse import curves
from tlcourse.grading import Question
from tlcourse.grading.answers import NOT_PLAIN as _NOT_PLAIN, shown as _shown
from tlcourse.grading.choice import choice_question

N_VAL, N_TEST, LAST_K = 95, 380, 3
LOGGED_RUNS = {
    "scratch": {"step": [0, 15, 30, 45, 60, 75, 90, 105, 120],
                "val_correct": [5, 26, 57, 63, 69, 73, 73, 72, 73],
                "test_correct": [12, 104, 199, 232, 250, 252, 259, 261, 269]},
    "pretrained": {"step": [0, 15, 30, 45, 60, 75, 90, 105, 120, 135, 150, 165, 180, 195, 210, 225, 240],
                   "val_correct": [4, 33, 63, 66, 71, 73, 71, 74, 73, 71, 74, 74, 70, 70, 72, 73, 72],
                   "test_correct": [12, 157, 244, 258, 276, 285, 278, 278, 282, 285, 285, 288, 282, 285,
                                    282, 285, 286]},
}


def logged_runs() -> pd.DataFrame:
    """The colleague's log: one row per arm and recorded step, ``arm, step, val_acc, test_acc``."""
    rows = [{"arm": arm, "step": s, "val_acc": v / N_VAL, "test_acc": t / N_TEST}
            for arm, log in LOGGED_RUNS.items()
            for s, v, t in zip(log["step"], log["val_correct"], log["test_correct"])]
    return pd.DataFrame(rows)


def _scalar(value):
    """A number (0-d tensors and NumPy scalars included) as a float; ``None`` kept; anything else described."""
    if value is None:
        return None
    if isinstance(value, bool):
        return f"{_NOT_PLAIN}bool>"
    if isinstance(value, (torch.Tensor, np.ndarray)) and value.ndim == 0 and value.dtype != object:
        return float(value)
    if isinstance(value, (numbers.Real, np.generic)) and not isinstance(value, str):
        return float(value)
    return f"{_NOT_PLAIN}{type(value).__name__}>"




# ---------------------------------------------------------------- q1
def q1_cases(seed: int) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """Four ``(steps, accuracy, threshold)`` cases drawn from ``seed``: rising noisy curves recorded
    at uneven steps; the last threshold is above every point (never reached)."""
    rng = np.random.default_rng(seed)
    cases = []
    for i in range(4):
        n = int(rng.integers(6, 10))
        steps = np.concatenate([[0], np.cumsum(rng.choice([5, 10, 20, 40], size=n - 1))]).astype(float)
        level = rng.uniform(0.5, 0.9)
        acc = level * (1 - np.exp(-steps / rng.uniform(10, 60))) + rng.normal(0, 0.03, n)
        acc = np.clip(acc + 0.05, 0, 1).round(4)
        if i == 3:
            threshold = float(acc.max() + 0.05)          # never reached
        elif i == 1:
            threshold = float(acc[n // 2])               # reached exactly at a recorded point: >= counts
        else:
            threshold = float(np.round(rng.uniform(0.4, 0.95) * acc.max(), 3))
        cases.append((steps, acc, threshold))
    return cases


def _call(fn, name, *args):
    try:
        return {"value": _scalar(fn(*[a.copy() if isinstance(a, np.ndarray) else a for a in args]))}
    except NotImplementedError:
        return {"error": f"{name} raises NotImplementedError: replace the placeholder with your code"}
    except Exception as exc:  # noqa: BLE001 - reported to the student
        return {"error": f"{name}(...) raised {type(exc).__name__}: {str(exc)[:200]}"}


def _collect_measures(ns, seed):
    out = {"auc": [], "time_to_threshold": []}
    for steps, acc, threshold in q1_cases(seed):
        out["auc"].append(_call(ns["auc"], "auc", steps, acc))
        out["time_to_threshold"].append(_call(ns["time_to_threshold"], "time_to_threshold", steps, acc, threshold))
    return out


def _auc_variants(steps, acc) -> dict:
    return {
        "right": curves.area_under_curve(steps, acc),
        "auc is the plain mean of the points: with unevenly spaced steps each point must weigh its "
        "share of the steps; use the trapezoidal rule, then divide by the span": float(acc.mean()),
        "the area is not divided by the span steps[-1] - steps[0]: normalise it, so that the result "
        "is the curve's mean level, an accuracy in [0, 1]": curves.area_under_curve(steps, acc, normalise=False),
        "the trapezoidal area is divided by the number of points instead of the span steps[-1] - steps[0]":
            curves.area_under_curve(steps, acc, normalise=False) / len(steps),
    }


def _ttt_variants(steps, acc, threshold) -> dict:
    reached = np.flatnonzero(acc >= threshold)
    below = np.flatnonzero(acc < threshold)
    return {
        "right": curves.time_to_threshold(steps, acc, threshold),
        "time_to_threshold returns the index of the point, not the step at which it was recorded: "
        "return steps[i]": float(reached[0]) if reached.size else math.inf,
        "time_to_threshold returns the last step below the threshold, not the first step at or above it":
            float(steps[below[-1]]) if below.size else math.inf,
        "time_to_threshold uses accuracy > threshold; a curve that reaches the threshold exactly has "
        "reached it (>=)": float(steps[np.flatnonzero(acc > threshold)[0]]) if (acc > threshold).any() else math.inf,
    }


def _close(a, b) -> bool:
    if a is None or isinstance(a, str):
        return False
    if math.isinf(b) or math.isinf(a):
        return a == b
    return abs(a - b) <= 1e-6 * max(1.0, abs(b))


def _grade_measures(answer, seed):
    assert isinstance(answer, dict) and "auc" in answer, "the collected answer is malformed: run the cells in order"
    cases = q1_cases(seed)
    for name in ("auc", "time_to_threshold"):
        for got in answer[name]:
            assert "error" not in got, got.get("error")
            assert not isinstance(got["value"], str), f"{name} returned {_shown(got['value'])}; return a number"
    aucs = [g["value"] for g in answer["auc"]]
    refs = [_auc_variants(s, a) for s, a, _ in cases]
    if not all(_close(v, r["right"]) for v, r in zip(aucs, refs)):
        for mistake in refs[0]:
            if mistake != "right" and all(_close(v, r[mistake]) for v, r in zip(aucs, refs)):
                raise AssertionError(f"auc is off: {mistake}")
        bad = next(i for i, (v, r) in enumerate(zip(aucs, refs)) if not _close(v, r["right"]))
        raise AssertionError(
            f"auc(steps={cases[bad][0].tolist()}, ...) = {aucs[bad]!r}, expected {refs[bad]['right']:.5f}: the "
            "trapezoidal area sum((x[i+1] - x[i]) * (y[i] + y[i+1]) / 2) divided by x[-1] - x[0]")
    times = [g["value"] for g in answer["time_to_threshold"]]
    refs = [_ttt_variants(s, a, t) for s, a, t in cases]
    never = times[-1]
    if never is None or not _close(never, refs[-1]["right"]):
        raise AssertionError(
            f"time_to_threshold returned {never!r} for a curve that never reaches its threshold; return "
            "math.inf (float('inf')): None, -1 or the last step would read as 'reached'")
    if not all(_close(v, r["right"]) for v, r in zip(times, refs)):
        for mistake in refs[0]:
            if mistake != "right" and all(_close(v, r[mistake]) for v, r in zip(times[:-1], refs[:-1])):
                raise AssertionError(f"time_to_threshold is off: {mistake}")
        bad = next(i for i, (v, r) in enumerate(zip(times, refs)) if not _close(v, r["right"]))
        raise AssertionError(
            f"time_to_threshold(..., threshold={cases[bad][2]}) = {times[bad]!r}, expected "
            f"{refs[bad]['right']:g}: the first recorded step at which accuracy >= threshold")


# ---------------------------------------------------------------- q2
def q2_variants() -> dict[str, tuple[float, float]]:
    """``(auc_gap, asymptotic_gap)`` computed the right way and the usual wrong ways."""
    log = logged_runs()
    out = {}
    for split in ("val", "test"):
        for cut in (True, False):
            s = log[log.arm == "scratch"]
            p = log[log.arm == "pretrained"]
            if cut:
                p = p[p.step <= s.step.max()]
            col = f"{split}_acc"
            auc_gap = curves.area_under_curve(p.step, p[col]) - curves.area_under_curve(s.step, s[col])
            asym_gap = curves.asymptote(p[col].to_numpy(), last=LAST_K) - curves.asymptote(s[col].to_numpy(), last=LAST_K)
            out[split, cut] = (float(auc_gap), float(asym_gap))
    return out


_Q2_MISTAKES = {
    ("test", True): "these are the TEST-set curves (test_acc): read benefits, like every choice, off the "
                    "validation curves (val_acc); the test split reports the final numbers only",
    ("val", False): "the pretrained run was logged for twice as many steps as the scratch one: compare the "
                    "curves over the common budget (steps <= the scratch run's last step), or the longer run "
                    "gets credit for its extra steps (unequal budgets)",
    ("test", False): "these use the TEST-set curves and the longer run left uncut: use val_acc, and cut the "
                     "pretrained run to the scratch run's budget (equal budgets)",
}


def _collect_gaps(ns, seed):
    return {"auc_gap": _scalar(ns["auc_gap"]), "asymptotic_gap": _scalar(ns["asymptotic_gap"])}


def _grade_gaps(answer, seed):
    got = []
    for name in ("auc_gap", "asymptotic_gap"):
        v = answer[name]
        assert v is not None and not isinstance(v, str), f"{name} should be a float, got {_shown(v)}"
        got.append(v)
    variants = q2_variants()
    near = lambda a, b: all(abs(x - y) <= 5e-4 for x, y in zip(a, b))  # noqa: E731
    right = variants["val", True]
    if near(got, right):
        return
    for key, message in _Q2_MISTAKES.items():
        if near(got, variants[key]):
            raise AssertionError(message)
    if near([g / 100 for g in got], right) or any(near([g / 100 for g in got], v) for v in variants.values()):
        raise AssertionError("the gaps look like percentage points: give fractions of 1 (0.05 for 5 points), "
                             "as the accuracies in the log are")
    raise AssertionError(
        f"auc_gap = {got[0]:.4f}, asymptotic_gap = {got[1]:.4f}, expected about {right[0]:.4f} and {right[1]:.4f}: "
        f"pretrained minus scratch, on val_acc, over the common budget, the asymptote as the mean of the last "
        f"{LAST_K} points and the AUC normalised by the span")


# ---------------------------------------------------------------- q3
Q3_CHOICES = {
    "a": "It grows: with more target data fine-tuning can exploit the source features further.",
    "b": "It shrinks towards zero: with enough target data and steps the scratch network learns features "
         "as good as the transferred ones, though the pretrained one still gets there in fewer steps.",
    "c": "It stays about the same: the asymptote benefit is a fixed property of the source model.",
    "d": "It turns clearly negative at every size: a source trained on digits always hurts letters once "
         "there is enough data.",
}
_Q3_ANSWER = "b"
_Q3_FEEDBACK = {
    "a": "look at step 3 of the chapter: what does the final gap do between 20 and 80 letters per class? "
         "More labels help the scratch network at least as much as the pretrained one.",
    "c": "the chapter measured the gap at three sizes; was it the same at 20 and at 80 per class?",
    "d": "a worse start is possible (negative transfer, T05), but nothing here says that more data turns a "
         "positive gap into a clearly negative one; what does He et al.'s COCO result report?",
}


QUESTIONS = [
    Question("q1", points=2, names=("auc", "time_to_threshold"), collect=_collect_measures,
             grade=_grade_measures,
             hint="area = sum((s[1:] - s[:-1]) * (a[1:] + a[:-1]) / 2) / (s[-1] - s[0]); for the time, "
                  "the first i with a[i] >= threshold gives steps[i], else math.inf"),
    Question("q2", points=2, names=("auc_gap", "asymptotic_gap"), collect=_collect_gaps, grade=_grade_gaps,
             hint="cut the pretrained rows to step <= the scratch run's last step; use val_acc; "
                  "tlcourse.curves.area_under_curve and asymptote(last=3) do the rest"),
    choice_question("q3", "answer_q3", choices=Q3_CHOICES, answer=_Q3_ANSWER, feedback=_Q3_FEEDBACK, points=1,
                    hint="Compare the chapter's final gaps at 20 and at 80 letters per class, and recall He et al. (2019)."),
]
