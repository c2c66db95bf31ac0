"""Flashcards from the chapters: an Anki deck (``.apkg``) and a CSV, with stable ids.

``tlcourse cards --anki deck.apkg --csv cards.csv`` writes one note per

- chapter interview question (back: "The answer in a minute"),
- follow-up question (back: the chapter's answer to it),
- quiz question (back: the right answer or answers and the explanation),

read from the chapters and their study files (:mod:`tlcourse.study`, :mod:`tlcourse.quiz`). Each
note is tagged with its chapter id (``T01``), its part (``Part-I-Foundations``) and its kind
(``question``, ``follow-up``, ``quiz``).

Stable ids. The deck and the note type have fixed ids (:data:`DECK_ID`, :data:`MODEL_ID`), and a
note's GUID is a hash of its chapter, its kind and its place (the follow-up's position, the quiz
question's ``id``), not of its text: importing a newer deck into Anki *updates* the notes whose
wording changed instead of adding duplicates.

Text. Chapters are markdown with ``$...$`` and ``$$...$$`` LaTeX; Anki shows HTML and typesets
MathJax between ``\\(...\\)`` and ``\\[...\\]``. :func:`to_html` renders the markdown with markdown-it-py
(CommonMark, the parser under MyST) and its dollar-math plugin, raw HTML escaped.

Quiz questions keyed on a build's results (an expression such as ``answer: gain``) have a right
answer only once the chapter has been executed: their key is read from the executed copy in
``_build/executed/<chapter path>`` (``make book`` writes it) with :func:`tlcourse.quiz.recorded`
and rendered with :func:`tlcourse.quiz.build`. Without that copy they are left out, and the
command says which and why.
"""
from __future__ import annotations

import csv
import functools
import html
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from . import study

__all__ = ["Card", "left_out_lines", "DECK_ID", "MODEL_ID", "DECK_NAME", "to_html", "part_tag", "available_chapters",
           "make_cards", "write_anki", "write_csv", "CSV_COLUMNS", "main"]

# Fixed once, never to change: Anki matches decks and note types by these ids.
DECK_ID = 1_873_406_522
MODEL_ID = 1_412_980_377
DECK_NAME = "tlcourse: transfer learning for interviews"
CSV_COLUMNS = ["guid", "chapter", "part", "kind", "front", "back", "tags"]
EXECUTED = Path("_build") / "executed"


@dataclass(frozen=True)
class Card:
    """One note: ``front`` and ``back`` are HTML with MathJax delimiters."""
    guid: str
    chapter: str        # "T01"
    chapter_title: str  # "T01 · What is transfer learning, ..."
    part: str           # the _toc.yml caption
    kind: str           # question | follow-up | quiz
    front: str
    back: str

    @property
    def tags(self) -> list[str]:
        return [self.chapter, part_tag(self.part), self.kind]


# --------------------------------------------------------------------------- markdown -> HTML
@functools.lru_cache(maxsize=1)
def _markdown():
    """CommonMark (markdown-it-py, the parser MyST uses for the book) with ``$``/``$$`` math, raw HTML off."""
    from markdown_it import MarkdownIt
    from mdit_py_plugins.dollarmath import dollarmath_plugin

    md = MarkdownIt("commonmark", {"html": False}).use(
        dollarmath_plugin, allow_space=False, allow_digits=False, double_inline=True)
    # Anki typesets MathJax between \( \) and \[ \]
    md.add_render_rule("math_inline", lambda self, tokens, i, *_: rf"\({html.escape(tokens[i].content, quote=False)}\)")
    md.add_render_rule("math_inline_double",
                       lambda self, tokens, i, *_: rf"\[{html.escape(tokens[i].content.strip(), quote=False)}\]")
    md.add_render_rule("math_block",
                       lambda self, tokens, i, *_: rf"<p>\[{html.escape(tokens[i].content.strip(), quote=False)}\]</p>")
    return md


def _drop_book_links(tokens) -> None:
    """A link into the book means nothing inside Anki: keep its words, drop the link."""
    for token in tokens:
        if token.children:
            keep, closing = [], []
            for child in token.children:
                if child.type == "link_open":
                    external = re.match(r"^https?://", child.attrGet("href") or "")
                    closing.append(bool(external))
                    if not external:
                        continue
                elif child.type == "link_close" and closing and not closing.pop():
                    continue
                keep.append(child)
            token.children = keep


