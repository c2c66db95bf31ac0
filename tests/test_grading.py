"""Tests of tlcourse.grading: exercises from solutions, checks in a notebook, the notebook grader.

Kernel-executing tests (``grade_notebook``) are kept to four, each about 3 s; the rest run
in-process.
"""
from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from tlcourse import grading
from tlcourse.grading import (
    LOG_ENV,
    CheckResult,
    Grader,
    Question,
    Report,
    build_exercises,
    grade_notebook,
    load_questions,
    main_exercises,
    main_grade,
    make_exercise,
)

DEMO = Path(__file__).parent / "fixtures" / "grading" / "_DEMO-demo.ipynb"
PLACEHOLDER = 'raise NotImplementedError("replace this line with your code")'


def _solution(*cells, minor=5):
    nb = new_notebook(cells=list(cells), metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python", "version": "3.11"}, "papermill": {"duration": 1.5}})
    for index, cell in enumerate(nb.cells):
        cell.id = f"c{index}"
    nb.nbformat_minor = minor
    return nb


def _demo_with(tmp_path, name="_DEMO-student.ipynb", **sources):
    """The demo solution with cells replaced by id (``q1_code="..."``) or added (``..._after``)."""
    nb = nbformat.read(DEMO, as_version=4)
    for key, source in sources.items():
        cell_id = key.replace("_after", "").replace("_", "-")
        index = next(i for i, c in enumerate(nb.cells) if c.id == cell_id)
        if key.endswith("_after"):
            nb.cells.insert(index + 1, new_code_cell(source))
        else:
            nb.cells[index].source = source
    path = tmp_path / name
    nbformat.write(nb, path)
    return path


# ---------------------------------------------------------------- make_exercise
def test_make_exercise_replaces_regions_keeping_indentation():
    source = ("import math\n"
              "def f(x):\n"
              "    y = 1\n"
              "    # BEGIN SOLUTION\n"
              "    if x:\n"
              "        return math.sqrt(x) + y\n"
              "    # END SOLUTION\n"
              "    return y\n"
              "class A:\n"
              "    def g(self):\n"
              "        # BEGIN SOLUTION\n"
              "        return 42\n"
              "        # END SOLUTION\n"
              "# BEGIN SOLUTION\n"
              "secret = f(4)\n"
              "# END SOLUTION")
    exercise = make_exercise(_solution(new_code_cell(source)))
    assert exercise.cells[1].source == (
        "import math\n"
        "def f(x):\n"
        "    y = 1\n"
        "    # YOUR CODE HERE\n"
        f"    {PLACEHOLDER}\n"
        "    return y\n"
        "class A:\n"
        "    def g(self):\n"
        "        # YOUR CODE HERE\n"
        f"        {PLACEHOLDER}\n"
        "# YOUR CODE HERE\n"
        f"{PLACEHOLDER}")
    compile(exercise.cells[1].source, "exercise", "exec")  # still valid Python


@pytest.mark.parametrize("line, expected", [
    ("x = compute(3)  # SOLUTION", "x = ...  # YOUR CODE HERE"),
    ("    total: float = a + b # SOLUTION", "    total: float = ...  # YOUR CODE HERE"),
    ("        acc += weights[i] * 2#SOLUTION", "        acc += ...  # YOUR CODE HERE"),
    ("    return torch.mean(x)  # SOLUTION", "    return ...  # YOUR CODE HERE"),
    ('label = "élan # not the marker"  # SOLUTION', "label = ...  # YOUR CODE HERE"),
    ("a, b = b, a  # SOLUTION", "a, b = ...  # YOUR CODE HERE"),
])
def test_solution_one_liners_keep_the_target_and_hide_the_value(line, expected):
    exercise = make_exercise(_solution(new_code_cell(f"before = 1\n{line}\nafter = 2")))
    assert exercise.cells[1].source == f"before = 1\n{expected}\nafter = 2"


@pytest.mark.parametrize("source, words", [
    ("print(x)  # SOLUTION", "cell 1, line 1"),
    ("# BEGIN SOLUTION\nx = 1", "never closed"),
    ("x = 1\n# END SOLUTION", "without BEGIN"),
    ("# BEGIN SOLUTION\n# BEGIN SOLUTION\n# END SOLUTION", "inside the region"),
])
def test_malformed_solution_markers_fail_loudly(source, words):
    with pytest.raises(ValueError, match=words):
        make_exercise(_solution(new_code_cell(source)))


def test_make_exercise_drops_solution_only_cells_and_clears_outputs():
    solution = _solution(
        new_markdown_cell("Intro"),
        new_code_cell("n = 3", metadata={"tags": ["parameters"], "execution": {"t": "now"}},
                      execution_count=7,
                      outputs=[nbformat.v4.new_output("stream", name="stdout", text="hi\n")]),
        new_markdown_cell("Answer explained", metadata={"tags": ["solution-only"]}),
        new_code_cell("print('answer')", metadata={"tags": ["solution-only", "other"]}),
    )
    exercise = make_exercise(solution, source_name="T99-x.ipynb")
    assert [c.cell_type for c in exercise.cells] == ["markdown", "markdown", "code"]
    assert "solutions/T99-x.ipynb" in exercise.cells[0].source
    assert "tlcourse exercises" in exercise.cells[0].source
    code = exercise.cells[2]
    assert code.outputs == [] and code.execution_count is None
    assert code.metadata == {"tags": ["parameters"]}  # tags kept, volatile metadata dropped
    assert dict(exercise.metadata) == {"kernelspec": solution.metadata.kernelspec}
    assert solution.cells[1].outputs and len(solution.cells) == 4  # the solution is not modified
    nbformat.validate(exercise)
    old = _solution(new_code_cell("x = 1"), minor=4)
    for cell in old.cells:
        del cell["id"]
    nbformat.validate(make_exercise(old))  # no cell ids before nbformat 4.5


def test_build_exercises_is_deterministic_and_check_reports_drift(tmp_path):
    solutions, exercises = tmp_path / "solutions", tmp_path / "exercises"
    solutions.mkdir()
    (solutions / DEMO.name).write_bytes(DEMO.read_bytes())
    nbformat.write(_solution(new_code_cell("y = 2 * 21  # SOLUTION")), solutions / "T99-two.ipynb")

    assert build_exercises(solutions, exercises, check=True) == [exercises / "T99-two.ipynb",
                                                                 exercises / DEMO.name]
    assert not exercises.exists()  # check writes nothing
    written = build_exercises(solutions, exercises)
    first = {p.name: p.read_bytes() for p in written}
    assert build_exercises(solutions, exercises, check=True) == []
    for path in written:
        path.unlink()
    assert {p.name: p.read_bytes() for p in build_exercises(solutions, exercises)} == first
    text = first[DEMO.name].decode()
    assert text.endswith("}\n") and "return 2 * x" not in text and "sum(values)" not in text
    assert "statistics.mean" not in text  # the solution-only cell
    buffer = io.StringIO()
    nbformat.write(make_exercise(nbformat.read(DEMO, 4), DEMO.name), buffer)
    assert text == buffer.getvalue()

    (exercises / "T99-two.ipynb").write_text(text)
    assert build_exercises(solutions, exercises, check=True) == [exercises / "T99-two.ipynb"]
    assert main_exercises(["--root", str(tmp_path), "--check"]) == 1
    assert main_exercises(["--root", str(tmp_path)]) == 0
    assert main_exercises(["--root", str(tmp_path), "--check"]) == 0
    assert main_exercises(["--root", str(tmp_path / "nowhere")]) == 2


# ---------------------------------------------------------------- Grader in-process
def test_questions_are_found_by_chapter_id():
    assert [q.name for q in load_questions("_demo")] == ["q1", "q2"]
    with pytest.raises(ValueError, match="available: .*_DEMO"):
        Grader("T404")
    with pytest.raises(TypeError, match="tuple"):
        Question("q1", points=1, names="x", check=lambda ns: None)


def test_check_reads_the_callers_globals(monkeypatch, capsys):
    grader = Grader("_DEMO")
    monkeypatch.delitem(globals(), "double", raising=False)
    result = grader.check("q1")
    assert result == CheckResult("q1", False, 0, 2, "define `double` first (run the cell that "
                                 "computes it)", "Return the argument times two.", result.seconds)
    assert "q1 failed: 0 / 2 points" in capsys.readouterr().out

    monkeypatch.setitem(globals(), "double", lambda x: 2 * x)
    result = grader.check("q1")
    assert (result.passed, result.points, result.max_points, result.message) == (True, 2, 2, "")
    assert capsys.readouterr().out.strip() == "q1 passed: 2 / 2 points"

    monkeypatch.setitem(globals(), "double", lambda x: x + 2)
    # startswith: pytest may rewrite the check's assert and append its own explanation
    assert grader.check("q1").message.startswith("double(0) returned 2; expected 0")


def _forever(x):
    """Loops for 5 s, not for ever: a broken time limit then fails the test, not hangs it."""
    end = time.monotonic() + 5
    while time.monotonic() < end:
        try:
            pass
        except Exception:  # a student's catch-all must not swallow the time limit
            pass


@pytest.mark.parametrize("student, words", [
    (lambda x: 1 / 0, "ZeroDivisionError: division by zero"),
    (lambda x: exec("raise SystemExit(3)"), "SystemExit: 3"),
    (lambda x: exec("raise KeyboardInterrupt"), "interrupted"),
    (_forever, "stopped after 0.3 s"),
])
def test_check_never_propagates_the_students_errors(student, words):
    start = time.perf_counter()
    result = Grader("_DEMO", time_limit=0.3, quiet=True).check("q1", namespace={"double": student})
    assert not result.passed and result.points == 0 and words in result.message
    assert time.perf_counter() - start < 3


def test_check_logs_json_lines_and_check_all_sums(tmp_path, monkeypatch, capsys):
    log = tmp_path / "log.jsonl"
    monkeypatch.setenv(LOG_ENV, str(log))
    grader = Grader("_DEMO")
    assert grader.check("q7", namespace={}).message.startswith("_DEMO has no question 'q7'")
    report = grader.check_all(namespace={"double": lambda x: 2 * x, "mean_of": len})
    assert (report.score, report.max_score) == (2, 3)
    assert "total     2 / 3" in capsys.readouterr().out
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(r["chapter_id"], r["question"], r["points"]) for r in records] == [
        ("_DEMO", "q7", 0), ("_DEMO", "q1", 2), ("_DEMO", "q2", 0)]


