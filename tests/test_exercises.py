"""Every chapter has a solution, a generated exercise in sync with it, and checks; untouched
exercises score zero (solutions scoring full marks is checked where they are executed, in
test_notebooks.py, so that each solution runs only once per test run)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tlcourse.grading import build_exercises, grade_notebook, load_questions

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted(p.stem for p in ROOT.glob("book/*/*.ipynb"))
EXERCISES = sorted(ROOT.glob("exercises/*.ipynb"))


def test_exercises_are_generated_from_solutions():
    drifted = build_exercises(ROOT / "solutions", ROOT / "exercises", check=True)
    assert not drifted, f"exercises differ from their solutions, run `make exercises`: {drifted}"


@pytest.mark.parametrize("stem", CHAPTERS)
def test_every_chapter_has_exercise_solution_and_checks(stem):
    assert (ROOT / "solutions" / f"{stem}.ipynb").exists(), f"solutions/{stem}.ipynb is missing"
    assert (ROOT / "exercises" / f"{stem}.ipynb").exists(), f"exercises/{stem}.ipynb is missing"
    assert load_questions(stem.split("-")[0]), f"no questions for {stem}"
    chapter = json.loads((next(ROOT.glob(f"book/*/{stem}.ipynb"))).read_text())
    text = "".join("".join(c["source"]) for c in chapter["cells"] if c["cell_type"] == "markdown")
    assert f"exercises/{stem}.ipynb" in text, f"the chapter {stem} must link to its exercise"


@pytest.mark.notebooks
@pytest.mark.parametrize("path", EXERCISES, ids=lambda p: p.name)
def test_untouched_exercise_scores_zero(path):
    before = path.read_bytes()
    report = grade_notebook(path, cell_timeout=120)
    assert report.error is None, report.error
    assert report.max_score > 0 and report.score == 0, report.to_text()
    assert path.read_bytes() == before, "grading modified the student's notebook"
