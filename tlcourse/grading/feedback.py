"""Instant feedback inside a notebook, for self-study: ``grader.check("q1")``.

``Grader("T01").check("q1")`` runs the question's ``collect`` step on the notebook's globals with
a fresh random seed, passes the result through the same plain-data conversion that instructor
grading uses, runs the ``grade`` step, and shows pass or fail, the points, what was wrong and a
hint. Everything runs inside the student's own kernel, under a time limit (30 s by default), and
nothing the student's code raises escapes it.

This is feedback, not a grade anyone should trust: the student's kernel could change any of it.
Grades for an instructor come from ``tlcourse grade``, which runs the notebook in a sandbox and
computes every grade outside it (:mod:`tlcourse.grading.notebook`).

Inside that sandbox (``TLCOURSE_GRADING=sandbox``) a ``grader.check(...)`` cell only says that the
question is graded after the run: the grader inserts its own collection cells.

>>> grader = Grader("_DEMO", quiet=True)
>>> grader.check("q1", namespace={"double": lambda x: 2 * x}).points
2
>>> grader.check("q2", namespace={}).message
'define `mean_of` first (run the cell that computes it)'
"""
from __future__ import annotations

import dataclasses
import inspect
import json
import os
import secrets
import sys
import time
from collections.abc import Mapping
from typing import Any

from . import plain
from .questions import CheckResult, Question, Report, load_questions, show, time_limited

__all__ = ["Grader", "FEEDBACK_LOG_ENV", "SANDBOX_ENV", "evaluate_question"]

FEEDBACK_LOG_ENV = "TLCOURSE_FEEDBACK_LOG"  # tests of our own solutions read it; never a grade
SANDBOX_ENV = "TLCOURSE_GRADING"


def evaluate_question(question: Question, namespace: Mapping[str, Any], seed: int,
                      time_limit: float | None) -> CheckResult:
    """Collect and grade ``question`` in this process (the self-study path)."""
    start = time.perf_counter()
    missing = [n for n in question.names if n not in namespace]
    if missing:
        message = (f"define {', '.join(f'`{n}`' for n in missing)} first (run the cell that "
                   f"computes it)")
    else:
        answer, message = time_limited(
            lambda: plain.roundtrip(question.collect(namespace, seed)), time_limit)
        if message is None:
            _, message = time_limited(lambda: question.grade(answer, seed), time_limit)
    passed = message is None
    return CheckResult(question.name, passed, question.points if passed else 0, question.points,
                       message or "", question.hint, round(time.perf_counter() - start, 3))


def _log(chapter_id: str, result: CheckResult) -> None:
    path = os.environ.get(FEEDBACK_LOG_ENV)
    if path:
        try:
            with open(path, "a", encoding="utf-8") as log:
                log.write(json.dumps({"chapter_id": chapter_id, **dataclasses.asdict(result)}) + "\n")
        except OSError as exc:
            print(f"tlcourse: could not write the feedback log {path}: {exc}", file=sys.stderr)


class Grader:
    """Instant feedback in a chapter's notebook (see the module docstring)."""

    def __init__(self, chapter_id: str, time_limit: float | None = 30.0, quiet: bool = False):
        self.chapter_id, self.time_limit, self.quiet = chapter_id, time_limit, quiet
        self.questions = {q.name: q for q in load_questions(chapter_id)}

    def _grade(self, name: str, namespace: Mapping[str, Any]) -> CheckResult:
        question = self.questions.get(name)
        if question is None:
            result = CheckResult(name, False, 0, 0, f"{self.chapter_id} has no question {name!r} "
                                 f"(questions: {', '.join(self.questions)})", "", 0.0)
        elif os.environ.get(SANDBOX_ENV) == "sandbox":
            result = CheckResult(name, False, 0, question.points, "graded by the instructor's "
                                 "grader once the notebook has run", "", 0.0)
        else:
            result = evaluate_question(question, namespace, secrets.randbits(31), self.time_limit)
        _log(self.chapter_id, result)
        return result

    def check(self, question: str, namespace: Mapping[str, Any] | None = None) -> CheckResult:
        """Check one question against ``namespace`` (default: the caller's globals) and show it."""
        if namespace is None:
            namespace = inspect.currentframe().f_back.f_globals
        result = self._grade(question, namespace)
        if not self.quiet:
            show(result)
        return result

    def check_all(self, namespace: Mapping[str, Any] | None = None) -> Report:
        """Check every question and show a summary."""
        if namespace is None:
            namespace = inspect.currentframe().f_back.f_globals
        report = Report(self.chapter_id, [self._grade(name, namespace) for name in self.questions],
                        isolated=False)
        if not self.quiet:
            show(report)
        return report
