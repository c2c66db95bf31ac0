"""Exercises generated from solutions, instant feedback in notebooks, and a notebook grader.

One source of truth. ``solutions/<ID>-<slug>.ipynb`` holds the worked answer. In a code cell
the student's part lies between ``# BEGIN SOLUTION`` and ``# END SOLUTION`` lines, or is a single
``name = value  # SOLUTION`` line; cells tagged ``solution-only`` are answers only.
:func:`make_exercise` turns a solution into the exercise that ``exercises/`` ships and
:func:`build_exercises` writes them all, byte for byte the same every time (``check=True`` lists
the ones that drifted instead).

Checks live in the package, where they are unit-tested: ``tlcourse/checks/t01.py`` defines
``QUESTIONS``, a list of :class:`Question` (points, the names the student must define, a hint and
a ``check(namespace)`` that asserts).

Feedback in the notebook: ``grader = Grader("T01")``, then ``grader.check("q1")`` runs the check on
the notebook's globals under a time limit (SIGALRM, 30 s), catches whatever the student's code or
the check raises, shows pass/fail, points, message and hint, and returns a :class:`CheckResult`.

Grading a notebook: :func:`grade_notebook` executes a *copy* in a temporary directory with
nbclient (errors allowed; a cell that runs past ``cell_timeout`` is interrupted and execution goes
on), then runs one more cell, ``Grader(ID).check_all()``, so that questions whose check cell was
never reached are graded in the same kernel state. Each check appends a JSON line to the file named
by ``$TLCOURSE_GRADE_LOG``; the grader reads it back and keeps each question's best result.
The checks run inside the student's kernel: this gives learners feedback, it is not a defence
against a student who rewrites the grader.
"""
from __future__ import annotations

import argparse
import ast
import copy
import dataclasses
import html
import importlib
import inspect
import io
import json
import math
import os
import pkgutil
import re
import signal
import sys
import tempfile
import threading
import time
import types
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import nbformat

__all__ = ["Question", "CheckResult", "Report", "Grader", "load_questions", "make_exercise",
           "build_exercises", "grade_notebook", "main_grade", "main_exercises"]

LOG_ENV = "TLCOURSE_GRADE_LOG"
SOLUTION_ONLY_TAG = "solution-only"
PLACEHOLDER = 'raise NotImplementedError("replace this line with your code")'
BANNER = ("> **Exercise notebook**, generated from `{source}` by `tlcourse exercises`: edit the "
          "solution instead.\n> Replace each `raise NotImplementedError(...)` and `...` with your "
          "code, and run `grader.check(...)` after each question.")
# Keys that tools rewrite on every run; keeping them would make exercises drift for nothing.
_VOLATILE_CELL_METADATA = ("execution", "papermill", "ExecuteTime", "collapsed", "scrolled")
_ONE_LINER = re.compile(r"^(?P<code>.*?\S)\s*#\s*SOLUTION\s*$")


# ---------------------------------------------------------------- exercises from solutions
def _blank_one_liner(code: str, where: str) -> str:
    """``x = 6 * 7`` -> ``x = ...  # YOUR CODE HERE`` (also annotated, augmented and ``return``)."""
    indent, statement = code[: len(code) - len(code.lstrip())], code.strip()
    try:
        body = ast.parse(statement).body
    except SyntaxError:
        body = []
    node = body[0] if len(body) == 1 else None
    value = getattr(node, "value", None)
    kinds = (ast.Assign, ast.AnnAssign, ast.AugAssign, ast.Return)
    if not isinstance(node, kinds) or value is None:
        raise ValueError(f"{where}: `# SOLUTION` marks a line `name = value` or `return value`, "
                         f"not {statement!r}; use BEGIN/END SOLUTION lines")
    head = statement.encode()[: value.col_offset].decode()  # col_offset counts UTF-8 bytes
    return f"{indent}{head}...  # YOUR CODE HERE"


def _strip_solutions(source: str, where: str) -> str:
    out: list[str] = []
    opened = None  # line number of the open BEGIN SOLUTION
    for number, line in enumerate(source.splitlines(), start=1):
        marker = line.strip()
        if marker == "# BEGIN SOLUTION":
            if opened is not None:
                raise ValueError(f"{where}, line {number}: BEGIN SOLUTION inside the region "
                                 f"opened on line {opened}")
            opened, indent = number, line[: len(line) - len(line.lstrip())]
            out += [f"{indent}# YOUR CODE HERE", f"{indent}{PLACEHOLDER}"]
        elif marker == "# END SOLUTION":
            if opened is None:
                raise ValueError(f"{where}, line {number}: END SOLUTION without BEGIN SOLUTION")
            opened = None
        elif opened is None:
            match = _ONE_LINER.match(line)
            out.append(_blank_one_liner(match["code"], f"{where}, line {number}")
                       if match else line)
    if opened is not None:
        raise ValueError(f"{where}: BEGIN SOLUTION on line {opened} is never closed")
    return "\n".join(out) + ("\n" if source.endswith("\n") else "")


