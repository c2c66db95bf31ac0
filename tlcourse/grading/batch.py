"""``tlcourse grade``: one notebook or a whole class, each in its own sandbox, in parallel.

``tlcourse grade SUBMISSIONS_DIR --csv grades.csv --json grades.json -j 2`` grades every
``*.ipynb`` in the folder (not in sub-folders; checkpoints are skipped). ``-j`` sandboxes run at
once, in threads; each answer is graded in the main thread as soon as its sandbox is torn down,
and the reports are written by this process at the end. A submission that cannot be graded
(malformed, wrong chapter, the demo chapter) is a row with an ``error``, never a traceback.

Batch grading refuses to run without a sandbox unless ``--allow-unisolated`` is given; a single
notebook is graded unisolated with a plain note (self-study on macOS).
"""
from __future__ import annotations

import argparse
import concurrent.futures
import csv
import json
import sys
from pathlib import Path

from . import sandbox
from .notebook import (Isolation, _decide_isolation, grade_run, inspect_submission, prepare,
                       run_submission)
from .questions import Report

__all__ = ["grade_folder", "main_grade", "write_csv", "find_notebooks"]


def find_notebooks(paths: list[Path]) -> list[Path]:
    """The notebooks named, and those directly inside the folders named, in a stable order."""
    found = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.iterdir() if p.suffix == ".ipynb" and p.is_file()
                            and not p.name.startswith("."))
        else:
            found.append(path)
    return found


def grade_folder(paths, *, jobs: int = 2, chapter_id: str | None = None,
                 cell_timeout: float = 60, total_timeout: float = 300,
                 collect_timeout: float = 30, memory_gib: float = 4,
                 isolation: str = Isolation.REQUIRED, allow_demo: bool = False,
                 progress=None) -> list[Report]:
    """A :class:`Report` per notebook, in the order of :func:`find_notebooks`."""
    paths = find_notebooks([Path(p) for p in ([paths] if isinstance(paths, (str, Path))
                                                else paths)])
    limits = sandbox.Limits(cell_timeout, total_timeout, collect_timeout,
                            int(memory_gib * 2**30))
    isolate, error = _decide_isolation(isolation)
    subs = [inspect_submission(p, chapter_id, allow_demo) for p in paths]
    if error:
        for sub in subs:
            sub.error = sub.error or error
    for chapter in sorted({s.chapter_id for s in subs if not s.error}):
        prepare(chapter)  # once, before any sandbox copies the cache
    reports: dict[int, Report] = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = {pool.submit(run_submission, sub, limits, isolate): i
                   for i, sub in enumerate(subs) if not sub.error}
        for i, sub in enumerate(subs):
            if sub.error:
                reports[i] = grade_run(sub, None)
        for future in concurrent.futures.as_completed(futures):
            i = futures[future]
            try:
                run = future.result()
            except Exception as exc:  # a bug of ours must not lose the other rows
                subs[i].error = f"grading failed: {type(exc).__name__}: {exc}"
                run = None
            reports[i] = grade_run(subs[i], run)
            if progress:
                progress(reports[i])
    return [reports[i] for i in range(len(subs))]


def write_csv(reports: list[Report], path: Path) -> None:
    """One row per submission: file, sha256, chapter, points per question, total, max, error,
    notes (joined with ``" | "``)."""
    questions = []
    for report in reports:
        for r in report.results:
            if r.question not in questions:
                questions.append(r.question)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "sha256", "chapter", *questions, "total", "max", "error",
                         "notes"])
        for report in reports:
            points = {r.question: f"{r.points:g}" for r in report.results}
            writer.writerow([report.notebook, report.sha256 or "", report.chapter_id or "",
                             *(points.get(q, "") for q in questions), f"{report.score:g}",
                             f"{report.max_score:g}", report.error or "",
                             " | ".join(report.notes)])


def main_grade(argv: list[str] | None = None) -> int:
    """Exit 0 when every notebook was graded (whatever the scores), 1 when any has an error,
    2 on bad options."""
    parser = argparse.ArgumentParser(
        prog="tlcourse grade", description="Grade exercise notebooks, each in its own sandbox; "
        "the grade is computed outside it.")
    parser.add_argument("paths", type=Path, nargs="+", metavar="NOTEBOOK_OR_DIR")
    parser.add_argument("--csv", type=Path, metavar="FILE", help="write a row per notebook")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write every report as JSON")
    parser.add_argument("-j", "--jobs", type=int, default=2, metavar="N",
                        help="sandboxes at once (default 2; one per core)")
    parser.add_argument("--chapter", help="chapter id, for a single notebook whose file name "
                        "does not start with it")
    parser.add_argument("--cell-timeout", type=float, default=60, metavar="S",
                        help="time limit of one cell in seconds (default 60)")
    parser.add_argument("--total-timeout", type=float, default=300, metavar="S",
                        help="time limit of all the notebook's cells in seconds (default 300)")
    parser.add_argument("--memory", type=float, default=4, metavar="GIB",
                        help="memory limit per notebook in GiB (default 4)")
    parser.add_argument("--allow-unisolated", action="store_true",
                        help="grade a batch without a sandbox when bubblewrap is missing "
                        "(the notebooks run as you)")
    args = parser.parse_args(argv)
    try:
        paths = find_notebooks(args.paths)
        missing = [str(p) for p in args.paths if not p.exists()]
        if missing:
            raise ValueError(f"no such file or folder: {', '.join(missing)}")
        if not paths:
            raise ValueError(f"no .ipynb files in {', '.join(map(str, args.paths))}")
        if args.chapter and len(paths) > 1:
            raise ValueError("--chapter is for a single notebook; in a batch each notebook's "
                             "chapter comes from its metadata and file name")
        sandbox.Limits(args.cell_timeout, args.total_timeout, 30, int(args.memory * 2**30))
    except ValueError as exc:
        print(f"tlcourse grade: {exc}", file=sys.stderr)
        return 2
    single = len(paths) == 1
    isolation = (Isolation.AUTO if single or args.allow_unisolated else Isolation.REQUIRED)
    ok, why = sandbox.available()
    if not ok and isolation == Isolation.REQUIRED:
        print(f"tlcourse grade: refusing to grade {len(paths)} notebooks without a sandbox: "
              f"{why}. Install bubblewrap, or pass --allow-unisolated to run them as you.",
              file=sys.stderr)
        return 2

    def progress(report):
        if not single:
            state = f"error: {report.error}" if report.error else (
                f"{report.score:g} / {report.max_score:g}")
            print(f"{report.notebook}: {state} ({report.seconds:.1f} s)", file=sys.stderr)

    reports = grade_folder(paths, jobs=args.jobs, chapter_id=args.chapter,
                           cell_timeout=args.cell_timeout, total_timeout=args.total_timeout,
                           memory_gib=args.memory, isolation=isolation, progress=progress)
    if single:
        print(reports[0].to_text())
    else:
        print(f"{len(reports)} notebooks graded; {sum(bool(r.error) for r in reports)} with "
              f"errors" + (f"; rows in {args.csv}" if args.csv else ""))
    try:
        if args.csv:
            write_csv(reports, args.csv)
        if args.json:
            document = reports[0].to_dict() if single else [r.to_dict() for r in reports]
            args.json.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    except OSError as exc:
        print(f"tlcourse grade: cannot write the report: {exc}", file=sys.stderr)
        return 1
    return 1 if any(r.error for r in reports) else 0
