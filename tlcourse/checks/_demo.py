"""Demo questions (chapter id ``_DEMO``), used by the grader's tests and as a template.

>>> from tlcourse.grading import Grader
>>> Grader("_DEMO", quiet=True).check("q2", namespace={"mean_of": lambda v: sum(v) / len(v)}).passed
True
"""
from tlcourse.grading import Question


def _check_double(ns):
    double = ns["double"]
    for x in (0, 3, -2.5):
        got = double(x)
        assert got == 2 * x, f"double({x!r}) returned {got!r}; expected {2 * x!r}"


def _check_mean_of(ns):
    mean_of = ns["mean_of"]
    for values, expected in (([1, 2, 3], 2.0), ([2.5], 2.5), ([-4, 1, 0], -1.0)):
        got = mean_of(values)
        assert isinstance(got, (int, float)) and abs(got - expected) < 1e-12, (
            f"mean_of({values}) returned {got!r}; expected {expected!r}")


QUESTIONS = [
    Question("q1", points=2, names=("double",), check=_check_double,
             hint="Return the argument times two."),
    Question("q2", points=1, names=("mean_of",), check=_check_mean_of,
             hint="The mean of a list is its sum divided by its length."),
]
