"""The chapters as study material: their question, minute answer, follow-ups, key formulas and rubric.

Everything a reader rehearses with (the quiz, the cheat sheet, the flashcards and the mock
interview) is read from two single sources per chapter:

- the chapter notebook ``book/<part>/<ID>-<slug>.ipynb``: its title, the interview question (the
  block quote that opens it), "The answer in a minute", "Follow-up questions" (each a paragraph
  that opens with a bold question), "Common mistakes" and the display formulas of "In depth";
- its study file ``book/study/<ID>.yml``: the interview rubric (``key_points``, the points a good
  answer to the main question covers) and the quiz with its answer keys (see :mod:`tlcourse.quiz`).

Parts and order come from ``_toc.yml``, so a chapter added to the book is picked up everywhere.

Example::

    >>> from tlcourse import study
    >>> chapters = study.load_chapters()            # doctest: +SKIP
    >>> chapters[0].id, chapters[0].follow_ups[0].question   # doctest: +SKIP
    ('T01', 'How is transfer learning different from multi-task learning?')
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Chapter", "FollowUp", "StudyError", "load_chapters", "load_chapter", "chapter_paths",
           "study_file", "read_study_file", "cheatsheet_markdown", "write_cheatsheet", "CHEATSHEET"]

CHEATSHEET = Path("book") / "cheatsheet.md"
_ID = re.compile(r"^[TGCS]\d\d$")


class StudyError(ValueError):
    """A chapter or study file that the study tools cannot read; the message says what to fix."""


@dataclass(frozen=True)
class FollowUp:
    """One follow-up question of a chapter and the chapter's answer to it (markdown)."""
    question: str
    answer: str


@dataclass(frozen=True)
class Chapter:
    """What the study tools know of one chapter (markdown strings, paths relative to the root)."""
    id: str
    title: str                  # the heading after "ID · "
    part: str                   # the _toc.yml caption, e.g. "Part I: Foundations"
    path: Path                  # book/theory/T07-fine-tuning.ipynb
    question: str               # the interview question, as the interviewer asks it
    minute_answer: str
    follow_ups: tuple[FollowUp, ...]
    mistakes: tuple[str, ...]
    formulas: tuple[str, ...]   # display formulas of "In depth", LaTeX without the $$
    sections: tuple[str, ...]   # every ## and ### heading, in order
    key_points: tuple[str, ...] = ()
    quiz: tuple[dict, ...] = field(default=())

    @property
    def slug(self) -> str:
        return self.path.stem

    @property
    def page(self) -> str:
        """The chapter's page in the built book, relative to the book's root."""
        return self.path.with_suffix(".html").as_posix()


def _root(root) -> Path:
    return Path(root if root is not None else os.environ.get("TLCOURSE_ROOT", _default_root())).resolve()


def _default_root() -> Path:
    here = Path(__file__).resolve().parents[1]
    return here if (here / "_toc.yml").exists() else Path.cwd()


def chapter_paths(root=None) -> list[tuple[str, Path]]:
    """``(part caption, chapter notebook)`` for every chapter in ``_toc.yml``, in book order."""
    import yaml

    root = _root(root)
    toc_file = root / "_toc.yml"
    if not toc_file.exists():
        raise StudyError(f"{toc_file} not found: run from the course's root folder or set TLCOURSE_ROOT")
    toc = yaml.safe_load(toc_file.read_text())
    found = []

    def walk(entries, part):
        for entry in entries or []:
            file = entry.get("file")
            if file:
                path = Path(file)
                if _ID.match(path.name.split("-")[0]) and path.parts[0] == "book":
                    found.append((part, path.with_suffix(".ipynb")))
            walk(entry.get("sections"), part)

    for part in toc.get("parts", []):
        walk(part.get("chapters"), part.get("caption", ""))
    return found


def study_file(chapter_id: str, root=None) -> Path:
    """``book/study/<ID>.yml``, the chapter's rubric and quiz keys."""
    return _root(root) / "book" / "study" / f"{chapter_id}.yml"


