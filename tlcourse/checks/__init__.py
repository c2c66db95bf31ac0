"""Questions and checks of each chapter's graded exercise, one module per chapter.

``Grader("T01")`` imports ``tlcourse.checks.t01`` (the chapter id lower-cased) and reads its
``QUESTIONS``, a list of :class:`tlcourse.grading.Question`. A check receives the notebook's
globals (read-only) and raises ``AssertionError`` with a message a student can act on::

    from tlcourse.grading import Question

    def _check_accuracy(ns):
        acc = ns["scratch_accuracy"]
        assert 0 <= acc <= 1, f"scratch_accuracy is {acc!r}; an accuracy is a fraction in [0, 1]"

    QUESTIONS = [
        Question("q1", points=2, names=("scratch_accuracy",), check=_check_accuracy,
                 hint="Compute it on the test split."),
    ]

Checks are plain functions, so ``tests/`` tests them like any other code. ``_demo`` (id
``_DEMO``) is the template, used by the grader's own tests.
"""
