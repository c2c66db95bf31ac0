"""Checks for exercise T09 (few-shot versus zero-shot): a 95 % confidence interval over episodes,
calibrated stacking with gamma chosen on validation classes, and one prediction on the seen-class
bias.

Every ``collect`` runs in the student's kernel and returns plain data; every ``grade`` runs in the
trusted process and rebuilds what it compares with from the seed and from data it loads itself
(EMNIST letters through :func:`tlcourse.data.load`, the split and the attribute map from
:mod:`tlcourse.zeroshot`, all deterministic). Nothing in the student's namespace is trusted.

- **q1** (2 points) ``episode_ci(correct)``: ``correct`` is a 0/1 array (episodes, queries); the
  function returns ``(mean, half_width)`` of the 95 % confidence interval over episodes,
  ``mean(a) +- 1.96 * s(a) / sqrt(E)`` with ``a`` the per-episode accuracies. *collect*: the
  student's function on three arrays drawn from the seed (100 to 600 episodes of 75 queries whose
  difficulty varies by episode). *grade*: the mean to 1e-6, the half-width to 2 % (so ``ddof`` 0
  or 1 and a t quantile are all accepted). Named mistakes: every query pooled as independent,
  the standard deviation without ``sqrt(E)``, the standard error without 1.96, a division by ``E``.
- **q2** (2 points) ``gamma_val`` and ``test_gzsl`` (seen, unseen, harmonic). The grader rebuilds
  the exercise's scores (ridge attribute map on raw pixels, :data:`SPLIT_SEED`) and checks that
  ``gamma_val`` has the best validation harmonic mean on :data:`GAMMAS`, and that ``test_gzsl`` is
  the test result at that gamma. With this split the validation set picks 0.10 and the test set
  would pick 0.14, so a gamma tuned on the test unseen classes fails with a message that says so.
- **q3** (1 point) ``answer_q3``: where the unseen test images go before calibration.
"""
from __future__ import annotations

import functools
import math
import numbers

import numpy as np
import torch

from tlcourse.grading import Question
from tlcourse.grading.answers import NOT_PLAIN as _NOT_PLAIN, shown as _shown, scalar as _scalar
from tlcourse.grading.choice import choice_question

# ---------------------------------------------------------------- the exercise's fixed setting
PER_LETTER = 100           # the first 100 EMNIST images of each letter A-S
N_SEEN, N_VAL_UNSEEN = 9, 5
SPLIT_SEED = 3             # zsl_split(labels, 9, 5, seed=3)
L2 = 10.0                  # ridge penalty of the attribute map (raw pixels)
GAMMAS = tuple(round(0.02 * i, 2) for i in range(31))
Q1_SHAPES = ((100, 75), (300, 75), (600, 75))


def _pair(value):
    """A (mean, half_width) pair as two plain scalars, or a description of what it was."""
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return [_scalar(v) for v in value]
    if isinstance(value, (np.ndarray, torch.Tensor)) and tuple(value.shape) == (2,):
        return [float(v) for v in value]
    return _scalar(value) if not isinstance(value, (tuple, list)) else f"{_NOT_PLAIN}{len(value)}-tuple>"


# ---------------------------------------------------------------- q1
def q1_inputs(seed: int) -> list[np.ndarray]:
    """The 0/1 arrays (episodes, queries) of q1: each episode has its own difficulty."""
    rng = np.random.default_rng(seed)
    out = []
    for episodes, queries in Q1_SHAPES:
        p = rng.uniform(0.4, 0.95, size=(episodes, 1))
        out.append((rng.random((episodes, queries)) < p).astype(np.int64))
    return out


def _collect_ci(ns, seed):
    fn = ns["episode_ci"]
    values = []
    for correct in q1_inputs(seed):
        try:
            values.append(_pair(fn(correct.copy())))
        except NotImplementedError:
            return {"error": "episode_ci raises NotImplementedError: replace the placeholder with your code"}
        except Exception as exc:  # noqa: BLE001 - reported to the student
            return {"error": f"episode_ci(correct) on a {correct.shape} array raised "
                             f"{type(exc).__name__}: {str(exc)[:200]}"}
    return {"values": values}


