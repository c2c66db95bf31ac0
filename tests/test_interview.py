"""tlcourse interview / progress: the store, the schedule, the session loop and the CLI end to end."""
from __future__ import annotations

import os
import queue
import random
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import fsrs
import pytest

from tests.fake_course import make_course
from tlcourse import study
from tlcourse.interview import schedule, select_chapters
from tlcourse.interview.progress import plot, rows, table
from tlcourse.interview.session import Session
from tlcourse.interview.store import Answer, Store, StoreError, check_outside, default_path

ROOT = Path(__file__).resolve().parents[1]
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)


@pytest.fixture()
def course(tmp_path):
    return make_course(tmp_path / "course")


@pytest.fixture()
def chapters(course):
    return study.load_chapters(course)


class FakeConsole:
    """Scripted replies; an item that is an exception class is raised when it comes up."""
    tty = False

    def __init__(self, script):
        self.script, self.said = list(script), []

    def _next(self):
        item = self.script.pop(0)
        if isinstance(item, type) and issubclass(item, BaseException):
            raise item()
        return item

    def say(self, text=""):
        self.said.append(text)

    bold = dim = staticmethod(lambda text: text)

    def ask(self, prompt):
        return self._next()

    def read_answer(self, seconds):
        item = self._next()
        return (item, 3.5, False) if isinstance(item, str) else item

    @property
    def text(self):
        return "\n".join(self.said)


class Clock:
    def __init__(self, now=T0):
        self.now = now

    def __call__(self):
        return self.now


# --------------------------------------------------------------------------- store
def test_interrupt_after_first_answer_keeps_it(tmp_path, chapters):
    db = tmp_path / "p.sqlite"
    console = FakeConsole(["Reuse a pretrained model; it needs few labels.", "1 2",
                           KeyboardInterrupt])  # Ctrl-C while the follow-up is being answered
    store = Store(db)
    session = Session(store, chapters[:1], console, n=1, seconds=5, rng=random.Random(0), clock=Clock())
    with pytest.raises(KeyboardInterrupt):
        session.run()
    assert session.saved == 1
    # a fresh connection (another process, as after a crash) sees the committed answer and card
    conn = sqlite3.connect(db)
    (n, score, text, card), = conn.execute("SELECT COUNT(*), score, answer, card FROM answers").fetchall()
    assert (n, text, card) == (1, "Reuse a pretrained model; it needs few labels.", "T98/question")
    assert score == pytest.approx(2 / 3)
    assert conn.execute("SELECT card FROM cards").fetchall() == [("T98/question",)]
    conn.close()
    store.close()


def test_answer_and_card_are_one_transaction(tmp_path, monkeypatch):
    store = Store(tmp_path / "p.sqlite")
    card = schedule.new_card("T98/question", T0)
    monkeypatch.setattr(fsrs.Card, "to_json", lambda self, indent=None: (_ for _ in ()).throw(RuntimeError("disk")))
    with pytest.raises(RuntimeError):
        store.record(Answer("T98", "T98/question", "question", 0.5, 2, at=T0), card)
    assert store.count() == 0  # the answer row was rolled back with the failed card write
    monkeypatch.undo()
    store.record(Answer("T98", "T98/question", "question", 0.5, 2, at=T0), card)
    assert store.count() == 1 and store.card("T98/question") is not None


def test_resume_asks_the_due_question_first(tmp_path, chapters):
    db = tmp_path / "p.sqlite"
    clock = Clock()
    with Store(db) as store:  # session 1: only S97, failed -> Again, due in 10 minutes
        s97 = [c for c in chapters if c.id == "S97"]
        Session(store, s97, FakeConsole(["", "none", "", "1"]), n=1, seconds=5, rng=random.Random(0),
                clock=clock).run()
        due = store.card("T98/question"), store.card("S97/question")
        assert due[0] is None and due[1].due == T0 + timedelta(minutes=10)
    clock.now = T0 + timedelta(hours=2)
    for seed in range(5):  # session 2, whatever the seed: the due S97 comes first
        with Store(db) as store:
            order = schedule.draw(["T98", "S97"], store.cards(), store.scores(), 2, random.Random(seed), clock())
        assert order[0] == "S97"
    with Store(db) as store:
        console = FakeConsole(["", "all", "", "4", "", "all", "", "4"])
        Session(store, chapters, console, n=2, seconds=5, rng=random.Random(1), clock=clock).run()
        assert console.text.index("S97") < console.text.index("T98")
        assert store.count() == 2 + 4
        assert store.card("S97/question").due > clock.now + timedelta(hours=12)


