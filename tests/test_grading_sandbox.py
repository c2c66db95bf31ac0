"""The instructor's grader: notebooks run in bubblewrap sandboxes, grades computed outside them.

Every attack and failure measured on the old grader is a test here (issue 8): the forged log and
patched checker, the IPython startup file, the poisoned cache, the classmate's file, the detached
process, the 30 GB allocation, ``os._exit``, the ``BaseException`` loop, rebound test data and
malformed or misnamed notebooks. The sandbox tests need ``bwrap``: on Linux they fail, never skip,
when it is missing (``make test`` installs it with apt-get when run as root).
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
import sys
import time
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell

from benchmarks.grading import make_class
from tlcourse.grading import build_exercises, grade_folder, sandbox
from tlcourse.grading.batch import main_grade
from tlcourse.grading.notebook import grade_notebook, grade_run, inspect_submission, \
    run_submission

ROOT = Path(__file__).resolve().parents[1]
DEMO = Path(__file__).parent / "fixtures" / "grading" / "_DEMO-demo.ipynb"


@pytest.fixture
def bwrap():
    if not sys.platform.startswith("linux"):
        pytest.skip("bubblewrap sandboxes are Linux only")
    ok, why = sandbox.available()
    assert ok, f"the sandbox tests need bubblewrap: {why} (make test installs it as root)"


def _demo(tmp_path, name="_DEMO-student.ipynb", after=None, replace=None, blank=False):
    """The demo solution (or its exercise) with cells replaced by id or added after an id."""
    nb = nbformat.read(DEMO, as_version=4)
    if blank:
        (tmp_path / "sol").mkdir(exist_ok=True)
        (tmp_path / "sol" / DEMO.name).write_bytes(DEMO.read_bytes())
        nb = nbformat.read(build_exercises(tmp_path / "sol", tmp_path / "ex")[0], as_version=4)
    for cell_id, source in (replace or {}).items():
        next(c for c in nb.cells if c.id == cell_id).source = source
    for cell_id, source in reversed(list((after or {}).items())):
        index = next(i for i, c in enumerate(nb.cells) if c.id == cell_id)
        nb.cells.insert(index + 1, new_code_cell(source))
    path = tmp_path / name
    nbformat.write(nb, path)
    return path


def _grade(path, **kw):
    kw.setdefault("isolation", "required")
    return grade_notebook(path, allow_demo=True, **kw)


def _points(report):
    return {r.question: r.points for r in report.results}


# ---------------------------------------------------------------- the basics, sandboxed
def test_solution_full_blank_zero_and_the_file_is_untouched(bwrap, tmp_path):
    (tmp_path / "class").mkdir()
    student = _demo(tmp_path / "class", name="_DEMO-a.ipynb")
    os.utime(student, ns=(1_000_000_000, 1_000_000_000))
    before = (student.read_bytes(), student.stat().st_mtime_ns)
    report = _grade(student)
    assert (report.score, report.max_score, report.error, report.isolated) == (3, 3, None, True)
    assert report.sha256 == hashlib.sha256(before[0]).hexdigest()
    assert (student.read_bytes(), student.stat().st_mtime_ns) == before
    assert sorted(p.name for p in student.parent.iterdir()) == ["_DEMO-a.ipynb"]

    blank = _grade(_demo(tmp_path, blank=True))
    assert blank.error is None and blank.score == 0 and blank.max_score == 3
    q1, q2 = blank.results
    assert q1.message == "NotImplementedError: replace this line with your code"
    assert q2.message == "define `mean_of` first (run the cell that computes it)"


def test_a_forged_log_patched_checker_and_forged_answers_earn_nothing(bwrap, tmp_path):
    forge = (
        "import json, os\nimport tlcourse.grading as g, tlcourse.grading.plain as plain\n"
        "import tlcourse.grading.runner as runner\n"
        "for var in ('TLCOURSE_GRADE_LOG', 'TLCOURSE_FEEDBACK_LOG'):\n"
        "    open(os.environ.get(var, '/sandbox/out/log.jsonl'), 'a').write(json.dumps({"
        "'chapter_id': '_DEMO', 'question': 'q1', 'passed': True, 'points': 1000}) + '\\n')\n"
        "g._run_check = lambda *a, **k: None\n"
        "for q in g.load_questions('_DEMO'):\n    object.__setattr__(q, 'points', 1000)\n"
        "def forge(ns, chapter, seeds, out, seconds):\n"
        "    for name, (k, seed) in seeds.items():\n"
        "        plain.dump(f'{out}/{name}-{k}', {'answer': {'inputs': [], 'outputs': []}})\n"
        "runner.collect_into = forge\n"
        "for k in range(9):\n"
        "    plain.dump(f'/sandbox/out/q1-{k}', {'answer': {'inputs': [1.0], 'outputs': [2.0]}})\n"
        "    plain.dump(f'/sandbox/out/q2-{k}', {'answer': []})\n")
    os.environ["TLCOURSE_GRADE_LOG"] = str(tmp_path / "host-log.jsonl")
    try:
        report = _grade(_demo(tmp_path, blank=True, after={"setup": forge}))
    finally:
        del os.environ["TLCOURSE_GRADE_LOG"]
    assert (report.score, report.max_score) == (0, 3), report.to_text()
    assert not (tmp_path / "host-log.jsonl").exists()
    assert all("malformed" in r.message for r in report.results)


def test_the_sandbox_sees_no_secret_host_file_network_or_process(bwrap, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    (cache / "models").mkdir(parents=True)
    (cache / "models" / "digit.pt").write_bytes(b"trusted weights")
    monkeypatch.setenv("TLCOURSE_CACHE", str(cache))
    monkeypatch.setenv("TLCOURSE_TEST_SECRET", "hunter2")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    classmate = tmp_path / "class" / "_DEMO-classmate.ipynb"
    classmate.parent.mkdir()
    classmate.write_bytes(DEMO.read_bytes())
    package = Path(sandbox.__file__).parents[1]
    probe = f"""
