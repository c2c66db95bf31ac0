"""Every course notebook: stored without outputs, with a parameters cell, executed with papermill.

Each notebook is executed once, here; the copies land in _build/executed/, where the book build
reuses them and nbval runs the solutions again to compare their grades (the Makefile's `nbval`).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
import pytest

from tlcourse import quiz
from tlcourse.grading import load_questions
from tlcourse.grading.feedback import FEEDBACK_LOG_ENV
from tlcourse.notebooks import course_notebooks, execute_notebook, time_limit

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = course_notebooks(ROOT)
ALL_STORED = NOTEBOOKS + sorted(p.relative_to(ROOT) for p in ROOT.glob("exercises/*.ipynb"))
# Kernels run side by side in CI (pytest -n 2, one thread each), which is slower than the quiet,
# one-at-a-time setting of the budget in book/timings.md; allow for that, and no more.
PARALLEL_SLACK = 1.5


def test_course_has_notebooks():
    assert any(p.parts[0] == "book" for p in NOTEBOOKS)
    assert any(p.parts[0] == "solutions" for p in NOTEBOOKS)


@pytest.mark.parametrize("path", ALL_STORED, ids=str)
def test_stored_without_outputs(path):
    nb = nbformat.read(ROOT / path, as_version=4)
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not dirty, f"{path}: cells {dirty} have outputs; clear them before committing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=str)
def test_parameters_cell(path):
    nb = nbformat.read(ROOT / path, as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{path}: needs exactly one cell tagged 'parameters'"
    first_code = next(c for c in nb.cells if c.cell_type == "code")
    assert first_code is tagged[0], f"{path}: the parameters cell must be the first code cell"
    assert "GPU" in tagged[0].source, f"{path}: name the full-size GPU values beside the CPU defaults"


@pytest.mark.notebooks
@pytest.mark.parametrize("path", NOTEBOOKS, ids=str)
def test_notebook_executes_within_budget(path, monkeypatch, tmp_path):
    if os.environ.get("TLCOURSE_BOOK_CACHE"):
        monkeypatch.setenv("TLCOURSE_CACHE", os.environ["TLCOURSE_BOOK_CACHE"])
    # A solution ends with grader.check_all(); its feedback is logged here and must be full marks.
    log = tmp_path / "feedback.jsonl"
    monkeypatch.setenv(FEEDBACK_LOG_ENV, str(log))
    record = execute_notebook(path, ROOT, threads=1)
    assert record["seconds"] <= time_limit(path) * PARALLEL_SLACK, (
        f"{path} took {record['seconds']:.0f} s, budget {time_limit(path):.0f} s "
        f"(x{PARALLEL_SLACK} for parallel runs): make its CPU defaults smaller")
    if path.parts[0] == "book":
        executed = nbformat.read(ROOT / "_build" / "executed" / path, as_version=4)
        figures = sum("image/png" in o.get("data", {}) for c in executed.cells
                      if c.cell_type == "code" for o in c.outputs)
        assert figures, f"{path} shows no figure: every chapter plots what it measures"
        # The quiz was shown, keyed on this run's numbers, as self-contained HTML and JavaScript.
        chapter = path.name.split("-")[0]
        record = quiz.recorded(executed)
        assert record and record["chapter"] == chapter, f"{path}: no quiz record (quiz.show({chapter!r}, ...))"
        assert quiz.keys(quiz.build(chapter, record["results"], ROOT)) == record["keys"]
        scripts = [o["data"]["application/javascript"] for c in executed.cells if c.cell_type == "code"
                   for o in c.outputs if "application/javascript" in o.get("data", {})]
        assert any("show_questions(" in js for js in scripts), f"{path}: the quiz's script is not in the outputs"
    if path.parts[0] == "solutions":
        chapter = path.name.split("-")[0]
        results = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
        passed = {r["question"] for r in results if r["chapter_id"] == chapter and r["passed"]}
        expected = {q.name for q in load_questions(chapter)}
        assert passed == expected, f"{path}: questions not passed by the solution: {sorted(expected - passed)}"
        # nbval (the Makefile's `nbval`) compares these cells' grades with a second run.
        executed = nbformat.read(ROOT / "_build" / "executed" / path, as_version=4)
        graded = [c for c in executed.cells if c.cell_type == "code" and "grader.check" in c.source]
        assert graded and all("nbval-check-output" in c.metadata.get("tags", []) for c in graded), (
            f"{path}: the grading cells of the executed copy are not tagged for nbval")