def test_report_text_and_json():
    results = [CheckResult("q1", True, 2, 2, "", "h1", 0.1),
               CheckResult("q2", False, 0, 1.5, "wrong\nvalue", "h2", 0.2)]
    report = Report("_DEMO", results, "x.ipynb", notes=["cell 3 (x): ValueError: v"])
    lines = report.to_text().splitlines()
    assert lines[0] == "x.ipynb (chapter _DEMO)"
    assert lines[1:] == ["note: cell 3 (x): ValueError: v",
                         "question  points   result",
                         "q1        2 / 2    passed",
                         "q2        0 / 1.5  failed: wrong value",
                         "                   hint: h2",
                         "total     2 / 3.5"]
    data = json.loads(report.to_json())
    assert data["score"] == sum(r["points"] for r in data["results"]) == 2
    assert data["max_score"] == 3.5 and data["error"] is None


# ---------------------------------------------------------------- grade_notebook
def test_unreadable_notebooks_give_an_error_report(tmp_path, capsys):
    missing = grade_notebook(tmp_path / "_DEMO-missing.ipynb")
    assert missing.error.startswith("no notebook at") and missing.score == 0
    assert missing.max_score == 3 and len(missing.results) == 2

    corrupt = tmp_path / "_DEMO-corrupt.ipynb"
    corrupt.write_text('{"cells": [')
    assert "cannot read" in grade_notebook(corrupt).error
    corrupt.write_text("{}")
    assert "cannot read" in grade_notebook(corrupt).error

    assert "file name" in grade_notebook(tmp_path / "homework.ipynb").error
    assert "unknown chapter id 'T404'" in grade_notebook(tmp_path / "T404-x.ipynb").error

    out = tmp_path / "report.json"
    assert main_grade([str(corrupt), "--json", str(out)]) == 1
    assert json.loads(out.read_text())["score"] == 0
    assert "error: cannot read" in capsys.readouterr().out


