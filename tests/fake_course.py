"""A tiny course in a temporary folder for the rehearsal tools' tests (cards, interview, progress).

Two chapters in two parts, with the real chapters' headings: T98 (Part I) and S97 (Part IV). Each
has a rubric, two follow-ups and a quiz of four questions, two of which are keyed on the build's
results. ``executed=("T98",)`` also writes T98's executed copy in ``_build/executed`` with its
recorded results, as ``make book`` would.
"""
from __future__ import annotations

import textwrap
from pathlib import Path

import nbformat

TOC = """\
format: jb-book
root: book/intro
parts:
  - caption: "Part I: Foundations"
    chapters:
      - file: book/theory/T98-toy-transfer
  - caption: "Part IV: Scenarios"
    chapters:
      - file: book/scenarios/S97-toy-scenario
"""

CHAPTERS = {
    "T98": {
        "path": "book/theory/T98-toy-transfer.ipynb",
        "title": "What is toy transfer?",
        "question": "What is toy transfer, and when does it *help*?",
        "minute": "Toy transfer reuses a **pretrained** model; its loss is $L = -\\log p$.\n\n- freeze it\n- or fine-tune",
        "follow_ups": [("Why freeze the base?", "Because few labels cannot move many weights: $n \\ll d$."),
                       ("When does it hurt?", "When the source is unrelated: **negative transfer**.")],
        "key_points": ["Toy transfer reuses a pretrained model.", "It helps when labels are scarce.",
                       "An unrelated source can hurt."],
        "results": {"gain": 3.0, "se": 1.0},
    },
    "S97": {
        "path": "book/scenarios/S97-toy-scenario.ipynb",
        "title": "How do you adapt a toy model?",
        "question": "How would you adapt a toy model to a new domain?",
        "minute": "Align the features of the two domains, then check on a few labelled target examples.",
        "follow_ups": [("Does alignment guarantee accuracy?", "No: aligned features can still be mislabelled."),
                       ("How do you pick the checkpoint?", "With a few target labels, or a proxy score.")],
        "key_points": ["Align the two domains' features.", "Check on labelled target examples.",
                       "Alignment alone guarantees nothing.", "Choose the checkpoint without target test labels."],
        "results": {"gain": 0.5, "se": 1.0},
    },
}


def _quiz(chapter_id: str) -> str:
    return textwrap.dedent(f"""\
        quiz:
          - id: concept
            type: choice
            question: What does {chapter_id} reuse, with $P(X)$ fixed?
            section: Details
            options:
              - answer: A pretrained model.
                correct: true
                why: That is the point of it.
              - answer: Nothing.
                why: It reuses something.
          - id: arithmetic
            type: numeric
            question: What is 2 + 2?
            section: In depth
            answer: 4
            tolerance: 0
            why: Arithmetic.
          - id: gain
            type: numeric
            question: "How many points did transfer add in this build (one decimal)?"
            section: "Demo: toy numbers"
            answer: gain
            tolerance: 0.1
            why: The demo printed {{gain:.1f}} points.
          - id: who-won
            type: choice
            question: Did transfer win by more than two standard errors?
            section: "Demo: toy numbers"
            options:
              - answer: "Yes."
                correct: "gain > 2 * se"
                why: "gain {{gain}}, se {{se}}."
              - answer: "No."
                correct: "gain <= 2 * se"
                why: "gain {{gain}}, se {{se}}."
        """)


def _notebook(chapter_id: str, spec: dict) -> nbformat.NotebookNode:
    follow = "\n\n".join(f"**{q}** {a}" for q, a in spec["follow_ups"])
    cells = [
        f"# {chapter_id} · {spec['title']}\n\n> **The interview question.** *{spec['question']}*",
        f"## The answer in a minute\n\n{spec['minute']}",
        "## In depth\n\n### Details\n\nIt has one formula:\n\n$$\nL = T^2 \\, \\mathrm{KL}(p \\| q)\n$$",
        "## Demo: toy numbers\n\nWe measure a gain.",
        f"## Follow-up questions\n\n{follow}",
        "## Common mistakes\n\n- Comparing with a weak baseline.",
        "## Quiz",
        "## Exercise\n\nNone.",
    ]
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(c) for c in cells]
    nb.cells.insert(7, nbformat.v4.new_code_cell(f'quiz.show("{chapter_id}", **results)'))
    return nb


def make_course(root: Path, executed=("T98",), study=("T98", "S97")) -> Path:
    """Write the course under ``root``; returns ``root``."""
    from tlcourse.quiz import RECORD_MIME

    root = Path(root)
    (root / "_toc.yml").parent.mkdir(parents=True, exist_ok=True)
    (root / "_toc.yml").write_text(TOC)
    (root / "book" / "study").mkdir(parents=True, exist_ok=True)
    for chapter_id, spec in CHAPTERS.items():
        path = root / spec["path"]
        path.parent.mkdir(parents=True, exist_ok=True)
        nb = _notebook(chapter_id, spec)
        nbformat.write(nb, str(path))
        if chapter_id in study:
            points = "".join(f"  - {p}\n" for p in spec["key_points"])
            (root / "book" / "study" / f"{chapter_id}.yml").write_text(
                f"chapter: {chapter_id}\nkey_points:\n{points}\n" + _quiz(chapter_id))
        if chapter_id in executed:
            out = root / "_build" / "executed" / spec["path"]
            out.parent.mkdir(parents=True, exist_ok=True)
            nb.cells[7].outputs = [nbformat.v4.new_output(
                "display_data", data={RECORD_MIME: {"chapter": chapter_id, "results": spec["results"], "keys": []}})]
            nbformat.write(nb, str(out))
    return root
