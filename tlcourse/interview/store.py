"""The candidate's progress: a SQLite file of answers and spaced-repetition cards.

Two tables:

- ``answers``: one row per answered question: when (UTC, ISO 8601), chapter, card, kind
  (``question`` or ``follow-up``), score in [0, 1], the fsrs rating it gave (1-4), the rubric
  points ticked, the typed text, the seconds taken, and whether time ran out;
- ``cards``: the fsrs state of each card (``T01/question``, ``T01/follow-up/2``), as
  :meth:`fsrs.Card.to_json`, with its next due date.

:meth:`Store.record` writes the answer and the updated card in **one committed transaction**, so
an interrupted session (Ctrl-C, a closed terminal) keeps every answer given before it and never a
half-written one.

Where it lives: ``$TLCOURSE_PROGRESS_DB`` if set, else ``platformdirs.user_data_dir("tlcourse")
/ "progress.sqlite"`` (``~/.local/share/tlcourse/progress.sqlite`` on Linux). A path inside the
course checkout is refused (:func:`check_outside`): progress is personal, and a file there would
be swept into commits or wiped by a fresh clone.
"""
from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

__all__ = ["Answer", "Store", "StoreError", "default_path", "check_outside", "checkout_roots", "ENV"]

ENV = "TLCOURSE_PROGRESS_DB"
SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    id        INTEGER PRIMARY KEY,
    at        TEXT    NOT NULL,
    chapter   TEXT    NOT NULL,
    card      TEXT    NOT NULL,
    kind      TEXT    NOT NULL,
    score     REAL    NOT NULL CHECK (score BETWEEN 0 AND 1),
    rating    INTEGER NOT NULL CHECK (rating BETWEEN 1 AND 4),
    covered   TEXT    NOT NULL DEFAULT '',
    answer    TEXT    NOT NULL DEFAULT '',
    seconds   REAL    NOT NULL,
    timed_out INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS answers_chapter ON answers (chapter, at);
CREATE TABLE IF NOT EXISTS cards (
    card    TEXT PRIMARY KEY,
    chapter TEXT NOT NULL,
    due     TEXT NOT NULL,
    fsrs    TEXT NOT NULL
);
"""


class StoreError(RuntimeError):
    """A progress file that cannot be used; the message says what to do."""


@dataclass(frozen=True)
class Answer:
    """One answered question."""
    chapter: str
    card: str
    kind: str            # question | follow-up
    score: float         # share of the rubric covered, or (self-rating - 1) / 3
    rating: int          # the fsrs rating it was scheduled with, 1 (Again) to 4 (Easy)
    answer: str = ""     # the typed text
    seconds: float = 0.0
    covered: str = ""    # the rubric points ticked, e.g. "1 3 4"
    timed_out: bool = False
    at: datetime | None = None


def checkout_roots() -> list[Path]:
    """The course checkout(s) a progress file must stay out of: the course root and this package's repository."""
    from .. import study

    roots = {study._root(None)}
    here = Path(__file__).resolve().parents[2]
    if (here / "_toc.yml").exists() or (here / ".git").exists():
        roots.add(here)
    return sorted(roots)


def check_outside(path, roots=None) -> Path:
    """The resolved path, or :class:`StoreError` when it lies inside the course checkout."""
    resolved = Path(path).expanduser().resolve()
    for root in roots if roots is not None else checkout_roots():
        root = Path(root).resolve()
        if resolved == root or resolved.is_relative_to(root):
            raise StoreError(
                f"{resolved} is inside the course checkout {root}: keep your progress outside it "
                f"(it would end up in commits, or be lost with the checkout). Leave --db out to use "
                f"{_platform_default()}, or pass a path elsewhere, e.g. --db ~/tlcourse-progress.sqlite")
    return resolved


def _platform_default() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("tlcourse")) / "progress.sqlite"


def default_path() -> Path:
    """``$TLCOURSE_PROGRESS_DB``, else ``platformdirs.user_data_dir("tlcourse")/progress.sqlite``."""
    env = os.environ.get(ENV)
    return Path(env).expanduser() if env else _platform_default()


def _iso(at: datetime) -> str:
    if at.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware (UTC)")
    return at.astimezone(timezone.utc).isoformat()


class Store:
    """The progress file. Use as a context manager, or call :meth:`close`."""

    def __init__(self, path=None, check: bool = True):
        path = Path(path).expanduser() if path is not None else default_path()
        self.path = check_outside(path) if check else path.resolve()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.conn = sqlite3.connect(str(self.path), timeout=10)
            version = self.conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(f"{self.path} was written by a newer tlcourse (schema {version}); "
                                 f"upgrade tlcourse or use another --db")
            with self.conn:
                self.conn.executescript(_SCHEMA)
                self.conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except sqlite3.DatabaseError as err:
            raise StoreError(f"cannot use {self.path} as a progress file ({err}); move it away or pass "
                             f"another --db") from None
        except OSError as err:
            raise StoreError(f"cannot create {self.path} ({err}); pass a writable --db") from None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self.conn.close()

    # -- writing
    def record(self, answer: Answer, card) -> int:
        """Store the answer and the card's new fsrs state in one committed transaction; the row's id."""
        at = answer.at or datetime.now(timezone.utc)
        with self.conn:  # BEGIN ... COMMIT, or ROLLBACK on any exception: never half an answer
            cursor = self.conn.execute(
                "INSERT INTO answers (at, chapter, card, kind, score, rating, covered, answer, seconds, timed_out) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (_iso(at), answer.chapter, answer.card, answer.kind, float(answer.score), int(answer.rating),
                 answer.covered, answer.answer, float(answer.seconds), int(answer.timed_out)))
            self.conn.execute(
                "INSERT INTO cards (card, chapter, due, fsrs) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (card) DO UPDATE SET chapter = excluded.chapter, due = excluded.due, fsrs = excluded.fsrs",
                (answer.card, answer.chapter, _iso(card.due), card.to_json()))
        return cursor.lastrowid

    # -- reading
    def card(self, key: str):
        """The fsrs card stored under this key, or None for a card never answered."""
        import fsrs

        row = self.conn.execute("SELECT fsrs FROM cards WHERE card = ?", (key,)).fetchone()
        return fsrs.Card.from_json(row[0]) if row else None

    def cards(self) -> dict:
        """Every stored card, by key."""
        import fsrs

        return {k: fsrs.Card.from_json(v) for k, v in self.conn.execute("SELECT card, fsrs FROM cards")}

    def answers(self, chapter: str | None = None) -> list[Answer]:
        """Answers in the order given, optionally of one chapter."""
        query = ("SELECT chapter, card, kind, score, rating, answer, seconds, covered, timed_out, at FROM answers"
                 + (" WHERE chapter = ?" if chapter else "") + " ORDER BY at, id")
        rows = self.conn.execute(query, (chapter,) if chapter else ())
        return [Answer(c, k, kind, s, r, a, sec, cov, bool(t), datetime.fromisoformat(at))
                for c, k, kind, s, r, a, sec, cov, t, at in rows]

    def count(self) -> int:
        return self.conn.execute("SELECT COUNT(*) FROM answers").fetchone()[0]

    def scores(self) -> dict[str, list[float]]:
        """Every chapter's scores, oldest first."""
        out: dict[str, list[float]] = {}
        for chapter, score in self.conn.execute("SELECT chapter, score FROM answers ORDER BY at, id"):
            out.setdefault(chapter, []).append(score)
        return out