def make_exercise(solution_nb: nbformat.NotebookNode,
                  source_name: str | None = None) -> nbformat.NotebookNode:
    """The exercise for a solution notebook; ``source_name`` is named in the banner.

    >>> cell = nbformat.v4.new_code_cell("x = 6 * 7  # SOLUTION")
    >>> print(make_exercise(nbformat.v4.new_notebook(cells=[cell])).cells[1].source)
    x = ...  # YOUR CODE HERE
    """
    exercise = copy.deepcopy(solution_nb)
    cells = []
    for index, cell in enumerate(exercise.cells, start=1):
        if SOLUTION_ONLY_TAG in cell.get("metadata", {}).get("tags", []):
            continue
        for key in _VOLATILE_CELL_METADATA:
            cell.get("metadata", {}).pop(key, None)
        if cell.cell_type == "code":
            cell.source = _strip_solutions(cell.source, f"cell {index}")
            cell.outputs, cell.execution_count = [], None
        cells.append(cell)
    source = f"solutions/{source_name}" if source_name else "the solution notebook"
    banner = nbformat.v4.new_markdown_cell(BANNER.format(source=source))
    if exercise.get("nbformat_minor", 0) >= 5:
        banner.id = "exercise-banner"  # fixed, so that generation is deterministic
    else:
        del banner["id"]
    exercise.cells = [banner, *cells]
    kernelspec = exercise.metadata.get("kernelspec")
    exercise.metadata = nbformat.from_dict({"kernelspec": kernelspec} if kernelspec else {})
    return exercise


def _notebook_text(nb: nbformat.NotebookNode) -> str:
    buffer = io.StringIO()
    nbformat.write(nb, buffer)  # adds the trailing newline
    return buffer.getvalue()


def build_exercises(solutions_dir, exercises_dir, check: bool = False) -> list[Path]:
    """Write ``exercises_dir/<name>`` for every ``solutions_dir/*.ipynb``; return their paths.

    A file whose bytes are already right is left alone. With ``check=True`` nothing is written
    and the exercises that are missing or differ are returned.
    """
    solutions_dir, exercises_dir = Path(solutions_dir), Path(exercises_dir)
    if not solutions_dir.is_dir():
        raise FileNotFoundError(f"no solutions folder at {solutions_dir}")
    listed = []
    for solution in sorted(solutions_dir.glob("*.ipynb")):
        try:
            exercise = make_exercise(nbformat.read(solution, as_version=4), solution.name)
            nbformat.validate(exercise)
        except Exception as exc:
            raise ValueError(f"{solution}: {exc}") from exc
        data, target = _notebook_text(exercise).encode(), exercises_dir / solution.name
        current = target.read_bytes() if target.is_file() else None
        if check:
            listed += [target] if current != data else []
            continue
        if current != data:
            exercises_dir.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        listed.append(target)
    return listed


# ---------------------------------------------------------------- questions and results
@dataclasses.dataclass(frozen=True)
class Question:
    """A graded question; ``check(namespace)`` raises ``AssertionError`` with a message if wrong."""

    name: str
    _: dataclasses.KW_ONLY
    points: float
    check: Callable[[Mapping[str, Any]], object]
    names: tuple[str, ...] = ()
    hint: str = ""

    def __post_init__(self):
        if isinstance(self.names, str):
            raise TypeError(f"{self.name}: names must be a tuple of variable names, e.g. ('x',)")
        if not self.points >= 0:
            raise ValueError(f"{self.name}: points must be >= 0, got {self.points!r}")