import json, os, pathlib, resource, socket, subprocess, sys
def where(pid):
    try:
        return os.readlink(f"/proc/{{pid}}/cwd")
    except OSError:
        return "denied"
seen = {{"secret": os.environ.get("TLCOURSE_TEST_SECRET"), "uid": os.getuid(),
        "ppid_cwd": where(os.getppid()),
        "processes": sorted(pathlib.Path(f"/proc/{{p}}/cmdline").read_bytes().split(b"\\0")[0]
                            .decode() for p in os.listdir("/proc") if p.isdigit()),
        "data_limit": resource.getrlimit(resource.RLIMIT_DATA)[0],
        "nproc_limit": resource.getrlimit(resource.RLIMIT_NPROC)[0],
        "fsize_limit": resource.getrlimit(resource.RLIMIT_FSIZE)[0],
        "cpu_limit": resource.getrlimit(resource.RLIMIT_CPU)[0],
        "cache_copy": sorted(str(p.relative_to(os.environ["TLCOURSE_CACHE"]))
                             for p in pathlib.Path(os.environ["TLCOURSE_CACHE"]).rglob("*"))}}
writable = {{}}
for name, target in [("package", {str(package / "checks" / "_demo.py")!r}),
                     ("classmate", {str(classmate)!r}), ("host_cache", {str(cache / "models" / "digit.pt")!r}),
                     ("data", os.path.join(os.environ.get("TLCOURSE_DATA", "/nonexistent"), "x")),
                     ("host_home", "/root/.ipython/profile_default/startup/00-x.py"),
                     ("via_proc", f"/proc/{{os.getppid()}}/cwd/../../_DEMO-classmate.ipynb")]:
    try:
        with open(target, "a") as f:
            f.write("overwritten")
        writable[name] = True
    except OSError:
        writable[name] = False
