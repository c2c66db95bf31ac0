"""Multiple-choice questions: the student sets a variable to one letter; the trusted side checks it.

Most chapters end their exercise with a question that asks the student to predict or interpret a
result. :func:`choice_question` builds that :class:`~tlcourse.grading.Question` from the options,
the right letter and one piece of feedback per wrong letter, so every chapter reads answers the
same way: ``"b"``, ``" B "``, ``"(b)"`` and ``"b."`` all mean b; anything that is not a string
(the exercise's ``...`` placeholder included) is named in the message, never guessed at.

>>> from tlcourse.grading import plain
>>> q = choice_question("q4", "answer_q4", choices={"a": "yes", "b": "no"}, answer="b",
...                     feedback={"a": "look at the table again"}, hint="the last row")
>>> q.grade(plain.roundtrip(q.collect({"answer_q4": " (B) "}, 0)), 0) is None
True
>>> q.grade(plain.roundtrip(q.collect({"answer_q4": "a"}, 0)), 0)
Traceback (most recent call last):
AssertionError: not 'a': look at the table again
"""
from __future__ import annotations

import re
from collections.abc import Mapping

from .questions import Question

__all__ = ["choice_question"]

_LETTER = re.compile(r"\(?\s*([A-Za-z])\s*[).]?")


def _kind(value) -> str:
    kind = type(value).__name__
    if kind == "ellipsis":
        return "`...`, the exercise's placeholder"
    return f"{'an' if kind[:1].lower() in 'aeiou' else 'a'} {kind}"


def choice_question(name: str, variable: str, *, choices: Mapping[str, str], answer: str,
                    feedback: Mapping[str, str], points: int = 1, hint: str = "") -> Question:
    """A question answered by setting ``variable`` to one of the letters of ``choices``.

    ``choices`` maps lower-case letters to the option texts (the notebook shows them);
    ``answer`` is the right letter; ``feedback`` holds a message for every wrong letter, which
    a failed check shows after ``not '<letter>':``. The collect side sends the value as a string,
    or only its type name when it is not one.
    """
    letters = {str(k).lower() for k in choices}
    if answer not in letters:
        raise ValueError(f"answer {answer!r} is not one of the choices {sorted(letters)}")
    missing = sorted(letters - {answer} - set(feedback))
    if missing:
        raise ValueError(f"feedback is missing for the wrong choice(s) {missing}")
    options = ", ".join(f"'{k}'" for k in sorted(letters))

    def collect(ns, seed):
        value = ns[variable]
        return {"answer": str.__str__(value)} if isinstance(value, str) else {"type": _kind(value)}

    def grade(collected, seed):
        assert isinstance(collected, dict) and ("answer" in collected or "type" in collected), (
            "the collected answer is malformed: run the notebook from the top, then check again")
        value = collected.get("answer")
        assert isinstance(value, str), (
            f"{variable} should be one letter as a string ({options}), got {collected.get('type', 'something else')}")
        match = _LETTER.fullmatch(value.strip())
        choice = match[1].lower() if match else None
        assert choice in letters, f"{variable} = {value!r}; choose one of {options}"
        if choice != answer:
            raise AssertionError(f"not '{choice}': {feedback[choice]}")

    return Question(name, points=points, names=(variable,), collect=collect, grade=grade, hint=hint)