def test_solution_scores_full_marks_and_the_file_is_untouched(tmp_path, capsys):
    student = tmp_path / "work" / DEMO.name
    student.parent.mkdir()
    student.write_bytes(DEMO.read_bytes())
    os.utime(student, ns=(1_000_000_000, 1_000_000_000))
    before = (student.read_bytes(), student.stat().st_mtime_ns)
    out = tmp_path / "report.json"

    assert main_grade([str(student), "--json", str(out), "--timeout", "30"]) == 0
    assert (student.read_bytes(), student.stat().st_mtime_ns) == before
    assert sorted(p.name for p in student.parent.iterdir()) == [DEMO.name]  # nothing beside it
    data = json.loads(out.read_text())
    assert (data["score"], data["max_score"], data["error"]) == (3, 3, None)
    assert data["score"] == sum(r["points"] for r in data["results"])
    assert [r["passed"] for r in data["results"]] == [True, True]
    assert "total     3 / 3" in capsys.readouterr().out


def test_untouched_exercise_scores_zero(tmp_path):
    (tmp_path / "solutions").mkdir()
    (tmp_path / "solutions" / DEMO.name).write_bytes(DEMO.read_bytes())
    [exercise] = build_exercises(tmp_path / "solutions", tmp_path / "exercises")
    report = grade_notebook(exercise)
    assert report.error is None and report.score == 0 and report.max_score == 3
    q1, q2 = report.results
    assert q1.message == "NotImplementedError: replace this line with your code"
    assert q2.message == "define `mean_of` first (run the cell that computes it)"
    assert q2.hint and any("NotImplementedError" in note for note in report.notes)


