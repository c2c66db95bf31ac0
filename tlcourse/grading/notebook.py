"""Grade one submitted notebook: run it in a sandbox, grade what comes out in this process.

:func:`grade_notebook` is three steps, which :mod:`tlcourse.grading.batch` runs for many
notebooks at once:

1. :func:`inspect_submission` (trusted): read the file (its SHA-256 is recorded), validate it
   with nbformat, tell its chapter from the notebook's metadata, its ``Grader("T01")`` call and
   its file name (they must agree), and draw the secret seeds of every collection.
2. :func:`run_submission` (untrusted code, in :mod:`~tlcourse.grading.sandbox`): the runner
   executes a copy of the notebook and writes each question's collected answer as plain data.
   Safe to call from several threads.
3. :func:`grade_run` (trusted, main thread): read the answers with :func:`plain.load` only,
   grade every collected answer of each question with ``Question.grade`` under a time limit and
   keep the best, points from the ``Question`` alone; then delete the scratch folder.

Nothing the sandbox wrote is imported, unpickled or executed here, and the submitted file is only
read.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import os
import re
import secrets
import subprocess
import time
from pathlib import Path

from . import plain, sandbox
from .exercises import chapter_from_name
from .questions import CheckResult, Question, Report, describe_exception, load_questions, \
    time_limited
from .runner import collection_points

__all__ = ["grade_notebook", "inspect_submission", "run_submission", "grade_run", "Submission",
           "MAX_NOTEBOOK_BYTES", "Isolation"]

MAX_NOTEBOOK_BYTES = 64 * 2**20
COLLECTIONS_PER_QUESTION = 8  # plus the final one
_GRADER_CALL = re.compile(r"""Grader\(\s*(?:chapter_id\s*=\s*)?["']([^"']*)["']""")


class Isolation:
    AUTO, REQUIRED, NONE = "auto", "required", "none"


@dataclasses.dataclass
class Submission:
    path: Path
    sha256: str | None = None
    chapter_id: str | None = None
    questions: list[Question] = dataclasses.field(default_factory=list)
    seeds: dict[str, list[int]] = dataclasses.field(default_factory=dict)
    source: str | None = None  # the validated notebook, as nbformat writes it
    error: str | None = None
    started: float = dataclasses.field(default_factory=time.perf_counter)


@dataclasses.dataclass
class Run:
    scratch: sandbox.Scratch | None
    isolated: bool
    notes: list[str]
    error: str | None = None


def _chapter(nb, path: Path, claimed: str | None, allow_demo: bool) -> tuple[str | None, str | None]:
    """``(chapter_id, None)`` or ``(None, error)`` from metadata, Grader calls and file name."""
    says: dict[str, str] = {}
    meta = nb.metadata.get("tlcourse", {})
    meta = meta.get("chapter") if isinstance(meta, dict) else None
    if isinstance(meta, str) and meta:
        says["its metadata"] = meta.upper()
    calls = {m.upper() for cell in nb.cells if cell.get("cell_type") == "code"
             for m in _GRADER_CALL.findall(cell.get("source", ""))}
    if len(calls) > 1:
        return None, (f"the notebook creates graders for several chapters ({', '.join(sorted(calls))});"
                      f" an exercise notebook grades one chapter")
    if calls:
        says["its Grader(...) call"] = calls.pop()
    from_name = chapter_from_name(path.name)
    if from_name:
        says["its file name"] = from_name
    if claimed:
        says["the --chapter option"] = claimed.upper()
    if not says:
        return None, ("cannot tell the chapter: the notebook has no tlcourse metadata and no "
                      "Grader(...) call, and its file name does not start with an id like T01-")
    if len(set(says.values())) > 1:
        listed = "; ".join(f"{where} says {cid}" for where, cid in says.items())
        return None, (f"the chapter is ambiguous: {listed}. Grade the notebook under the chapter "
                      f"it was written for (rename the file, or pass --chapter to match it)")
    chapter_id = next(iter(says.values()))
    if chapter_id.startswith("_") and not allow_demo:
        return None, (f"{chapter_id} is the grader's demo chapter, not a course chapter; "
                      f"submissions are graded against T01, T06, ...")
    return chapter_id, None


def inspect_submission(path, chapter_id: str | None = None, allow_demo: bool = False) -> Submission:
    """Read, validate and identify a submission; ``Submission.error`` says what is wrong."""
    import nbformat

    sub = Submission(Path(path))
    try:
        with open(sub.path, "rb") as handle:
            data = handle.read(MAX_NOTEBOOK_BYTES + 1)
    except OSError as exc:
        sub.error = f"cannot read {sub.path}: {exc.strerror or exc}"
        return sub
    sub.sha256 = hashlib.sha256(data).hexdigest()
    if len(data) > MAX_NOTEBOOK_BYTES:
        sub.error = (f"the notebook is larger than {MAX_NOTEBOOK_BYTES // 2**20} MiB; clear its "
                     f"outputs (Kernel > Restart and Clear Outputs) and submit it again")
        return sub
    try:
        nb = nbformat.reads(data.decode("utf-8"), as_version=4)
        nbformat.validate(nb)
    except nbformat.ValidationError as exc:
        where = "/".join(str(p) for p in getattr(exc, "absolute_path", []) or [])
        sub.error = (f"not a valid Jupyter notebook: {exc.message}"
                     + (f" (at {where})" if where else "")
                     + "; open it in Jupyter and save it again, or submit the exercise file")
        return sub
    except Exception as exc:  # not JSON, not UTF-8, not a notebook at all
        sub.error = (f"not a Jupyter notebook ({describe_exception(exc, 200)}); submit the "
                     f".ipynb file saved by Jupyter")
        return sub
    sub.chapter_id, sub.error = _chapter(nb, sub.path, chapter_id, allow_demo)
    if sub.error:
        return sub
    try:
        sub.questions = load_questions(sub.chapter_id)
    except ValueError as exc:
        sub.error = str(exc)
        return sub
    names = [q.name for q in sub.questions]
    counts = dict.fromkeys(names, 0)
    for _, which in collection_points(nb.cells, names, COLLECTIONS_PER_QUESTION):
        for name in which:
            counts[name] += 1
    sub.seeds = {n: [secrets.randbits(31) for _ in range(counts[n] + 1)] for n in names}
    sub.source = nbformat.writes(nb)
    return sub


def prepare(chapter_id: str) -> None:
    """Run the checks module's ``prepare()`` (e.g. train and cache its source model) once, here,
    so that every sandbox starts from a copy of a warm cache."""
    module = importlib.import_module(f"tlcourse.checks.{chapter_id.lower()}")
    hook = getattr(module, "prepare", None)
    if callable(hook):
        hook()


def _cache_dir() -> Path | None:
    root = os.environ.get("TLCOURSE_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "tlcourse"


def _decide_isolation(isolation: str) -> tuple[bool, str | None]:
    """``(isolate, error)``."""
    if isolation == Isolation.NONE:
        return False, None
    ok, why = sandbox.available()
    if ok:
        return True, None
    if isolation == Isolation.REQUIRED:
        return False, f"cannot grade in a sandbox: {why}"
    return False, None


def run_submission(sub: Submission, limits: sandbox.Limits, isolate: bool) -> Run:
    """Execute the submission in a fresh sandbox; its answers stay in ``Run.scratch.out``."""
    sub.started = time.perf_counter()  # a report's seconds: this run and its grading
    notes = [] if isolate else [
        f"NOT isolated: {sandbox.available()[1]}. The notebook ran as you, with your files; use "
        f"this grade as self-study feedback only"]
    scratch = sandbox.make_scratch(_cache_dir(), isolate)
    notebook = scratch.work / "submission.ipynb"
    notebook.write_text(sub.source, encoding="utf-8")
    if scratch.uid is not None:
        os.chown(notebook, scratch.uid, scratch.uid)
    n_questions = len(sub.questions)
    hard_limit = (limits.total_timeout + n_questions * (limits.collect_timeout + 10) + 30)
    data = os.environ.get("TLCOURSE_DATA") or None
    try:
        process = sandbox.start(scratch, notebook, sub.chapter_id, limits, isolate, data)
    except OSError as exc:
        scratch.remove()
        return Run(None, isolate, notes, error=f"the sandbox could not start ({exc})")
    try:
        stdout, stderr = process.communicate(json.dumps({"seeds": sub.seeds}).encode(),
                                             timeout=hard_limit)
    except subprocess.TimeoutExpired:
        sandbox.stop(process)
        stdout, stderr = b"", b""
        notes.append(f"the sandbox was stopped after {hard_limit:g} s (the total limit plus the "
                     f"time allowed for collecting answers)")
    finally:
        sandbox.stop(process)
    notes += _runner_notes(stdout, stderr, process.returncode)
    return Run(scratch, isolate, notes)


def _runner_notes(stdout: bytes, stderr: bytes, returncode: int | None) -> list[str]:
    """The runner's notes (plain strings only), or what is known when it did not report."""
    lines = stdout.decode("utf-8", "replace").strip().splitlines()
    try:
        result = json.loads(lines[-1]) if lines else None
        notes = result["notes"] if isinstance(result, dict) else None
        if isinstance(notes, list) and all(isinstance(n, str) for n in notes):
            return [" ".join(n.split())[:500] for n in notes[:50]]
    except (ValueError, KeyError, TypeError):
        pass
    said = [line for line in stderr.decode("utf-8", "replace").splitlines() if line.strip()]
    return [f"the grader inside the sandbox stopped before reporting (exit status {returncode})"
            + (f": {said[-1][:300]}" if said else "") + "; answers collected before that are "
            "graded"]


def _grade_one(question: Question, seeds: list[int], out: Path | None,
               grade_timeout: float) -> CheckResult:
    """The best result among the question's collected answers, the final collection first."""
    start = time.perf_counter()
    message = None
    order = [len(seeds) - 1] + list(range(len(seeds) - 2, -1, -1))
    for k in order:
        stem = None if out is None else out / f"{question.name}-{k}"
        if stem is None or not stem.with_suffix(".json").is_file():
            continue
        try:
            record = plain.load(stem)
        except (plain.PlainDataError, OSError) as exc:
            message = message or f"the collected answer could not be read ({exc})"
            continue
        if not isinstance(record, dict) or set(record) not in ({"answer"}, {"error"}):
            message = message or "the collected answer is malformed"
            continue
        if "error" in record:
            text = record["error"] if isinstance(record["error"], str) else "the answer failed"
            message = message or " ".join(text.split())[:500]
            continue
        _, failure = time_limited(lambda: question.grade(record["answer"], seeds[k]),
                                  grade_timeout)
        if failure is None:
            return CheckResult(question.name, True, question.points, question.points, "",
                               question.hint, round(time.perf_counter() - start, 3))
        message = message or failure
    return CheckResult(question.name, False, 0, question.points,
                       message or "not graded: no answer was collected (see the notes)",
                       question.hint, round(time.perf_counter() - start, 3))


def grade_run(sub: Submission, run: Run | None, grade_timeout: float = 120.0) -> Report:
    """Grade the collected answers in this (trusted) process, then remove the scratch folder."""
    try:
        if sub.error or run is None or run.error:
            error = sub.error or (run.error if run else "not run")
            results = [CheckResult(q.name, False, 0, q.points, "not graded (see the error)",
                                   q.hint, 0.0) for q in sub.questions]
            return Report(sub.chapter_id, results, str(sub.path), error=error,
                          notes=run.notes if run else [], sha256=sub.sha256,
                          isolated=run.isolated if run else None,
                          seconds=time.perf_counter() - sub.started)
        out = run.scratch.out if run.scratch else None
        results = [_grade_one(q, sub.seeds[q.name], out, grade_timeout) for q in sub.questions]
        return Report(sub.chapter_id, results, str(sub.path), notes=run.notes, sha256=sub.sha256,
                      isolated=run.isolated, seconds=time.perf_counter() - sub.started)
    finally:
        if run is not None and run.scratch is not None:
            run.scratch.remove()


def grade_notebook(path, chapter_id: str | None = None, *, cell_timeout: float = 60,
                   total_timeout: float = 300, collect_timeout: float = 30,
                   memory_gib: float = 4, isolation: str = Isolation.AUTO,
                   allow_demo: bool = False, grade_timeout: float = 120.0) -> Report:
    """Grade one notebook without modifying it (see the module docstring).

    ``isolation``: ``"auto"`` (a bubblewrap sandbox when available, else unisolated with a
    note), ``"required"`` (an error instead of running unisolated) or ``"none"``. Call from the
    main thread: grading uses SIGALRM for its time limits.
    """
    limits = sandbox.Limits(cell_timeout, total_timeout, collect_timeout,
                            int(memory_gib * 2**30))
    sub = inspect_submission(path, chapter_id, allow_demo)
    if sub.error:
        return grade_run(sub, None)
    isolate, error = _decide_isolation(isolation)
    if error:
        sub.error = error
        return grade_run(sub, None)
    prepare(sub.chapter_id)
    return grade_run(sub, run_submission(sub, limits, isolate), grade_timeout)
