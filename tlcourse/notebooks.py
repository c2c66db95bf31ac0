"""Running the course's notebooks: papermill execution, the timing table and the book's cache.

Every chapter notebook (``book/**/*.ipynb``) and every solution (``solutions/*.ipynb``) has a
``parameters`` cell whose defaults run on a CPU. This module executes them with papermill
(optionally overriding those parameters, e.g. the full-size GPU settings), writes the executed
copies under ``_build/executed/``, records the seconds each took, and can hand the executed
outputs to Jupyter Book's cache (``_build/.jupyter_cache``) so that the book build that follows
executes nothing a second time.

Command line (``tlcourse timings`` is the same as ``python -m tlcourse.notebooks timings``)::

    python -m tlcourse.notebooks run PATH...      # execute, write _build/executed/PATH + .json
    python -m tlcourse.notebooks seed-cache       # executed outputs -> Jupyter Book cache
    python -m tlcourse.notebooks timings          # execute all sequentially, rewrite book/timings.md
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import nbformat

__all__ = ["course_notebooks", "time_limit", "execute_notebook", "seed_book_cache", "check_html",
           "write_timings_table", "main_timings"]

CHAPTER_LIMIT_S = 60.0   # each chapter notebook, CPU defaults, on the 2-core reference machine
SOLUTION_LIMIT_S = 20.0  # each solution notebook
EXECUTED = Path("_build") / "executed"
CACHE = Path("_build") / ".jupyter_cache"
TIMINGS_PAGE = Path("book") / "timings.md"


def course_notebooks(root: Path | str = ".") -> list[Path]:
    """Book chapters and solutions, relative to ``root``, in a stable order."""
    root = Path(root)
    found = sorted(root.glob("book/**/*.ipynb")) + sorted(root.glob("solutions/*.ipynb"))
    return [p.relative_to(root) for p in found if ".ipynb_checkpoints" not in p.parts]


def time_limit(path: Path | str) -> float:
    """The time budget in seconds of a notebook: 20 s for a solution, 60 s for a chapter."""
    return SOLUTION_LIMIT_S if Path(path).parts[0] == "solutions" else CHAPTER_LIMIT_S


def execute_notebook(path: Path | str, root: Path | str = ".", parameters: dict | None = None,
                     threads: int | None = None, timeout: int = 900) -> dict:
    """Execute ``root/path`` with papermill into ``root/_build/executed/path``; return its record.

    The kernel runs in the notebook's own folder (as Jupyter Book does). ``threads`` sets
    ``OMP_NUM_THREADS`` for the kernel (one thread per kernel when several run side by side).
    The record ``{"notebook", "seconds", "limit", "parameters", "threads"}`` is also written next
    to the executed copy as JSON. Raises papermill's ``PapermillExecutionError`` when a cell fails.
    """
    import papermill as pm

    root, path = Path(root).resolve(), Path(path)
    src = root / path
    out = root / EXECUTED / path
    out.parent.mkdir(parents=True, exist_ok=True)
    # The kernel inherits this process's environment: set its thread count, and drop a
    # non-interactive MPLBACKEND (e.g. Agg from a test run), which would hide every figure.
    saved = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MPLBACKEND")}
    if threads is not None:
        os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ.pop("MPLBACKEND", None)
    start = time.perf_counter()
    try:
        pm.execute_notebook(str(src), str(out), parameters=parameters or None, cwd=str(src.parent),
                            kernel_name="python3", progress_bar=False, execution_timeout=timeout)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    seconds = time.perf_counter() - start
    record = {"notebook": path.as_posix(), "seconds": round(seconds, 1), "limit": time_limit(path),
              "parameters": parameters or {}, "threads": threads or "default"}
    out.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    return record


def seed_book_cache(root: Path | str = ".") -> list[str]:
    """Put every executed chapter (run with its default parameters) into Jupyter Book's cache.

    The cache matches a notebook by a hash of its code cells' source and metadata, so the outputs
    of the executed copy are merged into the *source* notebook before caching. Notebooks whose
    executed copy is missing, stale (older than the source) or parameterised are skipped and will
    be executed by the book build as usual. Returns the notebooks cached.
    """
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn

    root = Path(root).resolve()
    cache = get_cache(str(root / CACHE))
    cached = []
    for path in course_notebooks(root):
        if path.parts[0] != "book":
            continue
        src, out = root / path, root / EXECUTED / path
        record_file = out.with_suffix(".json")
        if not out.exists() or not record_file.exists() or out.stat().st_mtime < src.stat().st_mtime:
            continue
        record = json.loads(record_file.read_text())
        if record["parameters"]:
            continue
        source, executed = nbformat.read(src, as_version=4), nbformat.read(out, as_version=4)
        if [c.source for c in source.cells] != [c.source for c in executed.cells]:
            continue  # papermill injected a cell or the source changed since
        for cell, done in zip(source.cells, executed.cells):
            if cell.cell_type == "code":
                cell.outputs, cell.execution_count = done.outputs, done.execution_count
        cache.add_nb_to_project(str(src))
        cache.cache_notebook_bundle(CacheBundleIn(source, str(src), data={"execution_seconds": record["seconds"]}),
                                    check_validity=False, overwrite=True)
        cached.append(path.as_posix())
    return cached


def check_html(root: Path | str = ".") -> list[str]:
    """Problems with the built pages: a chapter without its page, a figure or with an error output."""
    root = Path(root)
    problems = []
    for path in course_notebooks(root):
        if path.parts[0] != "book":
            continue
        page = root / "_build" / "html" / path.with_suffix(".html")
        if not page.exists():
            problems.append(f"{page}: not built")
            continue
        html = page.read_text(encoding="utf-8")
        if "<img" not in html:
            problems.append(f"{page}: no figure (every chapter shows at least one computed plot)")
        for marker in ("Traceback (most recent call last)",):
            if marker in html:
                problems.append(f"{page}: contains an error output ({marker!r})")
    return problems


def write_timings_table(records: list[dict], page: Path | str, note: str = "") -> str:
    """Write the markdown page of notebook timings and return its text."""
    lines = ["# Notebook timings", "",
             "Seconds to execute each notebook with its CPU defaults (papermill, one notebook at a "
             "time, one CPU thread per kernel, on the reference machine: 2 cores, no GPU). Refresh "
             "with `make timings`; "
             f"the budget is {CHAPTER_LIMIT_S:.0f} s per chapter and {SOLUTION_LIMIT_S:.0f} s per "
             "solution, and a notebook over budget is a bug.", ""]
    if note:
        lines += [note, ""]
    lines += ["| notebook | seconds | budget | within budget |", "|---|---:|---:|:---:|"]
    for r in records:
        ok = "yes" if r["seconds"] <= r["limit"] else "**no**"
        lines.append(f"| `{r['notebook']}` | {r['seconds']:.1f} | {r['limit']:.0f} | {ok} |")
    total = sum(r["seconds"] for r in records)
    lines += ["", f"Total: {total:.0f} s for {len(records)} notebooks.", ""]
    text = "\n".join(lines)
    Path(page).write_text(text)
    return text


def main_timings(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tlcourse timings",
                                     description="Execute every notebook sequentially and rewrite book/timings.md.")
    parser.add_argument("--root", default=".")
    parser.add_argument("--threads", type=int, default=1,
                        help="OMP_NUM_THREADS for each kernel (default 1, as in CI where two run side by side)")
    parser.add_argument("--note", default="", help="a line about the machine, added to the page")
    args = parser.parse_args(argv)
    records = []
    for path in course_notebooks(args.root):
        record = execute_notebook(path, args.root, threads=args.threads)
        print(f"{record['seconds']:7.1f} s  (budget {record['limit']:.0f})  {path}", flush=True)
        records.append(record)
    write_timings_table(records, Path(args.root) / TIMINGS_PAGE, note=args.note)
    over = [r["notebook"] for r in records if r["seconds"] > r["limit"]]
    if over:
        print(f"over budget: {', '.join(over)}", file=sys.stderr)
    return 1 if over else 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["timings"]:
        return main_timings(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m tlcourse.notebooks")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="execute notebooks with papermill")
    run.add_argument("paths", nargs="*", help="default: every course notebook")
    run.add_argument("--threads", type=int, default=None)
    run.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                     help="override a parameter (value parsed as JSON when it can be)")
    sub.add_parser("seed-cache", help="executed chapters -> Jupyter Book cache")
    sub.add_parser("check-html", help="every chapter page was built, shows figures and no error")
    args = parser.parse_args(argv)
    if args.command == "check-html":
        problems = check_html()
        for problem in problems:
            print(problem, file=sys.stderr)
        print(f"checked {len(course_notebooks())} notebooks' pages: {len(problems)} problem(s)")
        return 1 if problems else 0
    if args.command == "seed-cache":
        for name in seed_book_cache():
            print(f"cached {name}")
        return 0
    params = {}
    for name, value in args.parameter:
        try:
            params[name] = json.loads(value)
        except json.JSONDecodeError:
            params[name] = value
    for path in args.paths or course_notebooks():
        record = execute_notebook(path, parameters=params, threads=args.threads)
        print(f"{record['seconds']:7.1f} s  {path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