class _ShownOnce:
    """``check()`` shows its result at once; IPython echoing the returned value must not repeat it.

    Displayed again later (``result`` alone in a cell), it shows as usual.
    """

    _shown = False

    def _ipython_display_(self):
        if self._shown:
            self._shown = False
        else:
            _show(self)


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
    """Results of a set of questions; ``error`` says why grading itself could not be done."""

    chapter_id: str | None
    results: list[CheckResult]
    notebook: str | None = None
    error: str | None = None
    notes: list[str] = dataclasses.field(default_factory=list)
    seconds: float = 0.0

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

    def to_json(self) -> str:
        return json.dumps({"notebook": self.notebook, "chapter_id": self.chapter_id,
                           "score": self.score, "max_score": self.max_score, "error": self.error,
                           "notes": self.notes, "seconds": round(self.seconds, 3),
                           "results": [dataclasses.asdict(r) for r in self.results]}, indent=2)

    def _html(self) -> str:
        return "".join(r._html() for r in self.results) + html.escape(
            f"total: {self.score:g} / {self.max_score:g} points")


def _show(obj: CheckResult | Report) -> None:
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


def load_questions(chapter_id: str) -> list[Question]:
    """``QUESTIONS`` of ``tlcourse.checks.<chapter id lower-cased>``; ValueError if none."""
    from . import checks

    available = sorted(info.name.upper() for info in pkgutil.iter_modules(checks.__path__))
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


# ---------------------------------------------------------------- checking inside a notebook
class QuestionTimeout(BaseException):
    """Raised by SIGALRM; a BaseException, so a student's ``except Exception`` cannot swallow it."""


def _run_check(check, namespace, seconds: float | None) -> str | None:
    """None when ``check(namespace)`` passes within ``seconds``, else the message to show."""
    limited = bool(seconds) and hasattr(signal, "SIGALRM") and (
        threading.current_thread() is threading.main_thread())

    def on_alarm(signum, frame):
        raise QuestionTimeout

    previous = signal.signal(signal.SIGALRM, on_alarm) if limited else None
    try:
        if limited:
            signal.setitimer(signal.ITIMER_REAL, seconds)
        check(types.MappingProxyType(namespace))  # read-only: a check must not change the notebook
    except QuestionTimeout:
        return (f"stopped after {seconds:g} s: the check did not finish (an endless loop, or too "
                f"much work for the time limit?)")
    except KeyboardInterrupt:
        return "interrupted before the check finished"
    except AssertionError as exc:
        return str(exc) or "the check failed"
    except BaseException as exc:  # a student's bug must never crash grading
        return f"{type(exc).__name__}: {exc}"
    finally:
        if limited:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
    return None


def _log(chapter_id: str, result: CheckResult) -> None:
    path = os.environ.get(LOG_ENV)
    if path:
        try:
            with open(path, "a", encoding="utf-8") as log:
                record = {"chapter_id": chapter_id, **dataclasses.asdict(result)}
                log.write(json.dumps(record) + "\n")
        except OSError as exc:
            print(f"tlcourse: could not write the grade log {path}: {exc}", file=sys.stderr)


class Grader:
    """Instant feedback in a chapter's notebook.

    >>> grader = Grader("_DEMO", quiet=True)
    >>> grader.check("q1", namespace={"double": lambda x: 2 * x}).points
    2
    >>> grader.check("q2", namespace={}).message
    'define `mean_of` first (run the cell that computes it)'
    """

    def __init__(self, chapter_id: str, time_limit: float | None = 30.0, quiet: bool = False):
        self.chapter_id, self.time_limit, self.quiet = chapter_id, time_limit, quiet
        self.questions = {q.name: q for q in load_questions(chapter_id)}

    def _grade(self, name: str, namespace: Mapping[str, Any]) -> CheckResult:
        question, start = self.questions.get(name), time.perf_counter()
        if question is None:
            result = CheckResult(name, False, 0, 0, f"{self.chapter_id} has no question {name!r} "
                                 f"(questions: {', '.join(self.questions)})", "", 0.0)
        else:
            missing = [n for n in question.names if n not in namespace]
            message = (f"define {', '.join(f'`{n}`' for n in missing)} first (run the cell "
                       f"that computes it)") if missing else _run_check(
                           question.check, namespace, self.time_limit)
            result = CheckResult(name, message is None, question.points if message is None else 0,
                                 question.points, message or "", question.hint,
                                 round(time.perf_counter() - start, 3))
        _log(self.chapter_id, result)
        return result

    def check(self, question: str, namespace: Mapping[str, Any] | None = None) -> CheckResult:
        """Check one question against ``namespace`` (default: the caller's globals) and show it."""
        if namespace is None:
            namespace = inspect.currentframe().f_back.f_globals
        result = self._grade(question, namespace)
        if not self.quiet:
            _show(result)
        return result

    def check_all(self, namespace: Mapping[str, Any] | None = None) -> Report:
        """Check every question and show a summary."""
        if namespace is None:
            namespace = inspect.currentframe().f_back.f_globals
        report = Report(self.chapter_id, [self._grade(name, namespace) for name in self.questions])
        if not self.quiet:
            _show(report)
        return report


