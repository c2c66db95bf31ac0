"""tlcourse.study over the real book: every chapter has its quiz, rubric, exercise and solution pages,
and the cheat sheet is generated from the chapters and up to date."""
from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
import yaml

from tlcourse import study
from tlcourse.study import StudyError, _relink

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = study.chapter_paths(ROOT)
IDS = [p.name.split("-")[0] for _, p in CHAPTERS]


def test_every_written_chapter_is_in_the_toc():
    on_disk = sorted(p.relative_to(ROOT) for p in ROOT.glob("book/*/[TGCS][0-9][0-9]-*.ipynb"))
    assert sorted(p for _, p in CHAPTERS) == on_disk


@pytest.mark.parametrize("chapter_id", IDS)
def test_chapter_has_quiz_rubric_exercise_and_solution(chapter_id):
    path = next(p for _, p in CHAPTERS if p.name.startswith(chapter_id + "-"))
    chapter = study.load_chapter(path, root=ROOT)  # raises when the study file is missing or malformed
    assert 4 <= len(chapter.key_points) <= 10, f"{chapter_id}: 4 to 10 key points for the interview rubric"
    assert 4 <= len(chapter.quiz) <= 6
    nb = nbformat.read(ROOT / path, as_version=4)
    sources = [c.source for c in nb.cells]
    quiz_cells = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and f'quiz.show("{chapter_id}"' in c.source]
    assert len(quiz_cells) == 1, f"{path}: needs one cell calling quiz.show({chapter_id!r}, ...)"
    i = quiz_cells[0]
    assert "remove-input" in nb.cells[i].metadata.get("tags", []), f"{path}: tag the quiz cell remove-input"
    assert sources[i - 1].startswith("## Quiz"), f"{path}: the quiz cell follows a '## Quiz' heading"
    exercise = next(j for j, s in enumerate(sources) if "## Exercise" in s)
    assert exercise > i, f"{path}: the quiz comes before the exercise"
    slug = path.stem
    assert f"(../../exercises/{slug}.ipynb)" in sources[exercise], f"{path}: link the exercise page"
    assert f"(../../solutions/{slug}.ipynb)" in sources[exercise] and ":class: dropdown" in sources[exercise], (
        f"{path}: link the solution inside a folded 'try it first' admonition")
    toc = (ROOT / "_toc.yml").read_text()
    assert f"file: exercises/{slug}\n" in toc and f"file: solutions/{slug}\n" in toc
    assert (ROOT / "exercises" / f"{slug}.ipynb").exists() and (ROOT / "solutions" / f"{slug}.ipynb").exists()


def test_study_files_have_no_orphans():
    files = sorted(p.stem for p in (ROOT / "book" / "study").glob("*.yml"))
    assert files == sorted(IDS), "a study file without a chapter in _toc.yml, or the reverse"
    for chapter_id in files:
        data = yaml.safe_load((ROOT / "book" / "study" / f"{chapter_id}.yml").read_text())
        ids = [q["id"] for q in data["quiz"]]
        assert len(ids) == len(set(ids))


def test_cheatsheet_is_up_to_date():
    page = ROOT / study.CHEATSHEET
    assert page.read_text(encoding="utf-8") == study.cheatsheet_markdown(ROOT), (
        "book/cheatsheet.md is stale: run `python -m tlcourse.study cheatsheet` (make book does)")
    text = page.read_text()
    for _, path in CHAPTERS:
        chapter = study.load_chapter(path, root=ROOT, with_study=False)
        assert f"### {chapter.id} · {chapter.title}" in text
        assert all(f in text for f in chapter.formulas)
    assert "theory/T01-what-is-transfer-learning.ipynb" in text


def test_cheatsheet_in_the_toc():
    assert "file: book/cheatsheet\n" in (ROOT / "_toc.yml").read_text()


def test_relink_rewrites_relative_links_only():
    md = "See [T06](T06-feature-extractors.ipynb#depth), [web](https://x.org/a.html) and [ex](../exercises.md)."
    out = _relink(md, Path("book/theory"), Path("book"))
    assert "[T06](theory/T06-feature-extractors.ipynb#depth)" in out
    assert "[web](https://x.org/a.html)" in out and "[ex](exercises.md)" in out


def test_follow_ups_and_question_are_parsed():
    chapters = study.load_chapters(ROOT, with_study=False)
    for ch in chapters:
        assert "?" in ch.question, ch.id
        assert len(ch.follow_ups) >= 3 and all(f.question.endswith("?") and f.answer for f in ch.follow_ups)
        assert ch.minute_answer and ch.mistakes


def test_missing_study_file_is_a_clear_error(tmp_path):
    with pytest.raises(StudyError, match="is missing"):
        study.read_study_file("T98", root=ROOT)
    with pytest.raises(StudyError, match="_toc.yml not found"):
        study.chapter_paths(tmp_path)
