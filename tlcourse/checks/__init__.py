"""Questions of each chapter's graded exercise, one module per chapter.

``Grader("T01")`` and ``tlcourse grade`` import ``tlcourse.checks.t01`` (the chapter id
lower-cased) and read its ``QUESTIONS``, a list of :class:`tlcourse.grading.Question`, each made
as ``Question(name, *, points, collect, grade, names=(), hint="")``. A question has two halves:

- ``collect(ns, seed)`` runs where the student's code runs: their kernel, or the sandbox when an
  instructor grades. ``ns`` is the notebook's globals. It calls the student's functions on inputs
  drawn from ``seed`` and returns plain data (numbers, strings, lists, dicts, arrays;
  :mod:`tlcourse.grading.plain`). It judges nothing.
- ``grade(answer, seed)`` runs in the trusted process on that plain data. It recomputes the
  reference from the same ``seed`` and from data it loads itself (never from ``ns``), and raises
  ``AssertionError`` with a message a student can act on when the answer is wrong.

``names`` lists the variables ``collect`` reads; a missing one is reported before ``collect``
runs. ``hint`` is shown with a failed check. Points come from ``points`` alone: all or nothing.
In the example, :func:`tlcourse.grading.plain.roundtrip` stands for the crossing from the
student's side to the trusted one; the seed is drawn afresh for every check.

>>> import numpy as np
>>> from tlcourse.grading import Question, plain
>>> def _inputs(seed):
...     return np.random.default_rng(seed).normal(size=(4, 3))
>>> def _collect(ns, seed):
...     return {"norms": ns["row_norms"](_inputs(seed))}
>>> def _grade(answer, seed):
...     got, expected = np.asarray(answer["norms"]), np.linalg.norm(_inputs(seed), axis=1)
...     assert got.shape == expected.shape, (
...         f"row_norms returned shape {got.shape}; expected {expected.shape}, one norm per row")
...     assert np.allclose(got, expected), "row_norms is off: sum the squares along axis 1"
>>> QUESTIONS = [Question("q1", points=1, names=("row_norms",), collect=_collect, grade=_grade,
...                       hint="np.linalg.norm(x, axis=1)")]
>>> q, seed = QUESTIONS[0], 1234
>>> answer = plain.roundtrip(q.collect({"row_norms": lambda x: np.sqrt((x ** 2).sum(1))}, seed))
>>> q.grade(answer, seed) is None
True
>>> q.grade(plain.roundtrip(q.collect({"row_norms": lambda x: x.sum()}, seed)), seed)
Traceback (most recent call last):
AssertionError: row_norms returned shape (); expected (4,), one norm per row

A module may also define ``prepare()``, run once in the trusted process before a batch (for
example to train and cache a source model that every sandbox then copies). Checks are plain
functions, so ``tests/`` tests them like any other code. ``_demo`` (id ``_DEMO``) is the
template, used by the grader's own tests; it cannot be graded as a submission.
"""
