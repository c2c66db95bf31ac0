"""The terminal loop of the mock interview: ask, time, show the rubric, score, store, follow up.

One round per drawn chapter (:func:`tlcourse.interview.schedule.draw`):

1. the chapter's interview question, with a countdown (``--seconds``, default 120). The candidate
   types an answer and ends it with an empty line, or answers aloud and just presses Enter; when
   time runs out the round says so and keeps what was typed;
2. the rubric, the chapter's key points, numbered (with the hint's "seems missing" marks when
   the hint is on and something was typed), and the question "which did you cover?" (``1 3 4``,
   ``1-3``, ``all``, ``none``);
3. score = covered / total, mapped to an fsrs rating; the answer and the card's new schedule are
   stored in one committed transaction before anything else happens;
4. a follow-up question of the same chapter, timed the same way; then the chapter's written
   answer, and a self-rating from 1 (missed it) to 4 (easy), stored the same way.

Terminal. On a terminal the answer is read character by character (cbreak mode, no echo by the
terminal) and the input line is redrawn with the time left by a background thread every half
second; long lines scroll sideways. Backspace, Ctrl-U (clear the line) and pasting work; arrow
keys are ignored. When standard input is not a terminal (a pipe, a file) there is no countdown:
lines are read as they come, still with the time limit, and echoed so that a transcript reads
well. Ctrl-C raises :class:`KeyboardInterrupt` wherever it is pressed; the caller reports how
many answers were saved, and the terminal is always restored.
"""
from __future__ import annotations

import codecs
import math
import os
import random
import re
import shutil
import sys
import textwrap
import threading
import time
from datetime import datetime, timezone

from . import schedule
from .store import Answer

__all__ = ["Console", "Session", "plain", "parse_covered", "when"]


# --------------------------------------------------------------------------- text
def plain(markdown: str, width: int | None = None, indent: str = "") -> str:
    """Chapter markdown as terminal text: emphasis and link markup dropped, paragraphs re-wrapped.

    >>> plain("The **source** and the *target*, see [T06](x.ipynb).\\nNext line.")
    'The source and the target, see T06. Next line.'
    """
    width = width or min(100, shutil.get_terminal_size((100, 24)).columns) - 1
    out = []
    for para in re.split(r"\n\s*\n", str(markdown).strip()):
        text = re.sub(r"\[([^\]]+)\]\([^)]+\)", r"\1", para)
        text = re.sub(r"\*\*(.+?)\*\*|__(.+?)__", lambda m: m.group(1) or m.group(2), text, flags=re.S)
        text = re.sub(r"(?<![\w*])\*(?=\S)(.+?)(?<=\S)\*(?![\w*])", r"\1", text, flags=re.S)
        text = text.replace("`", "")
        if re.match(r"^\s*([-*+]|\d+[.)])\s", text):
            items = re.split(r"\n(?=\s*(?:[-*+]|\d+[.)])\s)", text)
            out.append("\n".join(textwrap.fill(" ".join(i.split()), width, initial_indent=indent,
                                               subsequent_indent=indent + "  ", break_on_hyphens=False)
                                 for i in items))
        else:
            out.append(textwrap.fill(" ".join(text.split()), width, initial_indent=indent, subsequent_indent=indent,
                                     break_on_hyphens=False))
    return "\n\n".join(out)


def parse_covered(text: str, total: int) -> list[int] | None:
    """The rubric points ticked, 1-based and sorted, or None when the reply cannot be read.

    >>> parse_covered("1 3, 4", 5), parse_covered("2-4", 5), parse_covered("all", 3), parse_covered("none", 3)
    ([1, 3, 4], [2, 3, 4], [1, 2, 3], [])
    >>> parse_covered("9", 5) is None, parse_covered("", 5) is None
    (True, True)
    """
    text = text.strip().lower()
    if text in {"all", "a"}:
        return list(range(1, total + 1))
    if text in {"none", "no", "0", "-"}:
        return []
    if not text:
        return None
    found = set()
    for token in re.split(r"[\s,;]+", text):
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", token)
        if not m:
            return None
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if not 1 <= lo <= hi <= total:
            return None
        found.update(range(lo, hi + 1))
    return sorted(found)