def test_weighted_draw_prefers_low_scores():
    rng = random.Random(1234)
    scores = {"weak": [0.0, 0.1, 0.0], "strong": [1.0, 0.9, 1.0]}
    counts = Counter(schedule.draw(["weak", "strong", "new"], {}, scores, 1, rng, T0)[0] for _ in range(3000))
    assert counts["weak"] > counts["new"] > counts["strong"]
    w = [schedule.chapter_weight(scores.get(c, [])) for c in ("weak", "strong", "new")]
    expected = w[0] / sum(w)
    assert abs(counts["weak"] / 3000 - expected) < 0.03
    # n distinct chapters, never one twice
    assert sorted(schedule.draw(["a", "b", "c"], {}, {}, 5, rng, T0)) == ["a", "b", "c"]


def test_due_dates_move_with_the_rating():
    sched = schedule.scheduler()
    first = {r: schedule.review(schedule.new_card("k", T0), r, T0, sched) for r in fsrs.Rating}
    dues = [first[r].due for r in (fsrs.Rating.Again, fsrs.Rating.Hard, fsrs.Rating.Good, fsrs.Rating.Easy)]
    assert dues == sorted(dues) and len(set(dues)) == 4
    assert first[fsrs.Rating.Again].due == T0 + timedelta(minutes=10)
    # a card in review: Easy pushes it further out than Good, Again brings it back within the day
    card = first[fsrs.Rating.Easy]
    later = card.due
    again, good, easy = (schedule.review(card, r, later, sched).due
                         for r in (fsrs.Rating.Again, fsrs.Rating.Good, fsrs.Rating.Easy))
    assert again < later + timedelta(days=1) < good < easy
    assert schedule.rating_for(4 / 7) == fsrs.Rating.Hard and schedule.rating_for(1.0) == fsrs.Rating.Easy


def test_follow_up_pick_prefers_due_then_unseen():
    rng = random.Random(0)
    seen = {schedule.follow_up_key("T98", 1): schedule.review(schedule.new_card("x", T0), 3, T0)}
    assert schedule.pick_follow_up("T98", 2, seen, rng, T0) == 2  # 1 was seen and is not due
    assert schedule.pick_follow_up("T98", 2, seen, rng, T0 + timedelta(days=30)) == 1  # now 1 is due


# --------------------------------------------------------------------------- paths
def test_default_db_is_outside_the_checkout(monkeypatch, tmp_path):
    monkeypatch.delenv("TLCOURSE_PROGRESS_DB", raising=False)
    path = default_path()
    assert path.name == "progress.sqlite" and not path.resolve().is_relative_to(ROOT)
    check_outside(path)  # does not raise
    monkeypatch.setenv("TLCOURSE_PROGRESS_DB", str(tmp_path / "mine.sqlite"))
    assert default_path() == tmp_path / "mine.sqlite"
    with pytest.raises(StoreError, match="inside the course checkout"):
        Store(ROOT / "progress.sqlite")
    assert not (ROOT / "progress.sqlite").exists()


