"""Questions, results and reports: the definitions that points come from.

A :class:`Question` has two halves, so that a grade can be computed where the student cannot reach:

- ``collect(namespace, seed)`` runs where the student's code runs (their kernel; inside the
  sandbox when an instructor grades). It reads the names the question asks for, calls the
  student's functions on inputs drawn from ``seed`` (which the student's code never sees before
  grading starts), and returns plain data (:mod:`tlcourse.grading.plain`): numbers, strings,
  lists, dicts and arrays, such as a model's ``state_dict`` as arrays. It judges nothing.
- ``grade(answer, seed)`` runs in the trusted process. It receives that plain data (never a
  student's object), recomputes what the answer should be from the same ``seed`` and from data it
  loads itself (the test split, the source model), and raises ``AssertionError`` with a message a
  student can act on when the answer is wrong.

Points come from ``Question.points`` alone: a passed question earns them, anything else earns 0.

>>> q = Question("q1", points=2, collect=lambda ns, seed: {"x": ns["x"]},
...              grade=lambda answer, seed: None, names=("x",))
>>> q.points, q.names
(2, ('x',))
"""
from __future__ import annotations

import dataclasses
import html
import importlib
import json
import pkgutil
import re
import signal
import threading
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["Question", "CheckResult", "Report", "load_questions", "time_limited", "QuestionTimeout",
           "describe_exception"]


@dataclasses.dataclass(frozen=True)
class Question:
    """A graded question: ``collect`` in the student's kernel, ``grade`` in the trusted process."""

    name: str
    _: dataclasses.KW_ONLY
    points: float
    collect: Callable[[Mapping[str, Any], int], Any]
    grade: Callable[[Any, int], object]
    names: tuple[str, ...] = ()
    hint: str = ""

    def __post_init__(self):
        if isinstance(self.names, str):
            raise TypeError(f"{self.name}: names must be a tuple of variable names, e.g. ('x',)")
        if not self.points >= 0:
            raise ValueError(f"{self.name}: points must be >= 0, got {self.points!r}")
        if not (callable(self.collect) and callable(self.grade)):
            raise TypeError(f"{self.name}: collect and grade must be functions")


class _ShownOnce:
    """``check()`` shows its result at once; IPython echoing the returned value must not repeat it.

    Displayed again later (``result`` alone in a cell), it shows as usual.
    """

    _shown = False

    def _ipython_display_(self):
        if self._shown:
            self._shown = False
        else:
            show(self)


@dataclasses.dataclass
class CheckResult(_ShownOnce):
    question: str
    passed: bool
    points: float
    max_points: float
    message: str
    hint: str
    seconds: float

    def to_text(self) -> str:
        lines = [f"{self.question} {'passed' if self.passed else 'failed'}: "
                 f"{self.points:g} / {self.max_points:g} points"]
        if not self.passed:
            lines += [f"  {self.message}"] + ([f"  hint: {self.hint}"] if self.hint else [])
        return "\n".join(lines)

    def _html(self) -> str:
        fg, bg = ("#137333", "#e6f4ea") if self.passed else ("#c5221f", "#fce8e6")
        body = html.escape(self.to_text()).replace("\n", "<br>")
        return (f'<div style="border-left:4px solid {fg};background:{bg};color:#202124;'
                f'padding:6px 10px;margin:4px 0;white-space:pre-wrap">{body}</div>')