def read_study_file(chapter_id: str, root=None) -> dict:
    """The parsed study file of a chapter; a clear error when it is missing or malformed."""
    import yaml

    path = study_file(chapter_id, root)
    if not path.exists():
        raise StudyError(f"{path} is missing: every chapter needs a study file with its key_points and "
                         f"quiz (copy book/study/T01.yml and adapt it)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise StudyError(f"{path} is not valid YAML: {err}") from None
    if not isinstance(data, dict) or data.get("chapter") != chapter_id:
        raise StudyError(f"{path} must be a mapping whose 'chapter' is {chapter_id!r}")
    points = data.get("key_points")
    if not isinstance(points, list) or not points or not all(isinstance(p, str) and p.strip() for p in points):
        raise StudyError(f"{path}: 'key_points' must be a non-empty list of sentences (the interview rubric)")
    if not isinstance(data.get("quiz"), list):
        raise StudyError(f"{path}: 'quiz' must be a list of questions")
    return data


def _markdown_cells(nb) -> list[str]:
    return [c["source"] if isinstance(c["source"], str) else "".join(c["source"])
            for c in nb["cells"] if c["cell_type"] == "markdown"]


def _split_sections(cells: list[str]) -> tuple[str, dict[str, str], list[str]]:
    """Title, {level-2 heading: its markdown (sub-sections included)}, every ## and ### heading."""
    title, current, sections, headings = "", None, {}, []
    in_code = False
    for text in cells:
        for line in text.splitlines():
            if line.lstrip().startswith("```"):
                in_code = not in_code
            if not in_code and line.startswith("# ") and not title:
                title = line[2:].strip()
                continue
            if not in_code and line.startswith("## "):
                current = line[3:].strip()
                sections[current] = ""
                headings.append(current)
                continue
            if not in_code and line.startswith("### "):
                headings.append(line[4:].strip())
            if current is not None:
                sections[current] += line + "\n"
        if current is not None:
            sections[current] += "\n"
    return title, {k: v.strip() for k, v in sections.items()}, headings


def _interview_question(cells: list[str], path: Path) -> str:
    text = "\n".join(cells[:2])
    quoted = [line[1:].strip() for line in text.splitlines() if line.startswith(">")]
    joined = " ".join(quoted)
    m = re.search(r"\*\*The interview question\.\*\*\s*(.+)", joined)
    if not m:
        raise StudyError(f"{path}: the chapter must open with '> **The interview question.** *...*'")
    return m.group(1).strip().strip("*").strip()


_FOLLOW_UP = re.compile(r"^\*\*(.+?\?)\*\*\s*(.*)$", re.S)


def _follow_ups(text: str, path: Path) -> tuple[FollowUp, ...]:
    found = []
    for para in re.split(r"\n\s*\n", text):
        m = _FOLLOW_UP.match(para.strip())
        if m:
            found.append(FollowUp(" ".join(m.group(1).split()), m.group(2).strip()))
        elif found and para.strip():  # a paragraph that continues the previous answer
            found[-1] = FollowUp(found[-1].question, found[-1].answer + "\n\n" + para.strip())
    if not found:
        raise StudyError(f"{path}: 'Follow-up questions' has no paragraph opening with a bold question")
    return tuple(found)


def _mistakes(text: str) -> tuple[str, ...]:
    items, current = [], None
    for line in text.splitlines():
        if line.startswith("- "):
            current = line[2:].strip()
            items.append(current)
        elif current is not None and line.startswith("  ") and line.strip():
            items[-1] += " " + line.strip()
    return tuple(items)


def _formulas(text: str) -> tuple[str, ...]:
    return tuple(m.strip() for m in re.findall(r"\$\$(.+?)\$\$", text, flags=re.S))


def load_chapter(path: Path | str, part: str = "", root=None, with_study: bool = True) -> Chapter:
    """Read one chapter notebook (and, with ``with_study``, its study file)."""
    root = _root(root)
    path = Path(path)
    nb = json.loads((root / path).read_text(encoding="utf-8"))
    cells = _markdown_cells(nb)
    title, sections, headings = _split_sections(cells)
    chapter_id = path.name.split("-")[0]
    prefix = f"{chapter_id} · "
    if not title.startswith(prefix):
        raise StudyError(f"{path}: the title must start with {prefix!r}, got {title[:40]!r}")
    for needed in ("The answer in a minute", "In depth", "Follow-up questions", "Common mistakes"):
        if needed not in sections:
            raise StudyError(f"{path}: no '## {needed}' section")
    extra = {}
    if with_study:
        data = read_study_file(chapter_id, root)
        extra = {"key_points": tuple(" ".join(p.split()) for p in data["key_points"]),
                 "quiz": tuple(data["quiz"])}
    return Chapter(id=chapter_id, title=title[len(prefix):].strip(), part=part, path=path,
                   question=" ".join(_interview_question(cells, path).split()),
                   minute_answer=sections["The answer in a minute"],
                   follow_ups=_follow_ups(sections["Follow-up questions"], path),
                   mistakes=_mistakes(sections["Common mistakes"]),
                   formulas=_formulas(sections["In depth"]),
                   sections=tuple(headings), **extra)


def load_chapters(root=None, with_study: bool = True) -> list[Chapter]:
    """Every chapter of the book, in ``_toc.yml`` order."""
    return [load_chapter(path, part, root, with_study) for part, path in chapter_paths(root)]


# --- the cheat sheet --------------------------------------------------------------------------

_LINK = re.compile(r"\]\(([^)#\s]+)(#[^)\s]*)?\)")


def _relink(markdown: str, chapter_dir: Path, page_dir: Path) -> str:
    """Rewrite relative links of a chapter's markdown for a page that lives in ``page_dir``."""
    def fix(m):
        target, anchor = m.group(1), m.group(2) or ""
        if re.match(r"^[a-z]+:", target) or target.startswith("/"):
            return m.group(0)
        new = os.path.relpath(os.path.normpath(chapter_dir / target), page_dir)
        return f"]({Path(new).as_posix()}{anchor})"
    return _LINK.sub(fix, markdown)


def cheatsheet_markdown(root=None) -> str:
    """The cheat sheet page: every chapter's one-minute answer and key formulas, in book order."""
    chapters = load_chapters(root, with_study=False)
    page_dir = CHEATSHEET.parent
    lines = ["# Cheat sheet", "",
             "Every chapter's answer in a minute and its key formulas, on one page to print "
             "(generated from the chapters by `python -m tlcourse.study cheatsheet`; do not edit by hand).",
             ""]
    part = None
    for ch in chapters:
        if ch.part != part:
            part = ch.part
            lines += [f"## {part}", ""]
        link = Path(os.path.relpath(ch.path, page_dir)).as_posix()
        lines += [f"### {ch.id} · {ch.title}", "", f"*{ch.question}* ([chapter]({link}))", "",
                  _relink(ch.minute_answer, ch.path.parent, page_dir), ""]
        if ch.formulas:
            lines += ["**Key formulas**", ""]
            for formula in ch.formulas:
                lines += ["$$", formula, "$$", ""]
    return "\n".join(lines).rstrip() + "\n"


def write_cheatsheet(root=None) -> Path:
    """Regenerate ``book/cheatsheet.md``; returns its path."""
    path = _root(root) / CHEATSHEET
    path.write_text(cheatsheet_markdown(root), encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m tlcourse.study")
    sub = parser.add_subparsers(dest="command", required=True)
    sheet = sub.add_parser("cheatsheet", help="regenerate book/cheatsheet.md from the chapters")
    sheet.add_argument("--check", action="store_true", help="fail if book/cheatsheet.md is stale")
    args = parser.parse_args(argv)
    if args.command == "cheatsheet":
        path = _root(None) / CHEATSHEET
        text = cheatsheet_markdown()
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                print(f"{path} is stale: run `python -m tlcourse.study cheatsheet`", file=sys.stderr)
                return 1
            print(f"{path} is up to date")
            return 0
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