# --------------------------------------------------------------------------- progress
def test_progress_table_and_plot(tmp_path, chapters):
    db = tmp_path / "p.sqlite"
    clock = Clock()
    with Store(db) as store:
        for day, covered in enumerate(["1", "1 2", "all"]):
            clock.now = T0 + timedelta(days=day)
            Session(store, chapters[:1], FakeConsole(["", covered, "", "3"]), n=1, seconds=5,
                    rng=random.Random(0), clock=clock).run()
        (row,) = rows(store, clock.now)
        assert row["attempts"] == 6 and row["last"] == pytest.approx(2 / 3)
        text = table(store, None, clock.now)
        assert "T98" in text and "attempts" in text and "next due" in text and "6 answers" in text
        png = plot(store, tmp_path / "progress.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_select_by_part_and_chapter(course):
    assert [c.id for c in select_chapters(course, parts=["IV"])[0]] == ["S97"]
    assert [c.id for c in select_chapters(course, parts=["foundations"])[0]] == ["T98"]
    assert [c.id for c in select_chapters(course, parts=["Part-IV-Scenarios", "1"])[0]] == ["T98", "S97"]
    assert [c.id for c in select_chapters(course, chapters=["s97"])[0]] == ["S97"]
    with pytest.raises(study.StudyError, match="parts: Part I: Foundations; Part IV: Scenarios"):
        select_chapters(course, parts=["Appendix"])


# --------------------------------------------------------------------------- the CLI, end to end
def _cli(course, *args):
    env = {**os.environ, "TLCOURSE_ROOT": str(course), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("TLCOURSE_PROGRESS_DB", None)
    return [sys.executable, "-m", "tlcourse", *args], env


def test_cli_piped_session(course, tmp_path):
    db = tmp_path / "p.sqlite"
    cmd, env = _cli(course, "interview", "--db", str(db), "--seconds", "1", "-n", "2", "--seed", "3")
    replies = "I would reuse a pretrained model.\n\n1 3\n\n2\n\nall\nNo idea\n\n5\n1\n"
    out = subprocess.run(cmd, input=replies, capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "no countdown: input is not a terminal" in out.stdout
    assert "Type 1, 2, 3 or 4." in out.stdout  # "5" is refused and asked again
    assert "Done: saved 4 answers" in out.stdout
    with Store(db) as store:
        answers = store.answers()
    assert [a.kind for a in answers] == ["question", "follow-up", "question", "follow-up"]
    assert answers[0].answer == "I would reuse a pretrained model." and answers[0].covered == "1 3"
    assert answers[3].rating == 1 and answers[3].answer == "No idea"
    progress = subprocess.run(_cli(course, "progress", "--db", str(db), "--plot", str(tmp_path / "p.png"))[0],
                              capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert progress.returncode == 0 and "4 answers" in progress.stdout and (tmp_path / "p.png").exists()


class Proc:
    """A running CLI whose output is read by a thread, to wait for what it prints."""

    def __init__(self, cmd, env):
        self.p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True, env=env, cwd=ROOT)
        self.lines: queue.Queue = queue.Queue()
        self.seen = ""
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):  # chunks, not lines: a prompt has no line end
        while chunk := os.read(self.p.stdout.fileno(), 4096):
            self.lines.put(chunk.decode())

    def expect(self, pattern, timeout=30):
        end = time.monotonic() + timeout
        while not re.search(pattern, self.seen):
            try:
                self.seen += self.lines.get(timeout=max(0.01, end - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"{pattern!r} not printed; output so far:\n{self.seen}") from None

    def send(self, text):
        self.p.stdin.write(text)
        self.p.stdin.flush()


def test_cli_time_out_then_ctrl_c_keeps_what_was_answered(course, tmp_path):
    db = tmp_path / "p.sqlite"
    proc = Proc(*_cli(course, "interview", "--db", str(db), "--seconds", "1", "-n", "2", "--seed", "0"))
    try:
        proc.expect(r"You have 1 s")
        proc.send("half an answer\n")  # and no empty line: the second runs out
        proc.expect(r"Time is up \(1 s\)\. Your answer so far is kept\.")
        proc.expect(r"Which did you cover\?")
        proc.send("1\n")
        proc.expect(r"Follow-up")
        proc.p.send_signal(signal.SIGINT)  # Ctrl-C during the follow-up
        proc.p.wait(30)
        proc.expect(r"Interrupted: saved 1 answer to")
    finally:
        proc.p.kill()
    assert proc.p.returncode == 130 and "Traceback" not in proc.seen
    with Store(db) as store:
        (a,) = store.answers()
    assert a.timed_out and a.answer == "half an answer" and a.covered == "1"


def test_cli_refuses_a_db_in_the_checkout(course):
    cmd, env = _cli(course, "interview", "--db", str(ROOT / "p.sqlite"))
    out = subprocess.run(cmd, input="", capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert out.returncode == 2 and "inside the course checkout" in out.stderr and "--db" in out.stderr
    assert not (ROOT / "p.sqlite").exists()


# --------------------------------------------------------------------------- the terminal line editor
def _pty_console():
    """A Console on both ends of a pseudo-terminal, and the master end to type into and read from."""
    import pty

    from tlcourse.interview.session import Console

    master, slave = pty.openpty()
    tin, tout = os.fdopen(slave, "rb", buffering=0), os.fdopen(os.dup(slave), "w")
    return Console(stdin=tin, stdout=tout), master, (tin, tout)


def _drain(master):
    import select

    out = b""
    while select.select([master], [], [], 0.05)[0]:
        out += os.read(master, 65536)
    return out.decode(errors="replace")


def test_terminal_editor_keys_and_pasted_crlf():
    """Backspace, Ctrl-U, arrow keys, a tab and a pasted CRLF behave as the session's docstring says."""
    console, master, files = _pty_console()
    try:
        assert console.tty
        with console:
            # 'x' erased by Backspace, a left arrow ignored, a tab as a space; then Ctrl-U clears
            # "junk" and the pasted text has Windows line ends: each CRLF is one line end.
            os.write(master, b"abx\x7f\x1b[Dc\td\r\njunk\x15line two\r\n\r\n")
            text, seconds, timed_out = console.read_answer(5)
        assert (text, timed_out) == ("abc d\nline two", False)
        assert "[0:0" in _drain(master)  # the countdown was drawn
    finally:
        os.close(master)
        for f in files:
            f.close()


def test_terminal_editor_times_out_and_keeps_the_line():
    console, master, files = _pty_console()
    try:
        with console:
            os.write(master, b"half a thou")
            text, seconds, timed_out = console.read_answer(0.6)
        assert (text, timed_out) == ("half a thou", True) and seconds >= 0.6
        _drain(master)
    finally:
        os.close(master)
        for f in files:
            f.close()