@dataclasses.dataclass
class Report(_ShownOnce):
    """Results of a set of questions; ``error`` says why grading itself could not be done.

    ``sha256`` is the SHA-256 of the submitted file; ``isolated`` says whether its code ran in a
    sandbox (False for self-study grading without one).
    """

    chapter_id: str | None
    results: list[CheckResult]
    notebook: str | None = None
    error: str | None = None
    notes: list[str] = dataclasses.field(default_factory=list)
    seconds: float = 0.0
    sha256: str | None = None
    isolated: bool | None = None

    @property
    def score(self) -> float:
        return sum(r.points for r in self.results)

    @property
    def max_score(self) -> float:
        return sum(r.max_points for r in self.results)

    def to_text(self) -> str:
        rows = [("question", "points", "result")]
        for r in self.results:
            rows.append((r.question, f"{r.points:g} / {r.max_points:g}",
                         "passed" if r.passed else "failed: " + " ".join(r.message.split())))
            rows += [("", "", f"hint: {r.hint}")] if r.hint and not r.passed else []
        rows.append(("total", f"{self.score:g} / {self.max_score:g}", ""))
        widths = [max(len(row[i]) for row in rows) for i in (0, 1)]
        lines = [f"{self.notebook} (chapter {self.chapter_id})" if self.notebook
                 else f"chapter {self.chapter_id}"]
        lines += [f"error: {self.error}"] if self.error else []
        lines += [f"note: {note}" for note in self.notes]
        lines += [f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c}".rstrip() for a, b, c in rows]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"notebook": self.notebook, "sha256": self.sha256, "chapter_id": self.chapter_id,
                "score": self.score, "max_score": self.max_score, "error": self.error,
                "isolated": self.isolated, "notes": self.notes, "seconds": round(self.seconds, 3),
                "results": [{k: v for k, v in dataclasses.asdict(r).items()} for r in self.results]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def _html(self) -> str:
        return "".join(r._html() for r in self.results) + html.escape(
            f"total: {self.score:g} / {self.max_score:g} points")


def show(obj: CheckResult | Report) -> None:
    """An HTML box inside a Jupyter kernel, plain text anywhere else."""
    try:
        from IPython import get_ipython
        from IPython.display import display
        in_kernel = getattr(get_ipython(), "kernel", None) is not None
    except ImportError:
        in_kernel = False
    if in_kernel:  # with a text version for front ends that do not render HTML
        display({"text/html": obj._html(), "text/plain": obj.to_text()}, raw=True)
    else:
        print(obj.to_text())
    obj._shown = True


def chapter_ids() -> list[str]:
    """The chapter ids that have checks (``tlcourse/checks/<id>.py``), upper-cased."""
    from .. import checks

    return sorted(info.name.upper() for info in pkgutil.iter_modules(checks.__path__))


def load_questions(chapter_id: str) -> list[Question]:
    """``QUESTIONS`` of ``tlcourse.checks.<chapter id lower-cased>``; ValueError if none."""
    from .. import checks

    available = chapter_ids()
    module_name = chapter_id.lower() if isinstance(chapter_id, str) else ""
    if not re.fullmatch(r"_?[a-z0-9]+", module_name) or module_name.upper() not in available:
        raise ValueError(f"unknown chapter id {chapter_id!r}; available: {', '.join(available)}")
    questions = list(getattr(importlib.import_module(f"{checks.__name__}.{module_name}"),
                             "QUESTIONS", []))
    names = [q.name for q in questions if isinstance(q, Question)]
    if not questions or len(names) != len(questions) or len(set(names)) != len(names):
        raise ValueError(f"tlcourse.checks.{module_name}.QUESTIONS must be a non-empty list of "
                         f"Question with distinct names")
    return questions


# ---------------------------------------------------------------- running a step under a limit
class QuestionTimeout(BaseException):
    """Raised by SIGALRM; a BaseException, so a student's ``except Exception`` cannot swallow it."""


def describe_exception(exc: BaseException, limit: int = 500) -> str:
    """One line for a report: ``"ZeroDivisionError: division by zero"``, at most ``limit`` chars."""
    if isinstance(exc, AssertionError):
        text = str(exc) or "the check failed"
    else:
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def time_limited(function: Callable[[], Any], seconds: float | None) -> tuple[Any, str | None]:
    """``(function(), None)``, or ``(None, message)`` when it raises or runs past ``seconds``.

    The limit uses SIGALRM (main thread on POSIX); elsewhere the step runs without one.
    """
    limited = bool(seconds) and hasattr(signal, "SIGALRM") and (
        threading.current_thread() is threading.main_thread())

    def on_alarm(signum, frame):
        raise QuestionTimeout

    previous = signal.signal(signal.SIGALRM, on_alarm) if limited else None
    try:
        if limited:
            signal.setitimer(signal.ITIMER_REAL, seconds)
        return function(), None
    except QuestionTimeout:
        return None, (f"stopped after {seconds:g} s: the check did not finish (an endless loop, or "
                      f"too much work for the time limit?)")
    except KeyboardInterrupt:
        return None, "interrupted before the check finished"
    except BaseException as exc:  # a student's bug must never crash grading
        return None, describe_exception(exc)
    finally:
        if limited:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