seen["writable"] = writable
startup = pathlib.Path.home() / ".ipython/profile_default/startup"
startup.mkdir(parents=True, exist_ok=True)
(startup / "00-answers.py").write_text("def double(x):\\n    return 2 * x\\n")
for p in pathlib.Path(os.environ["TLCOURSE_CACHE"]).rglob("*"):
    if p.is_file():
        p.write_bytes(b"poisoned")
try:
    socket.create_connection(("127.0.0.1", {port}), timeout=2).close()
    seen["host_port"] = True
except OSError:
    seen["host_port"] = False
late = "import time, pathlib\\ntime.sleep(3)\\npathlib.Path('/sandbox/out/late.txt').write_text('x')"
subprocess.Popen([sys.executable, "-c", late], start_new_session=True, stdin=subprocess.DEVNULL,
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
pathlib.Path("/sandbox/out/probe.json").write_text(json.dumps(seen))
"""
    sub = inspect_submission(_demo(tmp_path, after={"setup": probe}), allow_demo=True)
    run = run_submission(sub, sandbox.Limits(memory=3 * 2**30), isolate=True)
    try:
        assert (run.scratch.out / "probe.json").exists(), run.notes
        seen = json.loads((run.scratch.out / "probe.json").read_text())
        time.sleep(4)  # the detached process would have written by now, had it survived
        assert not (run.scratch.out / "late.txt").exists(), "a detached process outlived grading"
    finally:
        report = grade_run(sub, run)
        listener.close()
    assert report.score == 3 and not run.scratch.root.exists()
    assert seen["secret"] is None
    assert seen["ppid_cwd"] in ("denied", "/sandbox/work")  # the runner is not dumpable
    assert all(p.endswith(("python", "python3", "python3.11", "bwrap")) for p in seen["processes"]), seen
    assert seen["writable"] == dict.fromkeys(
        ["package", "classmate", "host_cache", "data", "host_home", "via_proc"], False)
    assert seen["host_port"] is False
    assert seen["cache_copy"] == ["models", "models/digit.pt"]
    assert seen["data_limit"] == 3 * 2**30 and seen["nproc_limit"] == 512
    assert seen["fsize_limit"] == 512 * 2**20 and seen["cpu_limit"] > 0
    if os.getuid() == 0:
        assert seen["uid"] >= sandbox.UID_BASE
    assert (cache / "models" / "digit.pt").read_bytes() == b"trusted weights"
    assert classmate.read_bytes() == DEMO.read_bytes()
    assert not Path("/root/.ipython/profile_default/startup/00-x.py").exists()
    # the next submission starts from a fresh HOME: the startup file defined `double`, in vain
    assert _points(_grade(_demo(tmp_path, name="_DEMO-next.ipynb", blank=True))) == {"q1": 0, "q2": 0}


# ---------------------------------------------------------------- faults lose only what they touch
def test_os_exit_after_the_checks_keeps_the_points(bwrap, tmp_path):
    report = _grade(_demo(tmp_path, after={"q2-check": "import os\nos._exit(0)", }))
    assert report.score == 3, report.to_text()
    assert any("the kernel exited with status 0" in n for n in report.notes), report.notes


def test_a_30_gb_allocation_hits_the_memory_limit_and_costs_nothing_else(bwrap, tmp_path):
    report = _grade(_demo(tmp_path, after={"q1-check": "import numpy as np\n"
                                           "big = np.ones(30 * 2**30 // 8)"}), memory_gib=2)
    assert report.score == 3, report.to_text()
    assert any("MemoryError" in n and "out of memory: the limit is 2 GiB" in n
               for n in report.notes), report.notes


def test_a_cell_that_swallows_every_interrupt_is_killed_within_the_limits(bwrap, tmp_path):
    loop = ("import time\nwhile True:\n    try:\n        time.sleep(60)\n"
            "    except BaseException:\n        pass")
    start = time.perf_counter()
    report = _grade(_demo(tmp_path, after={"q1-check": loop}), cell_timeout=3, total_timeout=20)
    assert time.perf_counter() - start < 20, "the cell and total limits were not respected"
    assert _points(report) == {"q1": 2, "q2": 0}, report.to_text()
    assert any("did not stop when interrupted: the kernel was killed" in n for n in report.notes)
    assert any(n.endswith("never ran: an earlier cell did not stop") for n in report.notes)
    assert not any("cell 9" in n and "stopped" in n for n in report.notes)  # never ran != stopped


def test_endless_cells_are_stopped_and_the_total_limit_holds(bwrap, tmp_path):
    path = _demo(tmp_path, after={"q1-code": "while True:\n    pass",
                                  "q2-check": "import time\ntime.sleep(30)\n#\n" * 3})
    nb = nbformat.read(path, as_version=4)  # five sleeping cells: 15 s, past the total limit
    sleeper = next(i for i, c in enumerate(nb.cells) if "sleep" in c.source)
    nb.cells[sleeper: sleeper + 1] = [new_code_cell("import time\ntime.sleep(30)")
                                      for _ in range(5)]
    nbformat.write(nb, path)
    start = time.perf_counter()
    report = _grade(path, cell_timeout=3, total_timeout=15)
    assert time.perf_counter() - start < 15 + 2 * 30 + 10
    assert _points(report) == {"q1": 2, "q2": 1}, report.to_text()
    assert any("was stopped after 3 s (the cell limit)" in n for n in report.notes), report.notes
    assert any("(the total limit)" in n or "reached the total limit" in n for n in report.notes), \
        report.notes


def test_an_endless_function_fails_its_question_only(bwrap, tmp_path):
    path = _demo(tmp_path, replace={"q1-code": "def double(x):\n    while True:\n        pass",
                                    "q1-check": ""})
    report = _grade(path, collect_timeout=1)
    assert _points(report) == {"q1": 0, "q2": 1}
    assert report.results[0].message.startswith("stopped after 1 s")


# ---------------------------------------------------------------- what cannot be graded
def test_malformed_misnamed_and_demo_notebooks_give_clear_errors(tmp_path, capsys):
    def error(path, **kw):
        return inspect_submission(path, **kw).error

    raw = json.loads(DEMO.read_text())
    next(c for c in raw["cells"] if c["cell_type"] == "code").pop("outputs")
    (tmp_path / "_DEMO-no-outputs.ipynb").write_text(json.dumps(raw))
    assert "'outputs' is a required property" in error(tmp_path / "_DEMO-no-outputs.ipynb",
                                                       allow_demo=True)
    (tmp_path / "T01-x.ipynb").write_text('{"cells": [')
    assert error(tmp_path / "T01-x.ipynb").startswith("not a Jupyter notebook")
    assert error(tmp_path / "missing.ipynb").startswith("cannot read")
    t01 = ROOT / "solutions" / "T01-what-is-transfer-learning.ipynb"
    (tmp_path / "T06-feature-extractors.ipynb").write_bytes(t01.read_bytes())
    message = error(tmp_path / "T06-feature-extractors.ipynb")
    assert "ambiguous" in message and "T01" in message and "file name says T06" in message
    assert error(t01, chapter_id="T07").startswith("the chapter is ambiguous")
    (tmp_path / "_DEMO-x.ipynb").write_bytes(DEMO.read_bytes())
    assert "demo chapter" in error(tmp_path / "_DEMO-x.ipynb")
    nb = nbformat.read(DEMO, as_version=4)
    nb.cells[1].source += '\nother = Grader("T01")'
    nbformat.write(nb, tmp_path / "homework.ipynb")
    assert "several chapters" in error(tmp_path / "homework.ipynb")
    nb = nbformat.read(DEMO, as_version=4)
    nb.cells = [c for c in nb.cells if "Grader" not in c.source]
    nbformat.write(nb, tmp_path / "homework.ipynb")
    assert error(tmp_path / "homework.ipynb").startswith("cannot tell the chapter")

    out = tmp_path / "report.json"
    assert main_grade([str(tmp_path / "_DEMO-no-outputs.ipynb"), "--json", str(out)]) == 1
    data = json.loads(out.read_text())
    assert data["score"] == 0 and data["error"].startswith("not a valid Jupyter notebook")
    assert "error:" in capsys.readouterr().out


def test_without_a_sandbox_single_notebooks_say_so_and_batches_refuse(tmp_path, monkeypatch,
                                                                     capsys):
    monkeypatch.setattr(sandbox, "available", lambda: (False, "bwrap is not installed"))
    report = grade_notebook(_demo(tmp_path), allow_demo=True)
    assert report.score == 3 and report.isolated is False
    assert report.notes[0].startswith("NOT isolated: bwrap is not installed")
    (tmp_path / "class").mkdir()
    for name in ("T01-a.ipynb", "T01-b.ipynb"):
        (tmp_path / "class" / name).write_bytes(
            (ROOT / "exercises" / "T01-what-is-transfer-learning.ipynb").read_bytes())
    assert main_grade([str(tmp_path / "class"), "--csv", str(tmp_path / "g.csv")]) == 2
    assert "refusing to grade 2 notebooks without a sandbox" in capsys.readouterr().err
    assert not (tmp_path / "g.csv").exists()
    assert "cannot grade in a sandbox" in grade_folder(tmp_path / "class")[0].error


# ---------------------------------------------------------------- the class, in batch
def _digest(paths) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in paths if p.is_file()}


def _listing(root: Path) -> dict[str, tuple]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")} \
        if root.is_dir() else {}


@pytest.mark.slow
def test_batch_grades_the_class_and_changes_no_file_outside_scratch(bwrap, tmp_path,
                                                                   monkeypatch, capsys):
    from tlcourse import zoo

    zoo.pretrained_digit_cnn(seed=0)  # the session cache, warm before it is hashed
    monkeypatch.setenv("TLCOURSE_TEST_SECRET", "hunter2")
    folder = tmp_path / "class"
    expected = make_class(folder)
    cache = Path(os.environ["TLCOURSE_CACHE"])
    data = Path(os.environ.get("TLCOURSE_DATA", "/nonexistent"))
    before = (_digest(folder.rglob("*")), _digest(Path(sandbox.__file__).parents[1].rglob("*.py")),
              _digest(cache.rglob("*")), _listing(data), _listing(Path.home() / ".ipython"))
    csv_path, json_path = tmp_path / "grades.csv", tmp_path / "grades.json"
    start = time.perf_counter()
    status = main_grade([str(folder), "--csv", str(csv_path), "--json", str(json_path), "-j", "2"])
    seconds = time.perf_counter() - start
    time.sleep(5)  # a detached process from the escape notebook would have written by now
    after = (_digest(folder.rglob("*")), _digest(Path(sandbox.__file__).parents[1].rglob("*.py")),
             _digest(cache.rglob("*")), _listing(data), _listing(Path.home() / ".ipython"))
    assert status == 1  # three rows are errors
    # the trusted side may add to its own cache (decoded test splits); it changes nothing there
    cache_after = {path: after[2].get(path) for path in before[2]}
    assert (after[:2], cache_after, after[3:]) == (before[:2], before[2], before[3:]), (
        "grading changed a file outside its scratch folders")
    import csv

    rows = {Path(r["file"]).name: r for r in csv.DictReader(csv_path.open())}
    assert set(rows) == set(expected)
    for name, want in expected.items():
        row = rows[name]
        assert row["sha256"] == hashlib.sha256((folder / name).read_bytes()).hexdigest()
        if want["error"]:
            assert want["error"] in row["error"] and float(row["total"]) == 0, (name, row)
            continue
        assert row["error"] == "", (name, row)
        score = float(row["max"]) if want["score"] == "max" else want["score"]
        assert float(row["total"]) == score, (name, row)
        for question in want.get("wrong", []):
            assert float(row[question]) == 0, (name, row)
        if want.get("note"):
            assert want["note"] in row["notes"], (name, row)
    reports = {Path(r["notebook"]).name: r for r in json.loads(json_path.read_text())}
    assert all(r["isolated"] for r in reports.values() if not r["error"])
    print(f"batch of {len(rows)} notebooks graded in {seconds:.1f} s")
