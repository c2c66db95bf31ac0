"""Demo questions (chapter id ``_DEMO``), used by the grader's tests and as a template.

Each question's ``collect`` calls the student's function on inputs drawn from the grading seed
and returns the plain results; its ``grade`` draws the same inputs and compares.

>>> from tlcourse.grading import Grader
>>> Grader("_DEMO", quiet=True).check("q2", namespace={"mean_of": lambda v: sum(v) / len(v)}).passed
True
"""
import numpy as np

from tlcourse.grading import Question


def _inputs(seed):
    rng = np.random.default_rng(seed)
    return [float(v) for v in rng.normal(scale=10, size=3).round(3)], [
        [float(v) for v in rng.integers(-9, 10, size=k)] for k in (1, 3, 5)]


def _collect_double(ns, seed):
    xs, _ = _inputs(seed)
    return {"inputs": xs, "outputs": [ns["double"](x) for x in xs]}


def _grade_double(answer, seed):
    xs, _ = _inputs(seed)
    outputs = answer.get("outputs") if isinstance(answer, dict) else None
    # lengths first: zip() over a forged, shorter list would check nothing
    assert isinstance(outputs, list) and len(outputs) == len(xs), "the collected answer is malformed"
    for x, got in zip(xs, outputs):
        assert got == 2 * x, f"double({x!r}) returned {got!r}; expected {2 * x!r}"


def _collect_mean(ns, seed):
    _, lists = _inputs(seed)
    return [ns["mean_of"](values) for values in lists]


def _grade_mean(answer, seed):
    _, lists = _inputs(seed)
    assert isinstance(answer, list) and len(answer) == len(lists), "the collected answer is malformed"
    for values, got in zip(lists, answer):
        expected = sum(values) / len(values)
        assert isinstance(got, (int, float)) and abs(got - expected) < 1e-9, (
            f"mean_of({values}) returned {got!r}; expected {expected!r}")


QUESTIONS = [
    Question("q1", points=2, names=("double",), collect=_collect_double, grade=_grade_double,
             hint="Return the argument times two."),
    Question("q2", points=1, names=("mean_of",), collect=_collect_mean, grade=_grade_mean,
             hint="The mean of a list is its sum divided by its length."),
]
