"""``tlcourse progress``: how the mock interviews went, per chapter, as a table and a plot.

The table has one row per chapter with answers: attempts (questions and follow-ups), the mean
and the last score (share of the rubric covered; a follow-up's self-rating r counts as
(r - 1) / 3), and when the chapter's next card is due. ``--plot progress.png`` draws every
chapter's scores against the time they were given.
"""
from __future__ import annotations

import sys
from datetime import datetime, timezone
from pathlib import Path

from .session import when
from .store import Store, StoreError, default_path

__all__ = ["rows", "table", "plot", "main"]


def _titles(root=None) -> dict[str, str]:
    from .. import study

    try:
        return {c.id: c.title for c in study.load_chapters(root, with_study=False)}
    except Exception:  # the table works without the course, from the progress file alone
        return {}


def rows(store: Store, now: datetime | None = None) -> list[dict]:
    """Per chapter: attempts, mean score, last score, next due date (book order where known)."""
    now = now or datetime.now(timezone.utc)
    answers, cards = store.answers(), store.cards()
    out = {}
    for a in answers:
        r = out.setdefault(a.chapter, {"chapter": a.chapter, "scores": [], "last_at": None})
        r["scores"].append(a.score)
        r["last_at"] = a.at
    for key, card in cards.items():
        chapter = key.split("/")[0]
        if chapter in out:
            due = out[chapter].get("due")
            out[chapter]["due"] = card.due if due is None else min(due, card.due)
    result = []
    for r in out.values():
        s = r.pop("scores")
        result.append({**r, "attempts": len(s), "mean": sum(s) / len(s), "last": s[-1]})
    return result


def table(store: Store, root=None, now: datetime | None = None) -> str:
    """The progress table as text."""
    now = now or datetime.now(timezone.utc)
    data = rows(store, now)
    titles = _titles(root)
    order = {cid: i for i, cid in enumerate(titles)}
    data.sort(key=lambda r: (order.get(r["chapter"], len(order)), r["chapter"]))
    if not data:
        return f"No answers yet in {store.path}: start with `tlcourse interview`."
    head = ["chapter", "attempts", "mean", "last", "next due"]
    body = []
    for r in data:
        title = titles.get(r["chapter"], "")
        name = f"{r['chapter']} {title[:38] + ('...' if len(title) > 38 else '')}".strip()
        body.append([name, str(r["attempts"]), f"{r['mean']:.0%}", f"{r['last']:.0%}",
                     when(r["due"], now) if r.get("due") else "-"])
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    right = {1, 2, 3}

    def fmt(cells):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    lines = [fmt(head), "  ".join("-" * w for w in widths)] + [fmt(b) for b in body]
    unseen = [cid for cid in titles if cid not in {r["chapter"] for r in data}]
    total = sum(r["attempts"] for r in data)
    lines += ["", f"{total} answers in {store.path}."]
    if unseen:
        lines.append(f"Not practised yet: {', '.join(unseen)}.")
    return "\n".join(lines)


def plot(store: Store, path, root=None) -> Path:
    """Scores over time, one line per chapter; written to ``path`` (PNG, SVG or PDF by its suffix)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    answers = store.answers()
    titles = _titles(root)
    by_chapter: dict[str, list] = {}
    for a in answers:
        by_chapter.setdefault(a.chapter, []).append(a)
    fig, ax = plt.subplots(figsize=(8, 4.5), constrained_layout=True)
    order = {cid: i for i, cid in enumerate(titles)}
    times = [a.at.astimezone() for a in answers]
    for chapter in sorted(by_chapter, key=lambda c: (order.get(c, len(order)), c)):
        items = by_chapter[chapter]
        line, = ax.plot([a.at.astimezone() for a in items], [100 * a.score for a in items], lw=1.2, alpha=0.8,
                        label=chapter)
        for kind, marker in (("question", "o"), ("follow-up", "s")):
            pts = [a for a in items if a.kind == kind]
            ax.scatter([a.at.astimezone() for a in pts], [100 * a.score for a in pts], marker=marker, s=36,
                       color=line.get_color(), facecolor="white" if kind == "follow-up" else line.get_color(),
                       zorder=3)
    if times and (max(times) - min(times)).total_seconds() < 3600:  # one short session: show an hour
        from datetime import timedelta

        middle = min(times) + (max(times) - min(times)) / 2
        ax.set_xlim(middle - timedelta(minutes=30), middle + timedelta(minutes=30))
    ax.set_ylim(-5, 105)
    ax.set_ylabel("score (% of the rubric covered)")
    ax.set_xlabel("answered at (local time)")
    ax.set_title(f"Mock interview scores over time ({len(answers)} answers)")
    ax.grid(alpha=0.3)
    if by_chapter:
        from matplotlib.lines import Line2D

        handles, labels = ax.get_legend_handles_labels()
        handles += [Line2D([], [], ls="", marker="o", color="0.3"),
                    Line2D([], [], ls="", marker="s", color="0.3", markerfacecolor="white")]
        labels += ["interview question (rubric share)", "follow-up (self-rating, 1-4 as 0-100 %)"]
        ax.legend(handles, labels, loc="best", fontsize="small")
        locator = mdates.AutoDateLocator()
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    else:
        ax.text(0.5, 0.5, "no answers yet: run tlcourse interview", ha="center", va="center", transform=ax.transAxes)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="tlcourse progress",
                                     description="Your mock-interview scores per chapter, and when each comes back.")
    parser.add_argument("--db", help=f"the progress file (default: ${'TLCOURSE_PROGRESS_DB'} or {default_path()})")
    parser.add_argument("--plot", metavar="PNG", help="also draw the scores over time into this image")
    parser.add_argument("--root", help="the course folder, for chapter titles (default: this checkout)")
    args = parser.parse_args(argv)
    path = Path(args.db).expanduser() if args.db else default_path()
    if not path.exists():
        print(f"No progress file at {path} yet: start with `tlcourse interview`"
              + (f" --db {args.db}" if args.db else "") + ".")
        return 0
    try:
        store = Store(path)
    except StoreError as err:
        print(f"tlcourse progress: {err}", file=sys.stderr)
        return 2
    with store:
        print(table(store, args.root))
        if args.plot:
            print(f"wrote {plot(store, args.plot, args.root)}")
    return 0
