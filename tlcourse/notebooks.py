"""Running the course's notebooks: papermill execution, the timing table and the book's cache.

Every chapter notebook (``book/**/*.ipynb``) and every solution (``solutions/*.ipynb``) has a
``parameters`` cell whose defaults run on a CPU. This module executes them with papermill
(optionally overriding those parameters, e.g. the full-size GPU settings), writes the executed
copies under ``_build/executed/``, records the seconds each took, and can hand the executed
outputs to Jupyter Book's cache (``_build/.jupyter_cache``) so that the book build that follows
executes nothing a second time.

Command line (``tlcourse timings`` is the same as ``python -m tlcourse.notebooks timings``)::

    python -m tlcourse.notebooks run PATH...      # execute, write _build/executed/PATH + .json
    python -m tlcourse.notebooks run -j 2 --threads 1 --changed book   # what `make book` runs
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

__all__ = ["course_notebooks", "time_limit", "execute_notebook", "mark_graded_outputs", "run_notebooks",
           "is_up_to_date", "seed_book_cache", "check_html",
           "write_timings_table", "main_timings"]

CHAPTER_LIMIT_S = 60.0   # each chapter notebook, CPU defaults, on the 2-core reference machine
SOLUTION_LIMIT_S = 20.0  # each solution notebook
EXECUTED = Path("_build") / "executed"
CACHE = Path("_build") / ".jupyter_cache"
TIMINGS_PAGE = Path("book") / "timings.md"
# nbval compares the outputs of cells with this tag between its run and the stored copy.
NBVAL_CHECK = "nbval-check-output"


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
    if path.parts[0] == "solutions":
        executed = nbformat.read(out, as_version=4)
        if mark_graded_outputs(executed):
            nbformat.write(executed, out)
    record = {"notebook": path.as_posix(), "seconds": round(seconds, 1), "limit": time_limit(path),
              "parameters": parameters or {}, "threads": threads or "default"}
    out.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    return record


def mark_graded_outputs(nb) -> int:
    """Tag every code cell that calls ``grader.check`` or ``grader.check_all`` with
    ``nbval-check-output``; return how many cells were tagged.

    nbval (``--nbval-lax``) then compares those cells' outputs, the grades, between the executed
    copy and its own second run: a solution whose grade changes from one run to the next (an
    unseeded shuffle, a result that depends on thread timing) fails instead of passing by luck.
    """
    tagged = 0
    for cell in nb.cells:
        if cell.cell_type == "code" and "grader.check" in cell.source:
            tags = cell.metadata.setdefault("tags", [])
            if NBVAL_CHECK not in tags:
                tags.append(NBVAL_CHECK)
            tagged += 1
    return tagged


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
    """Problems with the built pages: a chapter without its page, figure or quiz, or with an error
    output; an exercise or solution without its page."""
    root = Path(root)
    problems = []
    for path in sorted(root.glob("exercises/*.ipynb")) + sorted(root.glob("solutions/*.ipynb")):
        page = root / "_build" / "html" / path.relative_to(root).with_suffix(".html")
        if not page.exists():
            problems.append(f"{page}: not built (add it to _toc.yml)")
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
        if "show_questions(" not in html:
            problems.append(f"{page}: no quiz (a chapter ends with quiz.show; see tlcourse/quiz.py)")
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
    run.add_argument("paths", nargs="*", help="notebooks or folders (default: every course notebook)")
    run.add_argument("--threads", type=int, default=None)
    run.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                     help="override a parameter (value parsed as JSON when it can be)")
    run.add_argument("-j", "--jobs", type=int, default=1,
                     help="notebooks executed side by side, each in its own process (give each --threads 1)")
    run.add_argument("--changed", action="store_true",
                     help="skip a notebook whose executed copy is newer than it and ran with its defaults")
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
    paths = []
    for given in args.paths or ["."]:
        given = Path(given)
        if given.is_dir():  # a folder: the course notebooks under it
            paths += [p for p in course_notebooks() if given == Path(".") or given in p.parents]
        elif given.suffix == ".ipynb" and given.exists():
            paths.append(given)
        else:
            parser.error(f"{given}: not a notebook or a folder (give paths relative to the course root)")
    if args.changed and not params:
        paths = [p for p in paths if not is_up_to_date(p)]
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    start = time.perf_counter()
    failed = run_notebooks(paths, params, args.threads, args.jobs)
    print(f"{len(paths)} notebook(s) executed in {time.perf_counter() - start:.0f} s wall "
          f"({args.jobs} at a time){'; failed: ' + ', '.join(failed) if failed else ''}", flush=True)
    return 1 if failed else 0


def is_up_to_date(path: Path | str, root: Path | str = ".") -> bool:
    """True when ``_build/executed/path`` is newer than ``path`` and ran with the default parameters."""
    root, path = Path(root), Path(path)
    out = root / EXECUTED / path
    record = out.with_suffix(".json")
    if not out.exists() or not record.exists() or out.stat().st_mtime < (root / path).stat().st_mtime:
        return False
    return not json.loads(record.read_text()).get("parameters")


def _expected_seconds(path: Path) -> float:
    """Last recorded duration (longest first packs parallel jobs best); unknown ones first."""
    record = EXECUTED / path.with_suffix(".json")
    try:
        return float(json.loads(record.read_text())["seconds"])
    except (OSError, ValueError, KeyError):
        return float("inf")


def run_notebooks(paths: list[Path], parameters: dict | None = None, threads: int | None = None,
                  jobs: int = 1) -> list[str]:
    """Execute ``paths`` (``jobs`` at a time, each in its own process); return the ones that failed.

    Each notebook runs in a separate process so that its ``OMP_NUM_THREADS`` and working folder
    are its own. The longest notebooks (by their last recorded time) start first.
    """
    import concurrent.futures as cf
    import multiprocessing

    paths = sorted(paths, key=_expected_seconds, reverse=True)
    failed = []
    if jobs == 1:
        for path in paths:
            try:
                record = execute_notebook(path, parameters=parameters, threads=threads)
                print(f"{record['seconds']:7.1f} s  {path}", flush=True)
            except Exception as err:  # papermill's error names the cell; go on with the others
                print(f"FAILED   {path}: {str(err).strip().splitlines()[-1] if str(err).strip() else err!r}",
                      file=sys.stderr, flush=True)
                failed.append(str(path))
        return failed
    context = multiprocessing.get_context("spawn")  # no forked torch or kernel-manager state
    with cf.ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        futures = {pool.submit(execute_notebook, path, ".", parameters, threads): path for path in paths}
        for future in cf.as_completed(futures):
            path = futures[future]
            try:
                record = future.result()
                print(f"{record['seconds']:7.1f} s  {path}", flush=True)
            except Exception as err:
                print(f"FAILED   {path}: {str(err).strip().splitlines()[-1] if str(err).strip() else err!r}",
                      file=sys.stderr, flush=True)
                failed.append(str(path))
    return failed


if __name__ == "__main__":
    sys.exit(main())