# ---------------------------------------------------------------- grading a whole notebook
def _not_graded(question: Question, reason: str) -> CheckResult:
    return CheckResult(question.name, False, 0, question.points, reason, question.hint, 0.0)


def _cell_notes(cell, number: int, timeout: int, timed_out: bool) -> list[str]:
    where = f"cell {number} ({(cell.source.strip().splitlines() or [''])[0][:40]})"
    if timed_out:
        return [f"{where}: stopped after {timeout} s (the cell time limit)"]
    return [f"{where}: {out.ename}: {out.evalue}" for out in cell.outputs
            if out.output_type == "error"]


def _execute(nb, workdir: Path, chapter_id: str, n_questions: int, cell_timeout: float,
             total_timeout: float, question_timeout: float) -> tuple[list[str], str | None]:
    """Run the notebook, then the grading cell, in one kernel; return (notes, error)."""
    from nbclient import NotebookClient

    # error_on_timeout: without it nbclient waits for ever for a cell that ignores the interrupt.
    client = NotebookClient(nb, kernel_name="python3", allow_errors=True, interrupt_on_timeout=True,
                            error_on_timeout={"ename": "CellTimeout", "evalue": "",
                                              "traceback": []},
                            resources={"metadata": {"path": str(workdir)}})
    env = {**os.environ, LOG_ENV: str(workdir / "grade-log.jsonl")}
    notes, deadline = [], time.monotonic() + total_timeout
    with open(workdir / "kernel-stderr.txt", "w") as stderr, \
            client.setup_kernel(env=env, stderr=stderr):
        for index, cell in enumerate(nb.cells):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                notes.append(f"cells from {index + 1} on were not run: the notebook took longer "
                             f"than the total limit of {total_timeout:g} s")
                break
            client.timeout = max(1, math.ceil(min(cell_timeout, remaining)))
            started = time.monotonic()
            client.execute_cell(cell, index)
            if cell.cell_type == "code":
                timed_out = time.monotonic() - started >= client.timeout
                notes += _cell_notes(cell, index + 1, client.timeout, timed_out)
        grade_cell = nbformat.v4.new_code_cell(
            "import tlcourse.grading as _tlcourse_grading\n"
            f"_tlcourse_grading.Grader({chapter_id!r}, time_limit={question_timeout!r}, "
            "quiet=True).check_all()")
        nb.cells.append(grade_cell)  # nbclient writes outputs back by index
        client.timeout = math.ceil(n_questions * question_timeout + 30)
        client.execute_cell(grade_cell, len(nb.cells) - 1)
    errors = [o for o in grade_cell.outputs if o.output_type == "error"]
    return notes, (f"the grading cell failed: {errors[0].ename}: {errors[0].evalue}"
                   if errors else None)


def _best_results(log: Path, chapter_id: str) -> dict[str, CheckResult]:
    """Each question's best result in the log; the later one wins a tie."""
    best: dict[str, CheckResult] = {}
    lines = log.read_text(encoding="utf-8").splitlines() if log.is_file() else []
    for line in lines:
        try:
            record = json.loads(line)
            if record.pop("chapter_id") != chapter_id:
                continue
            result = CheckResult(**record)
        except (ValueError, TypeError, KeyError, AttributeError):
            continue
        if result.question not in best or result.points >= best[result.question].points:
            best[result.question] = result
    return best