def to_html(markdown: str) -> str:
    r"""The chapters' markdown as HTML for Anki, math between MathJax's ``\( \)`` and ``\[ \]``.

    >>> to_html("The **source** has $P(X)$; see [T06](T06-x.ipynb).")
    '<p>The <strong>source</strong> has \\(P(X)\\); see T06.</p>'
    >>> to_html("$$\nL = T^2 \\, \\mathrm{KL}\n$$")
    '<p>\\[L = T^2 \\, \\mathrm{KL}\\]</p>'
    """
    md = _markdown()
    tokens = md.parse(str(markdown))
    _drop_book_links(tokens)
    return md.renderer.render(tokens, md.options, {}).strip().replace(">\n<", "><")


def part_tag(caption: str) -> str:
    """An Anki tag (no spaces) for a part caption.

    >>> part_tag("Part I: Foundations")
    'Part-I-Foundations'
    """
    return re.sub(r"[^A-Za-z0-9]+", "-", caption).strip("-") or "no-part"


# --------------------------------------------------------------------------- chapters
def available_chapters(root=None, chapters=None) -> tuple[list[study.Chapter], list[str]]:
    """The chapters with a readable study file, and one line per chapter left out and why.

    :func:`tlcourse.study.load_chapters` stops at the first chapter without a study file; the
    rehearsal tools go on with the others and say which they skipped. ``chapters`` (ids) keeps
    only those.
    """
    wanted = {c.upper() for c in chapters} if chapters else None
    found, problems = [], []
    for part, path in study.chapter_paths(root):
        chapter_id = path.name.split("-")[0]
        if wanted is not None and chapter_id not in wanted:
            continue
        try:
            found.append(study.load_chapter(path, part, root))
        except study.StudyError as err:
            problems.append(f"{chapter_id} left out: {err}")
    if wanted is not None:
        unknown = wanted - {c.id for c in found} - {p.split()[0] for p in problems}
        if unknown:
            ids = ", ".join(p.name.split("-")[0] for _, p in study.chapter_paths(root))
            raise study.StudyError(f"no chapter {', '.join(sorted(unknown))} in _toc.yml (chapters: {ids})")
    return found, problems


def left_out_lines(problems: list[str]) -> list[str]:
    """The messages of :func:`available_chapters`, with the chapters still without a study file on one line."""
    missing = [p.split()[0] for p in problems if "is missing" in p]
    other = [p for p in problems if "is missing" not in p]
    if missing:
        other.insert(0, f"{len(missing)} chapter(s) left out, no study file (book/study/<ID>.yml) yet: "
                        f"{', '.join(missing)}")
    return other


def _guid(*parts) -> str:
    import genanki

    return genanki.guid_for("tlcourse", *parts)


def _heading(ch: study.Chapter) -> str:
    return f"{ch.id} · {ch.title}"


def _uses_results(q: dict) -> bool:
    """Whether a quiz question's key or text depends on the chapter's computed results."""
    texts = [q.get("question", ""), q.get("why", "")]
    for option in q.get("options") or []:
        if isinstance(option.get("correct"), str):
            return True
        texts += [option.get("answer", ""), option.get("why", "")]
    if isinstance(q.get("answer"), str):
        return True
    return any(re.search(r"(?<!\{)\{[A-Za-z_][^{}]*\}", str(t)) for t in texts)


def _static(q: dict) -> dict:
    """A quiz question that needs no results, in :func:`tlcourse.quiz.build`'s output format."""
    def fill(text):
        try:
            return str(text).format()
        except (IndexError, KeyError, ValueError):
            return str(text)

    section = f" (See \u201c{q.get('section', '')}\u201d.)" if q.get("section") else ""
    if q.get("type") == "numeric":
        return {"question": fill(q["question"]), "type": "numeric", "key": float(q["answer"]),
                "tolerance": float(q.get("tolerance", 0)),
                "answers": [{"correct": True, "feedback": "Right. " + fill(q.get("why", "")).strip() + section}]}
    answers = [{"answer": fill(o.get("answer", "")).strip(), "correct": bool(o.get("correct", False)),
                "feedback": ("Right. " if o.get("correct") else "Not this one. ") + fill(o.get("why", "")).strip() + section}
               for o in q.get("options") or []]
    return {"question": fill(q["question"]), "type": "many_choice" if q.get("multiple") else "multiple_choice",
            "answers": answers}