def _ci_variants(correct: np.ndarray) -> dict:
    a = correct.mean(1)
    e = len(a)
    s = a.std(ddof=1)
    flat = correct.reshape(-1).astype(float)
    return {
        "right": 1.96 * s / math.sqrt(e),
        "every query is treated as an independent trial (the interval pools all episodes x queries "
        "predictions): queries of one episode share its support set, so compute one accuracy per "
        "episode and take the interval over episodes": 1.96 * flat.std(ddof=1) / math.sqrt(flat.size),
        "the half-width is 1.96 times the standard deviation of the episode accuracies: that is their "
        "spread, not the uncertainty of their mean; divide by sqrt(number of episodes)": 1.96 * s,
        "the half-width is the standard error s / sqrt(E): a 95 % interval is 1.96 standard errors":
            s / math.sqrt(e),
        "the standard deviation is divided by the number of episodes: the standard error divides by "
        "its square root": 1.96 * s / e,
    }


def _grade_ci(answer, seed):
    assert isinstance(answer, dict), "the collected answer is malformed: run the notebook's cells in order"
    assert "error" not in answer, answer.get("error")
    values = answer["values"]
    for v in values:
        assert isinstance(v, list) and not any(isinstance(x, str) for x in v), (
            f"episode_ci should return a pair (mean, half_width) of numbers, got {_shown(v)}")
    inputs = q1_inputs(seed)
    for (mean, half), correct in zip(values, inputs):
        want = float(correct.mean(1).mean())
        assert abs(mean - want) <= 1e-6, (
            f"the mean is {mean:.5f} on a {correct.shape} array, expected {want:.5f}: the mean of the "
            "per-episode accuracies")
    cases = [_ci_variants(c) for c in inputs]
    close = lambda got, ref: abs(got - ref) <= 0.02 * ref  # noqa: E731
    if all(close(v[1], c["right"]) for v, c in zip(values, cases)):
        return
    for mistake in cases[0]:
        if mistake != "right" and all(close(v[1], c[mistake]) for v, c in zip(values, cases)):
            raise AssertionError(f"episode_ci's half-width is off: {mistake}")
    (_, half), c, correct = values[0], cases[0], inputs[0]
    raise AssertionError(
        f"episode_ci's half-width is {half:.5f} on a {correct.shape} array, expected {c['right']:.5f}: "
        "1.96 * (standard deviation of the per-episode accuracies) / sqrt(number of episodes)")


# ---------------------------------------------------------------- q2
@functools.lru_cache(maxsize=1)
def exercise_scores() -> dict:
    """The exercise's generalised-ZSL scores, rebuilt here: the split, the validation and test
    scores (restricted to their label spaces), the labels and the seen mask."""
    from tlcourse.data import load
    from tlcourse.zeroshot import (attribute_scores, fit_attribute_map, letter_attributes,
                                   predict_attributes, restrict_to, zsl_split)

    letters = load("emnist_letters")
    rows = np.concatenate([np.flatnonzero(letters.labels == c)[:PER_LETTER] for c in range(len(letters.classes))])
    x = torch.from_numpy(letters.images[rows]).flatten(1)
    y = torch.from_numpy(letters.labels[rows])
    attributes = letter_attributes(letters.classes)
    sp = zsl_split(y, N_SEEN, N_VAL_UNSEEN, seed=SPLIT_SEED)
    amap = fit_attribute_map(x[sp.train], y[sp.train], attributes, l2=L2)
    def score(part, unseen):
        return restrict_to(attribute_scores(predict_attributes(amap, x[part]), attributes), sp.seen + unseen)

    seen_mask = torch.isin(torch.arange(len(attributes)), torch.tensor(sp.seen))
    return {"split": sp, "val": score(sp.val, sp.val_unseen), "test": score(sp.test, sp.test_unseen),
            "y_val": y[sp.val], "y_test": y[sp.test], "seen_mask": seen_mask}


@functools.lru_cache(maxsize=1)
def reference_curves() -> dict:
    """Validation and test GZSL results for every gamma of :data:`GAMMAS`."""
    from tlcourse.zeroshot import calibrated_stacking, gzsl_accuracy

    s = exercise_scores()
    sp = s["split"]
    out = {}
    for part, unseen in (("val", sp.val_unseen), ("test", sp.test_unseen)):
        out[part] = {g: gzsl_accuracy(s[f"y_{part}"], calibrated_stacking(s[part], s["seen_mask"], g).argmax(1),
                                      sp.seen, unseen) for g in GAMMAS}
    return out


def _collect_gamma(ns, seed):
    result = ns["test_gzsl"]
    if hasattr(result, "_asdict"):
        result = tuple(result)
    if isinstance(result, (tuple, list)) and len(result) == 3:
        result = [_scalar(v) for v in result]
    else:
        result = _scalar(result) if not isinstance(result, (tuple, list)) else f"{_NOT_PLAIN}{len(result)}-tuple>"
    return {"gamma_val": _scalar(ns["gamma_val"]), "test_gzsl": result}


