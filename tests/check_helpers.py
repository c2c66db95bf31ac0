"""What every ``tests/test_checks_<id>.py`` does with one question: grade a namespace, and assert
that it passes, or that it fails with a message naming the mistake."""
from __future__ import annotations

from tlcourse.grading.feedback import evaluate_question


def question_helpers(checks, default_seed: int):
    """``(grade, passes, fails)`` for the ``QUESTIONS`` of a checks module (``tlcourse.checks.t13``)."""
    def grade(namespace, question, seed=default_seed, **changes):
        q = next(q for q in checks.QUESTIONS if q.name == question)
        return evaluate_question(q, {**namespace, **changes}, seed, time_limit=None)

    def passes(namespace, question, **changes):
        result = grade(namespace, question, **changes)
        assert result.passed, f"{question}: {result.message}"

    def fails(namespace, question, words, **changes):
        result = grade(namespace, question, **changes)
        assert not result.passed, f"{question} passed although it should not"
        assert words in result.message, result.message
        return result

    return grade, passes, fails