def _number(x: float, tolerance: float = 0.0) -> str:
    """A key rounded to the precision its tolerance asks for: 6.8421 with tolerance 0.25 is 6.8.

    >>> _number(6.842105, 0.25), _number(25.0, 0.5), _number(0.123456)
    ('6.8', '25', '0.123456')
    """
    import math

    if tolerance > 0:
        x = round(x, max(0, -math.floor(math.log10(tolerance))))
    return f"{x:.10g}"


def _bare(markdown: str) -> str:
    """One line of markdown as inline HTML (no enclosing paragraph)."""
    return to_html(markdown).removeprefix("<p>").removesuffix("</p>")


def _quiz_back(built: dict) -> str:
    right = [a for a in built["answers"] if a.get("correct")]
    explanations = "".join(to_html(a["feedback"].removeprefix("Right. ")) for a in right if a.get("feedback"))
    if built["type"] == "numeric":
        tolerance = f" (± {_number(built['tolerance'])})" if built.get("tolerance") else ""
        return f"<p><b>Answer:</b> {_number(built['key'], built.get('tolerance') or 0)}{tolerance}</p>" + explanations
    if len(right) == 1:
        return f"<p><b>Answer:</b> {_bare(right[0]['answer'])}</p>" + explanations
    return ("<p><b>Answers:</b></p><ul>" + "".join(f"<li>{_bare(a['answer'])}</li>" for a in right) + "</ul>"
            + explanations)


def _quiz_front(built: dict, guid: str) -> str:
    import random

    front = to_html(built["question"]).replace("&lt;em&gt;", "<em>").replace("&lt;/em&gt;", "</em>")
    if built["type"] != "numeric":
        options = [_bare(a["answer"]) for a in built["answers"]]
        random.Random(guid).shuffle(options)  # the right answer is often first in the study file
        front += '<ul class="options">' + "".join(f"<li>{o}</li>" for o in options) + "</ul>"
    return front


def _built_quiz(ch: study.Chapter, root) -> tuple[list[dict | None], str | None]:
    """The chapter's quiz rendered with keys; computed questions are None without an executed copy."""
    from . import quiz as quizlib

    executed = study._root(root) / EXECUTED / ch.path
    if any(_uses_results(q) for q in ch.quiz):
        if executed.exists():
            record = quizlib.recorded(executed)
            if record is None:
                why = f"{executed} has no recorded quiz results (run `make book` to execute the chapter again)"
            else:
                try:
                    return quizlib.build(ch.id, record["results"], root), None
                except quizlib.QuizError as err:
                    why = f"the executed copy {executed} no longer matches the study file ({err})"
        else:
            why = f"no executed copy {executed.relative_to(study._root(root))} (run `make book` first)"
        return [None if _uses_results(q) else _static(q) for q in ch.quiz], why
    return [_static(q) for q in ch.quiz], None


def make_cards(chapters: list[study.Chapter], root=None, notes: list[str] | None = None) -> list[Card]:
    """The notes of these chapters, in book order. Messages about left-out questions go to ``notes``."""
    cards = []
    for ch in chapters:
        heading = _heading(ch)
        cards.append(Card(_guid(ch.id, "question"), ch.id, heading, ch.part, "question",
                          to_html(ch.question), to_html(ch.minute_answer)))
        for i, follow in enumerate(ch.follow_ups, 1):
            cards.append(Card(_guid(ch.id, "follow-up", i), ch.id, heading, ch.part, "follow-up",
                              to_html(follow.question), to_html(follow.answer)))
        built, why = _built_quiz(ch, root)
        left_out = []
        for raw, q in zip(ch.quiz, built):
            if q is None:
                left_out.append(str(raw.get("id")))
                continue
            guid = _guid(ch.id, "quiz", raw.get("id"))
            cards.append(Card(guid, ch.id, heading, ch.part, "quiz", _quiz_front(q, guid), _quiz_back(q)))
        if left_out and notes is not None:
            notes.append(f"{ch.id}: left out {len(left_out)} computed quiz question(s) "
                         f"({', '.join(left_out)}): {why}")
    return cards


