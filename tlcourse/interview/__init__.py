"""``tlcourse interview``: a timed mock interview in the terminal, scheduled by spaced repetition.

The modules, one concept each:

- :mod:`.store`: the SQLite progress file (answers and fsrs cards, one transaction per answer);
- :mod:`.schedule`: the FSRS scheduler (Ye et al.) and the draw that prefers due cards, then
  the chapters the candidate scores worst on;
- :mod:`.session`: the terminal loop (question, countdown, rubric, score, follow-up);
- :mod:`.hints`: the offline "seems to miss" hint, and its measurement;
- :mod:`.progress`: ``tlcourse progress``, the per-chapter table and plot.

Questions, rubrics and follow-ups come from the chapters (:mod:`tlcourse.study`).
"""
from __future__ import annotations

import random
import sys

__all__ = ["main", "select_chapters"]

_ROMAN = {"i": 1, "ii": 2, "iii": 3, "iv": 4, "v": 5, "vi": 6, "vii": 7, "viii": 8, "ix": 9, "x": 10}


def _part_number(caption: str) -> int | None:
    import re

    m = re.match(r"\s*part\s+([ivx]+|\d+)\b", caption, re.I)
    if not m:
        return None
    token = m.group(1).lower()
    return int(token) if token.isdigit() else _ROMAN.get(token)


def _matches_part(caption: str, wanted: str) -> bool:
    """``--part`` accepts a number (``1``, ``I``), the part tag (``Part-I-Foundations``) or a word of the caption."""
    from ..cards import part_tag

    w = wanted.strip().lower()
    number = int(w) if w.isdigit() else _ROMAN.get(w)
    if number is not None:
        return _part_number(caption) == number
    return w in {part_tag(caption).lower(), caption.lower()} or w in caption.lower()


def select_chapters(root=None, chapters=None, parts=None):
    """The chapters to ask about and the lines saying which were left out (no study file)."""
    from .. import study
    from ..cards import available_chapters

    found, problems = available_chapters(root, chapters)
    if parts:
        kept = [c for c in found if any(_matches_part(c.part, p) for p in parts)]
        if not kept:
            captions = sorted({cap for cap, _ in study.chapter_paths(root)})
            raise study.StudyError(f"no chapter with a study file matches --part {' '.join(parts)} "
                                   f"(parts: {'; '.join(captions)})")
        found = kept
    return found, problems


def _answers(n: int) -> str:
    return f"{n} answer{'s' if n != 1 else ''}"


def _help_epilog() -> str:
    from . import hints

    return (f"{hints.summary()} See benchmarks/HINTS.md. Progress file: $TLCOURSE_PROGRESS_DB, "
            f"else the user data folder; never inside the course checkout. Ctrl-C stops at any time and "
            f"keeps every answer already scored (exit status 130).")


def main(argv: list[str] | None = None) -> int:
    import argparse

    from . import hints
    from .store import default_path

    parser = argparse.ArgumentParser(
        prog="tlcourse interview",
        description="A timed mock interview: the chapters' interview questions, scored against their rubric, "
                    "then a follow-up; due questions first (FSRS spaced repetition), then the chapters you "
                    "score worst on.",
        epilog=_help_epilog())
    parser.add_argument("--chapter", action="append", metavar="ID", help="only this chapter, e.g. T07 (repeatable)")
    parser.add_argument("--part", action="append", metavar="PART",
                        help="only this part: its number (1 or I), its tag (Part-I-Foundations) or a word of its "
                             "title (repeatable)")
    parser.add_argument("-n", type=int, default=3, metavar="N", help="questions to ask (default: 3)")
    parser.add_argument("--seconds", type=float, default=120, help="time per answer (default: 120)")
    parser.add_argument("--no-follow-ups", dest="follow_ups", action="store_false",
                        help="skip the follow-up round after each question")
    parser.add_argument("--db", metavar="PATH",
                        help=f"the progress file (default: $TLCOURSE_PROGRESS_DB, else {default_path()})")
    parser.add_argument("--hints", dest="hints", action="store_true", default=None,
                        help="show which key points your typed answer seems to miss" +
                             ("" if hints.shipped() else " (off by default: not accurate enough, see below)"))
    parser.add_argument("--no-hints", dest="hints", action="store_false", help="no hint")
    parser.add_argument("--seed", type=int, help="seed the draw (to repeat a session)")
    parser.add_argument("--root", help="the course folder (default: this checkout, or $TLCOURSE_ROOT)")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error("-n must be at least 1")
    if args.seconds <= 0:
        parser.error("--seconds must be positive")
    try:
        return _run(args)
    except KeyboardInterrupt:  # before the first question (loading chapters or the model)
        print("\nInterrupted before the first question: saved 0 answers.")
        return 130


def _run(args) -> int:
    from .. import study
    from . import hints
    from .session import Console, Session
    from .store import Store, StoreError

    try:
        chapters, problems = select_chapters(args.root, args.chapter, args.part)
    except study.StudyError as err:
        print(f"tlcourse interview: {err}", file=sys.stderr)
        return 2
    from ..cards import left_out_lines

    for problem in left_out_lines(problems):
        print(f"note: {problem}", file=sys.stderr)
    if not chapters:
        print("tlcourse interview: no chapter has a study file with its rubric (book/study/<ID>.yml)", file=sys.stderr)
        return 2
    try:
        store = Store(args.db)
    except StoreError as err:
        print(f"tlcourse interview: {err}", file=sys.stderr)
        return 2

    use_hints = hints.shipped() if args.hints is None else args.hints
    hinter = None
    if use_hints:
        if not hints.shipped():
            print(f"note: {hints.summary()}", file=sys.stderr)
        try:
            hinter = hints.Hinter(background=True)
        except RuntimeError as err:
            print(f"note: no hint ({err})", file=sys.stderr)

    session = Session(store, chapters, None, n=args.n, seconds=args.seconds, follow_ups=args.follow_ups,
                      hinter=hinter, rng=random.Random(args.seed))
    before = store.count()
    status = 0
    try:
        with Console() as console:
            session.console = console
            session.run()
    except KeyboardInterrupt:
        status = 130
        print(f"\nInterrupted: saved {_answers(store.count() - before)} to {store.path}; "
              f"run `tlcourse interview` again to go on where the schedule stands.")
    except EOFError:
        print(f"\nInput ended: saved {_answers(store.count() - before)} to {store.path}.")
    finally:
        store.close()
    return status