def when(due: datetime, now: datetime | None = None) -> str:
    """A due date said the way a person would: 'now', 'in 10 min', 'in 5 h', 'in 3 days (2026-07-01)'."""
    now = now or datetime.now(timezone.utc)
    seconds = (due - now).total_seconds()
    if seconds <= 30:
        return "now"
    if seconds < 3600:
        return f"in {math.ceil(seconds / 60)} min"
    if seconds < 86400:
        return f"in {round(seconds / 3600)} h"
    days = round(seconds / 86400)
    return f"in {days} day{'s' if days != 1 else ''} ({due.astimezone().date().isoformat()})"


# --------------------------------------------------------------------------- console
class Console:
    """Terminal input with a deadline, and the countdown line. Use as a context manager."""

    TICK = 0.5

    def __init__(self, stdin=None, stdout=None):
        self.stdin, self.out = stdin or sys.stdin, stdout or sys.stdout
        try:
            self.fd = self.stdin.fileno()
        except (AttributeError, OSError, ValueError):
            self.fd = None
        self.tty = bool(self.fd is not None and os.isatty(self.fd) and self.out.isatty())
        self._pending, self._eof = "", False
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._lock = threading.RLock()
        self._line: list[str] = []
        self._prefix = lambda: ""
        self._saved_mode = None

    # -- terminal mode
    def __enter__(self):
        if self.tty:
            import termios
            import tty

            self._saved_mode = termios.tcgetattr(self.fd)
            tty.setcbreak(self.fd)  # no line buffering, no echo; Ctrl-C still sends SIGINT
            mode = termios.tcgetattr(self.fd)
            mode[0] &= ~termios.ICRNL  # Enter arrives as CR, so a pasted CRLF can be read as one line end
            termios.tcsetattr(self.fd, termios.TCSANOW, mode)
        return self

    def __exit__(self, *exc):
        self.restore()

    def restore(self):
        if self._saved_mode is not None:
            import termios

            termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved_mode)
            self._saved_mode = None

    # -- output
    def say(self, text: str = "") -> None:
        with self._lock:
            self.out.write(text + "\n")
            self.out.flush()

    def bold(self, text: str) -> str:
        return f"\x1b[1m{text}\x1b[0m" if self.tty else text

    def dim(self, text: str) -> str:
        return f"\x1b[2m{text}\x1b[0m" if self.tty else text

    # -- raw input
    def _fill(self, timeout: float | None) -> bool:
        """Read what is available into the pending text; False on timeout. EOFError at end of input."""
        if self._eof:
            raise EOFError
        if self.fd is None:  # a file-like object without a descriptor: no timeout possible
            data = self.stdin.readline()
            if not data:
                self._eof = True
            self._pending += data
            return True
        import select

        ready, _, _ = select.select([self.fd], [], [], None if timeout is None else max(0.0, timeout))
        if not ready:
            return False
        data = os.read(self.fd, 4096)
        if not data:
            self._eof = True
            self._pending += self._decoder.decode(b"", final=True)
        else:
            self._pending += self._decoder.decode(data)
        return True

    def _readline(self, deadline: float | None) -> str | None:
        """A line (without its end), None at the deadline; EOFError at end of input."""
        while "\n" not in self._pending:
            if self._eof:
                if self._pending:
                    line, self._pending = self._pending, ""
                    return line.rstrip("\r")
                raise EOFError
            timeout = None if deadline is None else deadline - time.monotonic()
            if timeout is not None and timeout <= 0:
                return None
            try:
                self._fill(timeout)
            except EOFError:
                continue
        line, self._pending = self._pending.split("\n", 1)
        return line.rstrip("\r")

    # -- the line editor (terminal)
    def _redraw(self) -> None:
        with self._lock:
            prefix = self._prefix()
            width = shutil.get_terminal_size((80, 24)).columns
            room = max(10, width - len(_strip_ansi(prefix)) - 1)
            text = "".join(self._line)
            self.out.write("\r\x1b[K" + prefix + text[-room:])
            self.out.flush()

    def _edit(self, deadline: float | None, prefix, done_prefix: str) -> tuple[str, bool]:
        """One line typed at the terminal: ``(text, timed_out)``; EOFError on Ctrl-D at an empty line."""
        self._line, self._prefix = [], prefix
        self._redraw()
        escape = 0
        while True:
            while not self._pending:
                timeout = None if deadline is None else deadline - time.monotonic()
                if timeout is not None and timeout <= 0:
                    self._finish(done_prefix)
                    return "".join(self._line), True
                if not self._fill(timeout):
                    continue
            ch, self._pending = self._pending[0], self._pending[1:]
            if escape:  # skip an escape sequence (arrows, function keys)
                if escape == 1:
                    escape = 2 if ch in "[O" else 0
                elif "@" <= ch <= "~":
                    escape = 0
                continue
            with self._lock:
                if ch == "\x1b":
                    escape = 1
                elif ch in "\r\n":
                    if ch == "\r" and self._pending.startswith("\n"):
                        self._pending = self._pending[1:]  # a pasted CRLF is one line end, not two
                    self._finish(done_prefix)
                    return "".join(self._line), False
                elif ch in "\x7f\x08":
                    if self._line:
                        self._line.pop()
                    self._redraw()
                elif ch == "\x15":  # Ctrl-U
                    self._line.clear()
                    self._redraw()
                elif ch == "\x04":  # Ctrl-D
                    if not self._line:
                        self._finish(done_prefix)
                        raise EOFError
                elif ch == "\t":
                    self._line.append(" ")
                    self._redraw()
                elif ch >= " ":
                    self._line.append(ch)
                    self._redraw()

    def _finish(self, done_prefix: str) -> None:
        with self._lock:
            self._prefix = lambda: done_prefix
            self.out.write("\r\x1b[K" + done_prefix + "".join(self._line) + "\n")
            self.out.flush()
            self._prefix = lambda: ""

    # -- what the session uses
    def ask(self, prompt: str) -> str:
        """A reply without time limit. EOFError at end of input."""
        if self.tty:
            return self._edit(None, lambda: prompt, prompt)[0]
        with self._lock:
            self.out.write(prompt)
            self.out.flush()
        line = self._readline(None)
        self.say(line)  # echo, so that a piped transcript reads like a terminal one
        return line

    def read_answer(self, seconds: float) -> tuple[str, float, bool]:
        """Lines until an empty one or the deadline: ``(text, seconds taken, timed out)``."""
        start = time.monotonic()
        deadline = start + seconds
        lines: list[str] = []
        timed_out = False
        stop = threading.Event()
        ticker = None
        if self.tty:
            def left():
                remaining = max(0, math.ceil(deadline - time.monotonic()))
                label = f"[{remaining // 60}:{remaining % 60:02d}]"
                return (f"\x1b[1;31m{label}\x1b[0m" if remaining <= 10 else self.dim(label)) + " \u203a "

            def tick():
                while not stop.wait(self.TICK):
                    self._redraw()

            ticker = threading.Thread(target=tick, daemon=True)
        try:
            if ticker:
                self._prefix = left
                ticker.start()
            while True:
                try:
                    if self.tty:
                        line, timed_out = self._edit(deadline, left, "  \u203a ")
                    else:
                        line = self._readline(deadline)
                        timed_out = line is None
                        if line is not None and line.strip():
                            self.say("  \u203a " + line)
                except EOFError:
                    if lines:
                        break
                    raise
                if line and line.strip():
                    lines.append(line)
                if timed_out or not (line or "").strip():
                    break
        finally:
            stop.set()
            if ticker and ticker.is_alive():
                ticker.join(1)
        return "\n".join(lines), round(time.monotonic() - start, 2), timed_out


