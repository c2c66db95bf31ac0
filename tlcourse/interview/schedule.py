"""What to ask next: the FSRS scheduler for each card, and a draw weighted towards weak chapters.

Cards. Each chapter's interview question is a card (``T01/question``) and so is each follow-up
(``T01/follow-up/2``). After an answer the card is reviewed with FSRS, the Free Spaced Repetition
Scheduler (Ye, Su & Cao, 2022, "A Stochastic Shortest Path Algorithm for Optimizing Spaced
Repetition Scheduling", KDD; Su, Ye et al., 2023, "Optimizing Spaced Repetition Schedule by
Capturing the Dynamics of Memory", IEEE TKDE), through the ``fsrs`` package's
``Scheduler``, ``Card`` and ``Rating``. FSRS models each card's memory by a stability S (days
until recall probability falls to 90 %) and a difficulty D; the probability of recalling it t
days after the last review is

    R(t, S) = (1 + F t / S) ** C,   C = -w20 (decay),  F = 0.9 ** (1 / C) - 1,

and the next interval is the t at which R falls to the desired retention (0.9 here). A rating of
Again shortens the interval and raises D; Hard, Good and Easy lengthen it more and more.

The rating of a rubric answer comes from its score, the share of key points covered
(:func:`rating_for`): below 40 % Again, below 70 % Hard, below 90 % Good, else Easy. A follow-up
is self-rated 1 to 4, which is the rating itself.

Interview steps are longer than a flashcard app's: a card still being learnt comes back after
10 minutes, then 1 day (relearning: 10 minutes), so a failed question returns in the next
session rather than a minute later. Fuzzing is off, so due dates are reproducible.

The draw (:func:`draw`): first the chapters whose question card is *due* (reviewed before and
due now), most overdue first; then chapters drawn without replacement with weight

    w_c = 1.05 - m_c,   m_c = (sum of the last 5 scores + 0.5) / (their number + 1),

a mean shrunk towards 0.5 so that an unseen chapter weighs like an average one, and a chapter
the candidate scores worst on comes up most often (about 4 times as often at scores of 0 as at
scores of 1).
"""
from __future__ import annotations

import random
import zlib
from datetime import datetime, timedelta, timezone

__all__ = ["scheduler", "new_card", "rating_for", "review", "chapter_weight", "draw", "pick_follow_up",
           "question_key", "follow_up_key", "RECENT", "PRIOR"]

RECENT, PRIOR = 5, 0.5


def scheduler():
    """The FSRS scheduler the interview uses (default FSRS-6 parameters, retention 0.9)."""
    import fsrs

    return fsrs.Scheduler(desired_retention=0.9,
                          learning_steps=(timedelta(minutes=10), timedelta(days=1)),
                          relearning_steps=(timedelta(minutes=10),), enable_fuzzing=False)


def question_key(chapter_id: str) -> str:
    return f"{chapter_id}/question"


def follow_up_key(chapter_id: str, number: int) -> str:
    return f"{chapter_id}/follow-up/{number}"


def new_card(key: str, now: datetime | None = None):
    """A fresh fsrs card with a stable id derived from its key."""
    import fsrs

    return fsrs.Card(card_id=zlib.crc32(key.encode()), due=now or datetime.now(timezone.utc))


def rating_for(score: float):
    """The fsrs rating of a rubric score (share of key points covered).

    >>> [rating_for(s).name for s in (0.0, 0.39, 0.4, 0.69, 0.7, 0.89, 0.9, 1.0)]
    ['Again', 'Again', 'Hard', 'Hard', 'Good', 'Good', 'Easy', 'Easy']
    """
    import fsrs

    if not 0 <= score <= 1:
        raise ValueError(f"a score is a share of the rubric, between 0 and 1; got {score}")
    if score < 0.4:
        return fsrs.Rating.Again
    if score < 0.7:
        return fsrs.Rating.Hard
    if score < 0.9:
        return fsrs.Rating.Good
    return fsrs.Rating.Easy


def review(card, rating, now: datetime | None = None, sched=None):
    """The card after a review with this rating (a new object; the input is unchanged)."""
    import fsrs

    now = now or datetime.now(timezone.utc)
    updated, _log = (sched or scheduler()).review_card(card, fsrs.Rating(int(rating)), review_datetime=now)
    return updated


def _is_due(card, now: datetime) -> bool:
    return card is not None and card.last_review is not None and card.due <= now


def chapter_weight(scores: list[float]) -> float:
    """``1.05 - m``, with ``m`` the mean of the last 5 scores shrunk towards 0.5 by one pseudo-answer.

    >>> round(chapter_weight([]), 2), round(chapter_weight([0, 0, 0]), 3), round(chapter_weight([1, 1, 1]), 3)
    (0.55, 0.925, 0.175)
    """
    recent = list(scores)[-RECENT:]
    return 1.05 - (sum(recent) + PRIOR) / (len(recent) + 1)


def draw(chapter_ids: list[str], cards: dict, scores: dict[str, list[float]], n: int,
         rng: random.Random | None = None, now: datetime | None = None) -> list[str]:
    """``n`` chapters to ask, due ones first (most overdue first), then weighted towards low scores."""
    rng = rng or random.Random()
    now = now or datetime.now(timezone.utc)
    due = sorted((c for c in chapter_ids if _is_due(cards.get(question_key(c)), now)),
                 key=lambda c: cards[question_key(c)].due)
    chosen = due[:n]
    pool = [c for c in chapter_ids if c not in chosen]
    while len(chosen) < n and pool:
        weights = [chapter_weight(scores.get(c, [])) for c in pool]
        pick = rng.choices(range(len(pool)), weights=weights)[0]
        chosen.append(pool.pop(pick))
    return chosen


def pick_follow_up(chapter_id: str, n_follow_ups: int, cards: dict, rng: random.Random | None = None,
                   now: datetime | None = None) -> int | None:
    """The follow-up (1-based) to ask: a due one first, then one never asked, then the one due soonest."""
    if n_follow_ups < 1:
        return None
    rng = rng or random.Random()
    now = now or datetime.now(timezone.utc)
    numbers = list(range(1, n_follow_ups + 1))
    stored = {i: cards.get(follow_up_key(chapter_id, i)) for i in numbers}
    due = sorted((i for i in numbers if _is_due(stored[i], now)), key=lambda i: stored[i].due)
    if due:
        return due[0]
    unseen = [i for i in numbers if stored[i] is None or stored[i].last_review is None]
    if unseen:
        return rng.choice(unseen)
    return min(numbers, key=lambda i: stored[i].due)
