"""Graded exercises: generated from solutions, self-study feedback in the notebook, and grades an
instructor can trust.

Two modes, for two readers:

- **Self-study** (:mod:`~tlcourse.grading.feedback`): ``grader = Grader("T01")`` and
  ``grader.check("q1")`` in the exercise notebook give instant feedback with a hint. They run in
  the student's own kernel, so they teach; they do not certify.
- **Instructor grading** (:mod:`~tlcourse.grading.notebook`, :mod:`~tlcourse.grading.batch`):
  ``tlcourse grade SUBMISSIONS_DIR --csv grades.csv -j 2`` runs each notebook in its own
  bubblewrap sandbox (:mod:`~tlcourse.grading.sandbox`, :mod:`~tlcourse.grading.runner`), takes
  plain data out of it (:mod:`~tlcourse.grading.plain`), and computes every grade in the trusted
  process from the question definitions (:mod:`~tlcourse.grading.questions`) and data it loads
  itself.

Exercises come from solutions (:mod:`~tlcourse.grading.exercises`); questions live in
``tlcourse/checks/<chapter>.py``.
"""
from .exercises import build_exercises, chapter_from_name, main_exercises, make_exercise
from .feedback import Grader
from .questions import CheckResult, Question, Report, load_questions

__all__ = ["Question", "CheckResult", "Report", "Grader", "load_questions", "make_exercise",
           "build_exercises", "chapter_from_name", "main_exercises", "grade_notebook",
           "grade_folder", "main_grade"]


def __getattr__(name):  # the grader's heavier parts load only when asked for
    if name == "grade_notebook":
        from .notebook import grade_notebook
        return grade_notebook
    if name in ("grade_folder", "main_grade"):
        from . import batch
        return getattr(batch, name)
    raise AttributeError(f"module 'tlcourse.grading' has no attribute {name!r}")
