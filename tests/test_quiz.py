"""tlcourse.quiz: the answer keys' checks, on a tiny course built in a temporary folder."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from tlcourse import quiz
from tlcourse.quiz import QuizError, build, evaluate, keys

NOTEBOOK_CELLS = [
    "# T99 · What is a toy chapter?\n\n> **The interview question.** *What is a toy chapter?*",
    "## The answer in a minute\n\nA toy chapter is small.",
    "## In depth\n\n### Details\n\nIt has $$a = b$$ one formula.",
    "## Demo: toy numbers\n\nWe measure a gain.",
    "## Follow-up questions\n\n**Why small?** Because tests must be fast.",
    "## Common mistakes\n\n- Making it big.",
    "## Exercise\n\nNone.",
]

QUIZ = """
chapter: T99
key_points:
  - A toy chapter is small.
quiz:
  - id: concept
    type: choice
    question: What is a toy chapter?
    section: Details
    options:
      - answer: A small one.
        correct: true
        why: It says so.
      - answer: A big one.
        why: It is not.
  - id: formula
    type: numeric
    question: What is 2 + 2?
    section: In depth
    answer: 4
    tolerance: 0
    why: Arithmetic.
  - id: gain
    type: numeric
    question: "How large was the gain in this build ({gain:.1f} is shown above)?"
    section: "Demo: toy numbers"
    answer: gain
    tolerance: 0.1
    why: The demo printed {gain:.2f}.
  - id: who-won
    type: choice
    question: Who won?
    section: "Demo: toy numbers"
    options:
      - answer: A, by more than two standard errors.
        correct: "gain > 2 * se"
        why: "gain {gain} against se {se}."
      - answer: B, by more than two standard errors.
        correct: "gain < -2 * se"
        why: "gain {gain} against se {se}."
      - answer: Neither.
        correct: "abs(gain) <= 2 * se"
        why: "gain {gain} against se {se}."
"""


def make_course(tmp_path: Path, quiz_text: str = QUIZ) -> Path:
    (tmp_path / "book" / "theory").mkdir(parents=True)
    (tmp_path / "book" / "study").mkdir()
    (tmp_path / "_toc.yml").write_text(textwrap.dedent("""
        format: jb-book
        root: book/intro
        parts:
          - caption: "Part I: Foundations"
            chapters:
              - file: book/theory/T99-toy
    """))
    cells = [{"cell_type": "markdown", "metadata": {}, "source": s} for s in NOTEBOOK_CELLS]
    nb = {"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    (tmp_path / "book" / "theory" / "T99-toy.ipynb").write_text(json.dumps(nb))
    (tmp_path / "book" / "study" / "T99.yml").write_text(quiz_text)
    return tmp_path


def test_keys_follow_the_results(tmp_path):
    root = make_course(tmp_path)
    ahead = build("T99", {"gain": 3.0, "se": 1.0}, root)
    behind = build("T99", {"gain": -3.0, "se": 1.0}, root)
    noise = build("T99", {"gain": 0.5, "se": 1.0}, root)
    assert keys(ahead)[:3] == [["A small one."], 4.0, 3.0]
    assert keys(ahead)[3] == ["A, by more than two standard errors."]
    assert keys(behind)[3] == ["B, by more than two standard errors."]
    assert keys(noise)[3] == ["Neither."]
    assert keys(behind)[2] == -3.0
    # the numeric answer accepts the key within the tolerance and nothing else
    right, low, default = ahead[2]["answers"]
    assert right["correct"] and right["range"][0] == pytest.approx(2.9) and right["range"][1] > 3.1
    assert 3.1 + 1e-9 > right["range"][1] and not low["correct"] and low["range"][1] == right["range"][0]
    assert default["type"] == "default" and default["feedback"].startswith("Too high")
    assert "3.0 is shown above" in ahead[2]["question"] and ahead[2]["question"].startswith("<em>This build.</em>")
    assert not ahead[1]["question"].startswith("<em>")
    # every explanation names its section
    assert all("(See \u201c" in a["feedback"] for q in ahead for a in q["answers"])


@pytest.mark.parametrize("edit, message", [
    (("        correct: true\n        why: It says so.", "        correct: true\n        why: It says so.\n"
      "      - answer: A tiny one.\n        correct: true\n        why: Also."), "2 options are right"),
    (("section: Details", "section: Nowhere"), "is not a heading"),
    (("        why: It is not.", ""), "has no 'why'"),
    (("    tolerance: 0\n", ""), "needs 'answer' and 'tolerance'"),
    (("type: numeric\n    question: What is 2", "type: essay\n    question: What is 2"), "type must be"),
    (("answer: gain\n", "answer: gain + missing\n"), "did not pass"),
    (("type: numeric\n    question: What is 2", "type: numeric\n    question: This build. What is 2"),
     "starts with 'This build'"),
])
def test_bad_quiz_is_refused_with_a_reason(tmp_path, edit, message):
    old, new = edit
    assert old in QUIZ
    root = make_course(tmp_path, QUIZ.replace(old, new))
    with pytest.raises(QuizError, match=message):
        build("T99", {"gain": 3.0, "se": 1.0}, root)


def test_results_must_be_used_finite_and_sufficient(tmp_path):
    root = make_course(tmp_path)
    with pytest.raises(QuizError, match="no question uses them"):
        build("T99", {"gain": 3.0, "se": 1.0, "extra": 2.0}, root)
    with pytest.raises(QuizError, match="finite number"):
        build("T99", {"gain": float("nan"), "se": 1.0}, root)
    with pytest.raises(QuizError, match="did not pass"):
        build("T99", {"gain": 3.0}, root)


def test_a_tie_between_options_is_an_error(tmp_path):
    root = make_course(tmp_path, QUIZ.replace('correct: "gain < -2 * se"', 'correct: "gain > 2 * se"'))
    with pytest.raises(QuizError, match="2 options are right"):
        build("T99", {"gain": 3.0, "se": 1.0}, root)


def test_question_count_is_bounded(tmp_path):
    head, _, _ = QUIZ.partition("  - id: who-won")
    root = make_course(tmp_path, head)  # three questions
    with pytest.raises(QuizError, match="3 questions"):
        build("T99", {"gain": 3.0, "se": 1.0}, root)


def test_evaluate_allows_arithmetic_only():
    assert evaluate("max(a, 2) * 3 - abs(-1)", {"a": 1}) == 5
    assert evaluate("1 < a <= 3", {"a": 3}) is True
    for bad in ("__import__('os')", "a.real", "[a]", "a if a else 1", "open('x')"):
        with pytest.raises(QuizError):
            evaluate(bad, {"a": 1})


def test_show_records_results_and_keys(tmp_path, monkeypatch):
    root = make_course(tmp_path)
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda *a, **k: shown.append((a, k)))
    calls = []
    import jupyterquiz
    monkeypatch.setattr(jupyterquiz, "display_quiz", lambda q, **k: calls.append(q))
    quiz.show("T99", root=root, gain=3.0, se=1.0)
    assert calls and calls[0][2]["key"] == 3.0
    record = shown[-1][0][0][quiz.RECORD_MIME]
    assert record == {"chapter": "T99", "results": {"gain": 3.0, "se": 1.0}, "keys": keys(calls[0])}
