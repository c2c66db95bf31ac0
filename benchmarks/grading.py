"""Grading benchmark: a class of 12 submissions graded in sandboxes, and the sandbox's own cost.

``python -m benchmarks.grading [--jobs 2] [--repeat 5]`` (``make bench-grading``) builds the class
of :func:`make_class` in a temporary folder, grades it with ``tlcourse grade`` semantics
(:func:`tlcourse.grading.grade_folder`), and times the same demo notebook graded with and
without bubblewrap. It writes ``benchmarks/GRADING.md``. The tests use :func:`make_class` too
(``tests/test_grading_sandbox.py``), so the benchmark times exactly what is tested.

The class: the three solutions (full marks), the three untouched exercises (zero), and seven
attacks measured on the old grader: a forged grade log with a patched collector (T01), a
notebook that writes an IPython startup file, poisons the cache and tries to overwrite the
package, a classmate's file and the data (T06), test data rebound to the training data (T01),
``os._exit(0)`` after every check (T07), a code cell without ``outputs`` (T07) and a T01 notebook
saved under a T06 name.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "tests" / "fixtures" / "grading" / "_DEMO-demo.ipynb"

FORGE = '''# An attack: forge the grade from inside the notebook.
import json, os
import tlcourse.grading as grading
import tlcourse.grading.plain as plain
import tlcourse.grading.runner as runner
forged = {"chapter_id": "T01", "question": "q2", "passed": True, "points": 1000,
          "max_points": 3, "message": "", "hint": "", "seconds": 0}
for variable in ("TLCOURSE_GRADE_LOG", "TLCOURSE_FEEDBACK_LOG"):
    if os.environ.get(variable):
        with open(os.environ[variable], "a") as log:
            log.write(json.dumps(forged) + "\\n")
grading._run_check = lambda *args, **kwargs: None
for question in grading.load_questions("T01"):
    object.__setattr__(question, "points", 1000)
def forge(namespace, chapter_id, seeds, out, seconds):
    for name, (k, seed) in seeds.items():
        plain.dump(f"{out}/{name}-{k}", {"answer": {"passed": True, "points": 1000}})
runner.collect_into = forge
for name in ("q1", "q2", "q3"):
    for k in range(12):
        plain.dump(f"/sandbox/out/{name}-{k}", {"answer": {"passed": True, "points": 1000}})
'''

ESCAPE = '''# An attack: reach beyond the sandbox.
import os, pathlib, socket, subprocess, sys
CLASS, REPO = {folder!r}, {repo!r}
leak = {{"secret": os.environ.get("TLCOURSE_TEST_SECRET")}}
startup = pathlib.Path.home() / ".ipython" / "profile_default" / "startup"
startup.mkdir(parents=True, exist_ok=True)
(startup / "00-answers.py").write_text("answer_q4 = 'b'\\n")
targets = [pathlib.Path("/root/.ipython/profile_default/startup/00-answers.py"),
           pathlib.Path(REPO) / "tlcourse" / "checks" / "t06.py",
           pathlib.Path(CLASS) / "T06-feature-extractors.ipynb",
           pathlib.Path(f"/proc/{{os.getppid()}}/cwd/../../T06-feature-extractors.ipynb"),
           pathlib.Path(os.environ.get("TLCOURSE_DATA", "/nonexistent")) / "planted.txt"]
for target in targets:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("overwritten")
    except OSError:
        pass
for cached in pathlib.Path(os.environ["TLCOURSE_CACHE"]).rglob("*"):
    if cached.is_file():
        cached.write_bytes(b"poisoned")
try:
    socket.create_connection(("pypi.org", 443), timeout=2).close()
    leak["network"] = True
except OSError:
    leak["network"] = False
late = ("import pathlib, time\\ntime.sleep(4)\\n"
        f"for p in [{{str(pathlib.Path(CLASS) / 'T06-feature-extractors.ipynb')!r}}, "
        "'/sandbox/out/q4-0.json']:\\n"
        "    try:\\n        pathlib.Path(p).write_text('late')\\n    except OSError:\\n        pass\\n")
subprocess.Popen([sys.executable, "-c", late], start_new_session=True, stdin=subprocess.DEVNULL,
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
'''


def _nb(path: Path):
    import nbformat

    return nbformat.read(path, as_version=4)


def _insert_after(nb, cell_id: str, source: str):
    import nbformat

    index = next(i for i, c in enumerate(nb.cells) if c.get("id") == cell_id)
    cell = nbformat.v4.new_code_cell(source)
    nb.cells.insert(index + 1, cell)
    return nb


def make_class(folder: Path, root: Path = ROOT) -> dict[str, dict]:
    """Write every T chapter's solution and exercise, six adversarial notebooks and the demo into
    ``folder`` (41 notebooks with 18 T chapters); return what each must get:
    ``{"file": {"score": points or "max", "error": substring or None, "note": substring}}``."""
    import nbformat

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    expected = {}
    for kind in ("solutions", "exercises"):
        for path in sorted((root / kind).glob("T*.ipynb")):
            target = folder / (path.name if kind == "exercises" else
                               path.name.replace(".ipynb", "-solved.ipynb"))
            target.write_bytes(path.read_bytes())
            expected[target.name] = {"score": "max" if kind == "solutions" else 0, "error": None}
    t01, t06, t07 = (sorted((root / "solutions").glob(f"{c}-*.ipynb"))[0] for c in
                     ("T01", "T06", "T07"))
    e01, e06 = (sorted((root / "exercises").glob(f"{c}-*.ipynb"))[0] for c in ("T01", "T06"))

    nbformat.write(_insert_after(_nb(e01), "c02", FORGE), folder / "T01-0-forged-grade.ipynb")
    expected["T01-0-forged-grade.ipynb"] = {"score": 0, "error": None}

    escape = ESCAPE.format(folder=str(folder.resolve()), repo=str(root))
    nbformat.write(_insert_after(_nb(e06), _first_code_id(_nb(e06), "Grader("), escape),
                   folder / "T06-0-escape.ipynb")
    expected["T06-0-escape.ipynb"] = {"score": 0, "error": None}

    rebound = _insert_after(_nb(t01), "c04", "x_test, y_test = x_pool[train_idx], "
                            "y_pool[train_idx]  # 'test' on the training data")
    nbformat.write(rebound, folder / "T01-1-test-rebound.ipynb")
    expected["T01-1-test-rebound.ipynb"] = {"score": 4, "error": None, "wrong": ["q2"]}

    exits = _nb(t07)
    last_check = max(i for i, c in enumerate(exits.cells) if c.cell_type == "code"
                     and ".check" in c.source)
    exits.cells.insert(last_check + 1, nbformat.v4.new_code_cell("import os\nos._exit(0)"))
    nbformat.write(exits, folder / "T07-0-exits.ipynb")
    expected["T07-0-exits.ipynb"] = {"score": "max", "error": None, "note": "exited with status 0"}

    raw = json.loads(t07.read_text())
    next(c for c in raw["cells"] if c["cell_type"] == "code").pop("outputs")
    (folder / "T07-1-no-outputs.ipynb").write_text(json.dumps(raw))
    expected["T07-1-no-outputs.ipynb"] = {"score": 0, "error": "'outputs' is a required property"}

    (folder / "T06-9-misnamed.ipynb").write_bytes(t01.read_bytes())
    expected["T06-9-misnamed.ipynb"] = {"score": 0, "error": "the chapter is ambiguous"}

    (folder / "_DEMO-1-demo.ipynb").write_bytes(DEMO.read_bytes())
    expected["_DEMO-1-demo.ipynb"] = {"score": 0, "error": "demo chapter"}
    return expected


def _first_code_id(nb, text: str) -> str:
    return next(c.id for c in nb.cells if c.cell_type == "code" and text in c.source)


def _time_demo(isolation: str, repeat: int) -> list[float]:
    from tlcourse.grading.notebook import grade_notebook

    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        report = grade_notebook(DEMO, isolation=isolation, allow_demo=True)
        assert report.score == report.max_score, report.to_text()
        times.append(time.perf_counter() - start)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.grading", description=__doc__)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "GRADING.md")
    args = parser.parse_args(argv)
    from tlcourse.grading import grade_folder
    from tlcourse.grading.sandbox import available

    ok, why = available()
    if not ok:
        print(f"benchmarks.grading: needs bubblewrap: {why}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        expected = make_class(Path(tmp) / "class")
        for name in [n for n, e in expected.items() if e["error"]]:
            (Path(tmp) / "class" / name).unlink()  # error rows cost nothing: time the 12 that run
        for chapter in ("T06", "T07"):  # two more students with correct answers
            solution = sorted((ROOT / "solutions").glob(f"{chapter}-*.ipynb"))[0]
            (Path(tmp) / "class" / f"{chapter}-student-2.ipynb").write_bytes(solution.read_bytes())
        start = time.perf_counter()
        reports = grade_folder(Path(tmp) / "class", jobs=args.jobs)
        batch = time.perf_counter() - start
    sandboxed, plain_run = _time_demo("required", args.repeat), _time_demo("none", args.repeat)
    overhead = statistics.median(sandboxed) - statistics.median(plain_run)
    noise = " (a difference within run-to-run noise)" if abs(overhead) < 0.3 else ""
    rows = "\n".join(f"| {Path(r.notebook).name} | {r.score:g} / {r.max_score:g} | "
                     f"{r.seconds:.1f} |" for r in reports)
    text = f"""# Grading benchmark

Written by `python -m benchmarks.grading --jobs {args.jobs} --repeat {args.repeat}` on
{time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPU cores, {why}.

- A class of {len(reports)} notebooks (5 solutions, 3 blank exercises, 4 attacks) graded with
  `-j {args.jobs}`: **{batch:.1f} s** in all (the goal: under 120 s on 2 cores).
- The sandbox's own cost, the demo notebook graded {args.repeat} times each way: median
  {statistics.median(sandboxed):.2f} s in bubblewrap, {statistics.median(plain_run):.2f} s
  without; **{overhead:+.2f} s per submission** (the goal: under 1 s){noise}.

| notebook | score | seconds (its sandbox run and grading; two run at once) |
|---|---|---|
{rows}
"""
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