# --------------------------------------------------------------------------- writers
_CSS = """.card { font-family: system-ui, sans-serif; font-size: 19px; text-align: left; max-width: 42em;
  margin: 0 auto; line-height: 1.4; color: #222; background: #fff; }
.meta { font-size: 13px; color: #777; margin-bottom: 0.8em; }
code, pre { font-family: ui-monospace, monospace; font-size: 0.9em; background: #f3f3f3; }
ul.options { color: #444; }
.nightMode .card, .night_mode .card { color: #eee; background: #222; }
.nightMode code, .night_mode code { background: #333; }
"""


def _model():
    import genanki

    return genanki.Model(
        MODEL_ID, "tlcourse card",
        fields=[{"name": "Front"}, {"name": "Back"}, {"name": "Chapter"}, {"name": "Kind"}],
        templates=[{"name": "Card 1",
                    "qfmt": '<div class="meta">{{Chapter}} · {{Kind}}</div>{{Front}}',
                    "afmt": '{{FrontSide}}<hr id="answer">{{Back}}'}],
        css=_CSS)


def write_anki(cards: list[Card], path) -> Path:
    """Write the deck as an Anki package (a zip: ``collection.anki2``, SQLite, and ``media``)."""
    import genanki

    model = _model()
    deck = genanki.Deck(DECK_ID, DECK_NAME,
                        description="Generated from the tlcourse chapters by `tlcourse cards`.")
    for card in cards:
        deck.add_note(genanki.Note(model=model, fields=[card.front, card.back, html.escape(card.chapter_title),
                                                         card.kind], tags=card.tags, guid=card.guid))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    genanki.Package(deck).write_to_file(str(path))
    return path


def write_csv(cards: list[Card], path) -> Path:
    """Write the notes as CSV (UTF-8, a header row, HTML fields, tags separated by spaces)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        for c in cards:
            writer.writerow([c.guid, c.chapter, c.part, c.kind, c.front, c.back, " ".join(c.tags)])
    return path


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="tlcourse cards",
        description="Flashcards from the chapters' interview questions, follow-ups and quizzes: an Anki "
                    "deck (import it with File > Import; re-importing a newer deck updates the notes) "
                    "and/or a CSV.")
    parser.add_argument("--anki", metavar="DECK.apkg", help="write an Anki package")
    parser.add_argument("--csv", metavar="CARDS.csv", help="write a CSV (guid, chapter, part, kind, front, back, tags)")
    parser.add_argument("--chapter", action="append", metavar="ID", help="only this chapter (repeatable)")
    parser.add_argument("--root", help="the course folder (default: this checkout, or $TLCOURSE_ROOT)")
    args = parser.parse_args(argv)
    if not args.anki and not args.csv:
        parser.error("say where to write: --anki deck.apkg and/or --csv cards.csv")
    try:
        chapters, problems = available_chapters(args.root, args.chapter)
    except study.StudyError as err:
        print(f"tlcourse cards: {err}", file=sys.stderr)
        return 2
    for problem in left_out_lines(problems):
        print(f"note: {problem}", file=sys.stderr)
    if not chapters:
        print("tlcourse cards: no chapter has a study file (book/study/<ID>.yml); nothing to write", file=sys.stderr)
        return 1
    notes: list[str] = []
    cards = make_cards(chapters, args.root, notes)
    for note in notes:
        print(note)
    counts = {k: sum(c.kind == k for c in cards) for k in ("question", "follow-up", "quiz")}
    summary = (f"{len(cards)} cards from {len(chapters)} chapter(s): {counts['question']} interview questions, "
               f"{counts['follow-up']} follow-ups, {counts['quiz']} quiz questions")
    if args.anki:
        print(f"wrote {write_anki(cards, args.anki)}: {summary}")
    if args.csv:
        print(f"wrote {write_csv(cards, args.csv)}: {summary}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