def grade_notebook(path, chapter_id: str | None = None, cell_timeout: float = 60,
                   total_timeout: float = 600, question_timeout: float = 30.0) -> Report:
    """Grade a notebook without touching it: execute a copy, check every question, report.

    The chapter id comes from the file name (``T01-transfer.ipynb`` -> ``"T01"``) unless given.
    ``total_timeout`` bounds the student's cells (kernel start included); the final grading cell
    has ``question_timeout`` per question on top. Each question keeps its best result.
    Problems of the student's code lower the score; problems that stop grading (unreadable
    notebook, unknown chapter, dead kernel) give zero points and ``Report.error``.
    """
    path, start = Path(path), time.perf_counter()
    match = re.match(r"(_?[A-Za-z0-9]+)-", path.name)
    chapter_id = chapter_id or (match[1] if match else None)
    if chapter_id is None:
        return Report(None, [], str(path), error=f"cannot tell the chapter from the file name "
                      f"{path.name!r}: name it like T01-....ipynb or give the chapter id")
    try:
        questions = load_questions(chapter_id)
    except ValueError as exc:
        return Report(chapter_id, [], str(path), error=str(exc))

    def failed(error: str) -> Report:
        results = [_not_graded(q, "not graded (see the error above)") for q in questions]
        return Report(chapter_id, results, str(path), error=error,
                      seconds=time.perf_counter() - start)

    try:
        nb = nbformat.read(path, as_version=4)
        nb.cells  # noqa: B018 - a JSON file without cells is not a notebook
    except FileNotFoundError:
        return failed(f"no notebook at {path}")
    except Exception as exc:
        return failed(f"cannot read {path} as a notebook ({type(exc).__name__}: {exc})")
    with tempfile.TemporaryDirectory(prefix="tlcourse-grade-") as workdir:
        workdir = Path(workdir)
        nbformat.write(nb, workdir / path.name)  # the copy that the kernel's working folder holds
        try:
            notes, error = _execute(nb, workdir, chapter_id, len(questions), cell_timeout,
                                    total_timeout, question_timeout)
        except Exception as exc:  # dead kernel, kernel that cannot start, ...
            said = [line for line in (workdir / "kernel-stderr.txt").read_text(errors="replace")
                    .splitlines() if line.strip() and "WARNING" not in line]
            said = f"; the kernel said: {said[-1]}" if said else ""
            return failed(f"the notebook could not be run to the end ({type(exc).__name__}: "
                          f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}){said}")
        if error:
            return dataclasses.replace(failed(error), notes=notes)
        best = _best_results(workdir / "grade-log.jsonl", chapter_id)
    results = [best.get(q.name) or _not_graded(q, "not graded: its check never finished")
               for q in questions]
    return Report(chapter_id, results, str(path), notes=notes, seconds=time.perf_counter() - start)


# ---------------------------------------------------------------- command line
def main_grade(argv: list[str] | None = None) -> int:
    """``tlcourse grade NOTEBOOK [--json OUT] [--timeout S]``; exit 0 once graded (any score),
    1 when the notebook could not be graded (``Report.error``)."""
    parser = argparse.ArgumentParser(prog="tlcourse grade", description="Grade an exercise "
                                     "notebook: run a copy of it and check every question.")
    parser.add_argument("notebook", type=Path)
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write the report as JSON")
    parser.add_argument("--timeout", type=float, default=60, metavar="S",
                        help="time limit of one cell in seconds (default 60)")
    parser.add_argument("--total-timeout", type=float, default=600, metavar="S",
                        help="time limit of the whole notebook in seconds (default 600)")
    parser.add_argument("--chapter", help="chapter id, when the file name does not start with it")
    args = parser.parse_args(argv)
    report = grade_notebook(args.notebook, args.chapter, cell_timeout=args.timeout,
                            total_timeout=args.total_timeout)
    print(report.to_text())
    if args.json:
        try:
            args.json.write_text(report.to_json() + "\n", encoding="utf-8")
        except OSError as exc:
            print(f"tlcourse grade: cannot write {args.json}: {exc}", file=sys.stderr)
            return 1
    return 1 if report.error else 0


def main_exercises(argv: list[str] | None = None) -> int:
    """``tlcourse exercises [--check] [--root DIR]``: ``exercises/`` from ``solutions/``.

    Exit 0 when done or in sync, 1 when ``--check`` finds drift, 2 on a bad solution notebook."""
    parser = argparse.ArgumentParser(prog="tlcourse exercises",
                                     description="Generate exercises/ from solutions/.")
    parser.add_argument("--root", type=Path, default=Path("."), help="repository root (default .)")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if an exercise is missing or out of date")
    args = parser.parse_args(argv)
    try:
        paths = build_exercises(args.root / "solutions", args.root / "exercises", check=args.check)
    except (OSError, ValueError) as exc:
        print(f"tlcourse exercises: {exc}", file=sys.stderr)
        return 2
    if args.check and paths:
        print("exercises out of date with solutions/ (run `tlcourse exercises`):")
        print("\n".join(f"  {p}" for p in paths))
        return 1
    print("exercises/ matches solutions/" if args.check
          else f"{len(paths)} exercises in {args.root / 'exercises'}")
    return 0