def _grade_gamma(answer, seed):
    gamma = answer["gamma_val"]
    assert not isinstance(gamma, str), f"gamma_val should be a number from gammas, got {_shown(gamma)}"
    nearest = min(GAMMAS, key=lambda g: abs(g - gamma))
    assert abs(nearest - gamma) < 1e-6, f"gamma_val = {gamma!r} is not in the grid gammas {GAMMAS[:3]}...{GAMMAS[-1]}"
    curves = reference_curves()
    val, test = curves["val"], curves["test"]
    best_val = max(r.harmonic for r in val.values())
    best_test = max(test, key=lambda g: (test[g].harmonic, -g))
    if val[nearest].harmonic < best_val - 1e-9:
        if abs(test[nearest].harmonic - test[best_test].harmonic) < 1e-9:
            raise AssertionError(
                f"gamma_val = {nearest:g} is the best gamma on the TEST split (test harmonic mean "
                f"{test[nearest].harmonic:.3f}), chosen on the test unseen classes; choose it on the "
                f"validation scores, where it reaches only {val[nearest].harmonic:.3f} against the best "
                f"{best_val:.3f}")
        raise AssertionError(
            f"gamma_val = {nearest:g} reaches a validation harmonic mean of {val[nearest].harmonic:.3f}, but "
            f"the best on validation is {best_val:.3f}: pick the gamma with the highest validation harmonic mean")
    got = answer["test_gzsl"]
    assert isinstance(got, list) and not any(isinstance(v, str) for v in got), (
        f"test_gzsl should be (seen, unseen, harmonic), three numbers, got {_shown(got)}")
    want = test[nearest]
    if all(abs(a - b) < 1e-6 for a, b in zip(got, want)):
        return
    if all(abs(a - b) < 1e-6 for a, b in zip(got, val[nearest])):
        raise AssertionError("test_gzsl holds the VALIDATION result at gamma_val; apply gamma_val to the "
                             "test scores and report that")
    if all(abs(a - b) < 1e-6 for a, b in zip(got, test[0.0])):
        raise AssertionError("test_gzsl is the uncalibrated test result (gamma = 0); apply gamma_val to the "
                             "seen-class scores of the test split")
    raise AssertionError(
        f"test_gzsl = {tuple(round(v, 4) for v in got)}, but at gamma = {nearest:g} the test split gives seen "
        f"{want.seen:.4f}, unseen {want.unseen:.4f}, harmonic {want.harmonic:.4f} (per-class accuracies, "
        "argmax over the seen and the test-unseen classes)")


# ---------------------------------------------------------------- q3
Q3_CHOICES = {
    "a": "About 9 in 14, the seen classes' share of the label space: errors spread evenly over the classes.",
    "b": "Most of them: the attribute map was fitted on seen images only, so its outputs land closer to the "
         "seen classes' vectors and the seen classes win most decisions.",
    "c": "Almost none: the unseen classes have attribute vectors of their own, which their images match best.",
    "d": "Exactly those that plain zero-shot classification gets wrong, and no others.",
}
_Q3_ANSWER = "b"
_Q3_FEEDBACK = {
    "a": "errors are not spread evenly: ask which classes' attribute vectors the regressor was trained to output.",
    "c": "if that were so, plain ZSL and generalised ZSL would give the same unseen accuracy. What was the "
         "map fitted on?",
    "d": "an image that plain ZSL gets right can still be won by a seen class once the seen classes compete.",
}

QUESTIONS = [
    Question("q1", points=2, names=("episode_ci",), collect=_collect_ci, grade=_grade_ci,
             hint="acc = correct.mean(axis=1); return acc.mean(), 1.96 * acc.std(ddof=1) / np.sqrt(len(acc))"),
    Question("q2", points=2, names=("gamma_val", "test_gzsl"), collect=_collect_gamma, grade=_grade_gamma,
             hint="gamma_val, _ = choose_gamma(scores_val, y_val, seen, val_unseen, gammas); then "
                  "gzsl_accuracy on calibrated_stacking(scores_test, seen_mask, gamma_val).argmax(1)"),
    choice_question("q3", "answer_q3", choices=Q3_CHOICES, answer=_Q3_ANSWER, feedback=_Q3_FEEDBACK, points=1,
                    hint="Compare plain ZSL accuracy with unseen accuracy at gamma = 0 in the chapter's step 4."),
]