def _strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


# --------------------------------------------------------------------------- the session
class Session:
    """One mock interview. :attr:`saved` counts the answers stored so far."""

    def __init__(self, store, chapters, console, n: int = 3, seconds: float = 120, follow_ups: bool = True,
                 hinter=None, rng: random.Random | None = None, clock=None):
        if not chapters:
            raise ValueError("no chapter to ask about")
        self.store, self.chapters, self.console = store, list(chapters), console
        self.n, self.seconds, self.follow_ups, self.hinter = n, seconds, follow_ups, hinter
        self.rng = rng or random.Random()
        self.clock = clock or (lambda: datetime.now(timezone.utc))
        self.sched = schedule.scheduler()
        self.saved = 0

    def run(self) -> int:
        """Ask the drawn questions; returns the number of answers stored."""
        cards, scores = self.store.cards(), self.store.scores()
        by_id = {c.id: c for c in self.chapters}
        order = schedule.draw(list(by_id), cards, scores, self.n, self.rng, self.clock())
        c = self.console
        c.say(c.bold(f"Mock interview: {len(order)} question{'s' if len(order) != 1 else ''}"
                     f"{' with follow-ups' if self.follow_ups else ''}, {self.seconds:g} s per answer.")
              + " Ctrl-C stops at any time; every answer is saved as soon as it is scored.")
        for i, chapter_id in enumerate(order, 1):
            chapter = by_id[chapter_id]
            self._main_question(chapter, i, len(order))
            if self.follow_ups and chapter.follow_ups:
                self._follow_up(chapter, cards)
        c.say("")
        c.say(f"Done: saved {self.saved} answer{'s' if self.saved != 1 else ''} to {self.store.path}. "
              f"`tlcourse progress` shows your scores.")
        return self.saved

    def _timed(self):
        c = self.console
        how = "type your answer and end it with an empty line, or answer aloud and press Enter"
        if not c.tty:
            how += " (no countdown: input is not a terminal)"
        c.say(c.dim(f"You have {self.seconds:g} s: {how}."))
        text, seconds, timed_out = c.read_answer(self.seconds)
        if timed_out:
            c.say(c.bold(f"Time is up ({self.seconds:g} s).") + (" Your answer so far is kept." if text else ""))
        return text, seconds, timed_out

    def _main_question(self, chapter, i: int, total: int) -> None:
        c = self.console
        c.say("")
        c.say(c.bold(f"Question {i} of {total} \u00b7 {chapter.id} \u00b7 {chapter.part}"))
        c.say(plain(chapter.question))
        text, seconds, timed_out = self._timed()
        points = list(chapter.key_points)
        missing = self._hint(points, text)
        c.say("")
        c.say(c.bold("A good answer covers:"))
        for number, point in enumerate(points, 1):
            mark = c.dim("   <- seems missing (hint)") if number in missing else ""
            c.say(f"  {number:>2}. " + plain(point, indent=" " * 6)[6:] + mark)
        covered = None
        while covered is None:
            reply = c.ask("Which did you cover? (e.g. 1 3 4, 1-3, all, none): ")
            covered = parse_covered(reply, len(points))
            if covered is None:
                c.say(f"  Type point numbers between 1 and {len(points)}, 'all' or 'none'.")
        score = len(covered) / len(points)
        rating = schedule.rating_for(score)
        key = schedule.question_key(chapter.id)
        card = self._store(chapter.id, key, "question", score, rating, text, seconds, timed_out,
                           " ".join(map(str, covered)))
        c.say(f"Score {len(covered)}/{len(points)} = {score:.0%} \u2192 {rating.name}; "
              f"this question comes back {when(card.due, self.clock())}.")

    def _follow_up(self, chapter, cards) -> None:
        c = self.console
        number = schedule.pick_follow_up(chapter.id, len(chapter.follow_ups), cards, self.rng, self.clock())
        follow = chapter.follow_ups[number - 1]
        c.say("")
        c.say(c.bold(f"Follow-up \u00b7 {chapter.id}"))
        c.say(plain(follow.question))
        text, seconds, timed_out = self._timed()
        c.say("")
        c.say(c.bold("The chapter's answer:"))
        c.say(plain(follow.answer, indent="  "))
        rating = None
        while rating is None:
            reply = c.ask("How did you do? 1 missed it, 2 hard, 3 good, 4 easy: ").strip()
            rating = int(reply) if reply in {"1", "2", "3", "4"} else None
            if rating is None:
                c.say("  Type 1, 2, 3 or 4.")
        key = schedule.follow_up_key(chapter.id, number)
        card = self._store(chapter.id, key, "follow-up", (rating - 1) / 3, rating, text, seconds, timed_out, "")
        c.say(f"Saved; this follow-up comes back {when(card.due, self.clock())}.")

    def _hint(self, points: list[str], text: str) -> set[int]:
        if self.hinter is None or not text.strip():
            return set()
        hint = self.hinter.hint(points, text)
        if hint is None:
            if self.hinter.error:
                self.console.say(self.console.dim(f"(no hint: {self.hinter.error})"))
            return set()
        return set(hint.missing)

    def _store(self, chapter_id, key, kind, score, rating, text, seconds, timed_out, covered):
        now = self.clock()
        card = self.store.card(key) or schedule.new_card(key, now)
        card = schedule.review(card, rating, now, self.sched)
        self.store.record(Answer(chapter_id, key, kind, score, int(rating), text, seconds, covered, timed_out, now),
                          card)
        self.saved += 1
        return card
