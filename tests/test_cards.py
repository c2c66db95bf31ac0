"""tlcourse.cards: the Anki package and the CSV, on a tiny course, and over the real book."""
from __future__ import annotations

import csv
import json
import sqlite3
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.fake_course import CHAPTERS, make_course
from tlcourse import cards, study

ROOT = Path(__file__).resolve().parents[1]
# T98: question + 2 follow-ups + 4 quiz (executed copy); S97: question + 2 follow-ups + 2 static quiz
EXPECTED = {"T98": 7, "S97": 5}


@pytest.fixture()
def course(tmp_path):
    return make_course(tmp_path / "course")


def _notes(apkg: Path) -> list[tuple[str, str, str]]:
    with zipfile.ZipFile(apkg) as z:
        assert {"collection.anki2", "media"} <= set(z.namelist())
        assert json.loads(z.read("media")) == {}
        db = apkg.with_suffix(".anki2")
        db.write_bytes(z.read("collection.anki2"))
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT guid, tags, flds FROM notes ORDER BY id").fetchall()
    finally:
        conn.close()


def test_to_html_math_markdown_and_escaping():
    html = cards.to_html("**Bold** and *it* with `x < y`, $a_i < b$ and\n\n$$\\sum_i w_i$$\n\n1. one\n2. two")
    assert "<strong>Bold</strong>" in html and "<em>it</em>" in html and "<code>x &lt; y</code>" in html
    assert "\\(a_i &lt; b\\)" in html and "\\[\\sum_i w_i\\]" in html and "$" not in html
    assert "<ol><li>one</li><li>two</li></ol>" in html
    assert cards.to_html("a <script> tag") == "<p>a &lt;script&gt; tag</p>"
    # an underscore inside math is not italics, a price is not math
    assert "<em>" not in cards.to_html("$x_1 + y_2$") and "\\(" not in cards.to_html("costs $5 and $6")
    # a link into the book keeps its words, a web link stays; fenced code keeps its lines
    assert cards.to_html("see [T06](T06-x.ipynb) or [d2l](https://d2l.ai)") == \
        '<p>see T06 or <a href="https://d2l.ai">d2l</a></p>'
    assert "<pre><code" in cards.to_html("```python\nx = 1\ny = 2\n```") and "x = 1\ny = 2" in cards.to_html(
        "```\nx = 1\ny = 2\n```")


def test_anki_package(course, tmp_path, capsys):
    apkg = tmp_path / "deck.apkg"
    assert cards.main(["--anki", str(apkg), "--root", str(course)]) == 0
    out = capsys.readouterr().out
    assert "S97: left out 2 computed quiz question(s) (gain, who-won)" in out and "make book" in out
    notes = _notes(apkg)
    assert len(notes) == sum(EXPECTED.values())
    for chapter_id, n in EXPECTED.items():
        tagged = [n_ for n_ in notes if f" {chapter_id} " in f" {n_[1].strip()} "]
        assert len(tagged) == n
    part_tags = {cards.part_tag(c) for c in ("Part I: Foundations", "Part IV: Scenarios")}
    assert all(any(t in n[1].split() for t in part_tags) for n in notes)
    fronts = [n[2].split("\x1f")[0] for n in notes]
    assert any("What is toy transfer, and when does it <em>help</em>?" in f for f in fronts)
    assert any("Why freeze the base?" in f for f in fronts)
    backs = [n[2].split("\x1f")[1] for n in notes]
    assert any("\\(L = -\\log p\\)" in b and "<li>freeze it</li>" in b for b in backs)
    # the computed key of T98 comes from its executed copy: gain 3.0 > 2 * se
    assert any("This build" in f for f in fronts)
    assert any("<b>Answer:</b> Yes." in b for b in backs)
    with zipfile.ZipFile(apkg) as z:
        db = tmp_path / "c.anki2"
        db.write_bytes(z.read("collection.anki2"))
    conn = sqlite3.connect(db)
    decks, models = conn.execute("SELECT decks, models FROM col").fetchone()
    conn.close()
    assert str(cards.DECK_ID) in json.loads(decks) and str(cards.MODEL_ID) in json.loads(models)


def test_csv(course, tmp_path):
    path = tmp_path / "cards.csv"
    assert cards.main(["--csv", str(path), "--root", str(course)]) == 0
    with path.open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == cards.CSV_COLUMNS
    assert len(rows) == sum(EXPECTED.values())
    assert {r["kind"] for r in rows} == {"question", "follow-up", "quiz"}
    t98 = [r for r in rows if r["chapter"] == "T98"]
    assert t98[0]["kind"] == "question" and CHAPTERS["T98"]["question"].split("*")[0] in t98[0]["front"]
    assert t98[0]["tags"].split() == ["T98", "Part-I-Foundations", "question"]
    assert len({r["guid"] for r in rows}) == len(rows)


def test_guids_and_ids_stable_across_runs(course, tmp_path):
    a, b = tmp_path / "a.apkg", tmp_path / "b.apkg"
    cards.main(["--anki", str(a), "--csv", str(tmp_path / "a.csv"), "--root", str(course)])
    # a reworded follow-up answer keeps its note: the GUID depends on the place, not the text
    nb = course / CHAPTERS["T98"]["path"]
    nb.write_text(nb.read_text().replace("cannot move many weights", "can hardly move many weights"))
    cards.main(["--anki", str(b), "--root", str(course)])
    guids_a, guids_b = [n[0] for n in _notes(a)], [n[0] for n in _notes(b)]
    assert guids_a == guids_b
    with (tmp_path / "a.csv").open(encoding="utf-8") as f:
        assert [r["guid"] for r in csv.DictReader(f)] == guids_a
    changed = [n for n in _notes(b) if "hardly" in n[2]]
    assert len(changed) == 1 and changed[0][0] in guids_a


def test_needs_a_destination_and_a_known_chapter(course, capsys):
    with pytest.raises(SystemExit):
        cards.main(["--root", str(course)])
    assert "--anki" in capsys.readouterr().err
    assert cards.main(["--csv", "/tmp/never.csv", "--root", str(course), "--chapter", "X00"]) == 2
    assert "no chapter X00" in capsys.readouterr().err


def test_cli_registers_cards(course, tmp_path):
    out = subprocess.run([sys.executable, "-m", "tlcourse", "cards", "--csv", str(tmp_path / "c.csv"),
                          "--root", str(course)], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "12 cards from 2 chapter(s)" in out.stdout


def test_real_book():
    """Every chapter of the book gives cards; until every study file exists, those that do."""
    try:
        chapters = study.load_chapters(ROOT)
    except study.StudyError as err:
        assert "is missing" in str(err), err  # anything else is a broken chapter
        chapters, _ = cards.available_chapters(ROOT)
    assert chapters
    notes: list[str] = []
    made = cards.make_cards(chapters, ROOT, notes)
    for ch in chapters:
        mine = [c for c in made if c.chapter == ch.id]
        assert sum(c.kind == "question" for c in mine) == 1
        assert sum(c.kind == "follow-up" for c in mine) == len(ch.follow_ups)
        assert sum(c.kind == "quiz" for c in mine) <= len(ch.quiz)
        assert all("$" not in c.front + c.back or "\\$" in c.front + c.back for c in mine), ch.id
    assert len({c.guid for c in made}) == len(made)