def test_a_bug_in_one_answer_costs_only_that_question(tmp_path):
    path = _demo_with(tmp_path, q1_code="def double(x):\n    return x / 0")
    report = grade_notebook(path)
    assert report.error is None
    assert [(r.question, r.points) for r in report.results] == [("q1", 0), ("q2", 1)]
    assert report.results[0].message == "ZeroDivisionError: division by zero"


@pytest.mark.slow
def test_endless_cells_and_checks_are_stopped(tmp_path):
    # double() never returns (the per-question limit stops its check) and a later cell loops
    # forever (the cell limit interrupts it); q2, defined after both, is still graded.
    path = _demo_with(tmp_path, q1_code="def double(x):\n    while True:\n        pass",
                      q1_check="", q2_text_after="while True:\n    pass")
    start = time.perf_counter()
    report = grade_notebook(path, cell_timeout=5, question_timeout=1)
    assert time.perf_counter() - start < 25  # 5 + 1 s of limits, kernel start; 37 s if broken
    assert report.error is None
    q1, q2 = report.results
    assert (q1.points, q2.points) == (0, 1)
    assert q1.message.startswith("stopped after 1 s")
    assert any("stopped after 5 s (the cell time limit)" in note for note in report.notes)


def test_grade_log_keeps_each_questions_best_result(tmp_path):
    log = tmp_path / "log.jsonl"
    lines = [dict(chapter_id="_DEMO", question="q1", passed=True, points=2, max_points=2,
                  message="", hint="", seconds=0.1),
             dict(chapter_id="_DEMO", question="q1", passed=False, points=0, max_points=2,
                  message="later", hint="", seconds=0.1),
             dict(chapter_id="T01", question="q2", passed=True, points=5, max_points=5,
                  message="", hint="", seconds=0.1)]
    log.write_text("\n".join(json.dumps(line) for line in lines) + "\nnot json\n")
    best = grading._best_results(log, "_DEMO")
    assert list(best) == ["q1"] and best["q1"].passed
