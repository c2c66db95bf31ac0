"""A chapter's self-test quiz: answer keys in a study file, shown in the page with jupyterquiz.

Each chapter's ``book/study/<ID>.yml`` holds 4 to 6 questions under ``quiz:``. A question is a
mapping::

    - id: t-squared                    # unique within the chapter
      type: choice                     # or numeric
      question: Why is the soft loss multiplied by $T^2$?
      section: In depth                # a heading of the chapter the explanations draw on
      options:                         # choice: 2 or more, exactly one correct unless multiple: true
        - answer: Its gradient scales as $1/T^2$; the factor restores it.
          correct: true
          why: ...                     # the explanation shown when this option is picked
        - answer: ...
          why: ...

    - id: gain
      type: numeric
      question: In this build, how many points does distillation add (one decimal)?
      section: "Demo: a distilled student against the same student alone"
      answer: gain                     # a number, or an expression over the chapter's results
      tolerance: 0.15                  # absolute; an answer within it is right
      why: The table above shows {gain:.1f} points ...   # {name} is filled from the results

A question built from what the chapter computed in this build ("read this plot", "predict the
result") uses the chapter's **results**: named numbers the chapter passes to :func:`show`. Its
key is then an expression over them (``answer: gain``, or ``correct: "gain > 2 * gain_se"`` on an
option), so the key changes when the result does. Expressions are arithmetic, comparisons,
``and``/``or``/``not``, ``abs``/``min``/``max``/``round`` over the results and numbers; nothing else
is evaluated. ``{name}`` and ``{name:.1f}`` in a question, an answer or an explanation are filled
from the results as well (a name of at least two characters, so LaTeX groups like ``2^{L-l}``
stay as they are).

:func:`build` checks a quiz (number of questions, kinds, one right answer, sections that exist,
every result used) and returns it in jupyterquiz's format; :func:`show` displays it in the
notebook (HTML and JavaScript, so it works offline in the built book) and records the results and
keys in a JSON output that the tests read back. Every error names the file and the question.
"""
from __future__ import annotations

import ast
import math
import operator
import random
import re
from pathlib import Path

from .study import StudyError, chapter_paths, load_chapter, read_study_file, study_file

__all__ = ["QuizError", "evaluate", "build", "show", "keys", "RECORD_MIME", "MIN_QUESTIONS", "MAX_QUESTIONS"]

RECORD_MIME = "application/vnd.tlcourse.quiz+json"
MIN_QUESTIONS, MAX_QUESTIONS = 4, 6
_FAR = 1e300  # jupyterquiz ranges are JSON: no infinities


class QuizError(StudyError):
    """A quiz that cannot be shown as written; the message names the file, the question and the fix."""


_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.Pow: operator.pow, ast.Mod: operator.mod}
_COMPARE = {ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
            ast.Eq: operator.eq, ast.NotEq: operator.ne}
_FUNCS = {"abs": abs, "min": min, "max": max, "round": round}


def _names(expression: str) -> set[str]:
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError as err:
        raise QuizError(f"cannot parse the expression {expression!r}: {err.msg}") from None
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id not in _FUNCS
            and n.id not in ("True", "False")}


def evaluate(expression: str, results: dict):
    """The value of a key expression over the results (a restricted, safe subset of Python).

    >>> evaluate("gain > 2 * se", {"gain": 3.0, "se": 1.0})
    True
    >>> evaluate("round(abs(a - b), 1)", {"a": 0.25, "b": 1.0})
    0.8
    """
    def ev(node):
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, bool)):
            return node.value
        if isinstance(node, ast.Name):
            if node.id not in results:
                raise QuizError(f"{expression!r} uses {node.id!r}, which the chapter did not pass "
                                f"(results: {sorted(results)})")
            return results[node.id]
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            return _BINARY[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd, ast.Not)):
            value = ev(node.operand)
            return -value if isinstance(node.op, ast.USub) else (+value if isinstance(node.op, ast.UAdd) else not value)
        if isinstance(node, ast.BoolOp):
            values = [ev(v) for v in node.values]
            return all(values) if isinstance(node.op, ast.And) else any(values)
        if isinstance(node, ast.Compare):
            left = ev(node.left)
            for op, right_node in zip(node.ops, node.comparators):
                if type(op) not in _COMPARE:
                    break
                right = ev(right_node)
                if not _COMPARE[type(op)](left, right):
                    return False
                left = right
            else:
                return True
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCS
                and not node.keywords):
            return _FUNCS[node.func.id](*[ev(a) for a in node.args])
        raise QuizError(f"{expression!r}: only numbers, result names, arithmetic, comparisons, and/or/not "
                        f"and abs/min/max/round are allowed")

    try:
        tree = ast.parse(str(expression), mode="eval")
    except SyntaxError as err:
        raise QuizError(f"cannot parse the expression {expression!r}: {err.msg}") from None
    return ev(tree)


# A placeholder is {name} or {name:format} with a name of two or more identifier characters, so
# that LaTeX groups such as 2.6^{L-l} or x_{i} are left alone.
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]+)(?::([^{}]*))?\}")


def _fill(text: str, results: dict, where: str) -> str:
    def put(m):
        name, spec = m.group(1), m.group(2) or ""
        if name not in results:
            raise QuizError(f"{where}: {str(text)[:60]!r} names {name!r}, which the chapter did not pass "
                            f"(results: {sorted(results)})")
        try:
            return format(results[name], spec)
        except ValueError as err:
            raise QuizError(f"{where}: cannot format {name!r} with {spec!r}: {err}") from None
    return _PLACEHOLDER.sub(put, str(text))


def _used_names(question: dict) -> set[str]:
    used = set()
    texts = [question.get("question", ""), question.get("why", "")]
    for option in question.get("options") or []:
        texts += [option.get("answer", ""), option.get("why", "")]
        if isinstance(option.get("correct"), str):
            used |= _names(option["correct"])
    for text in texts:
        used |= {m.group(1) for m in _PLACEHOLDER.finditer(str(text))}
    if isinstance(question.get("answer"), str):
        used |= _names(question["answer"])
    return used


def _section_link(section: str) -> str:
    return f" (See \u201c{section}\u201d.)"


def build(chapter_id: str, results: dict | None = None, root=None) -> list[dict]:
    """Check the chapter's quiz against its notebook and results; return it for jupyterquiz.

    Raises :class:`QuizError` when the quiz has the wrong number of questions, a question without
    an explanation or a section, a section that is not a heading of the chapter, a choice with no
    or several right answers (unless ``multiple: true``), a key whose result is missing, or a
    result that no question uses.
    """
    results = {k: (v.item() if hasattr(v, "item") else v) for k, v in (results or {}).items()}  # numpy scalars
    for name, value in results.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise QuizError(f"{chapter_id}: result {name!r} must be a finite number, got {value!r}")
    where_file = study_file(chapter_id, root)
    data = read_study_file(chapter_id, root)
    path = next((p for _, p in chapter_paths(root) if p.name.startswith(f"{chapter_id}-")), None)
    if path is None:
        raise QuizError(f"{chapter_id} is not in _toc.yml")
    headings = set(load_chapter(path, root=root, with_study=False).sections)
    questions = data["quiz"]
    if not MIN_QUESTIONS <= len(questions) <= MAX_QUESTIONS:
        raise QuizError(f"{where_file}: {len(questions)} questions; a quiz has {MIN_QUESTIONS} to {MAX_QUESTIONS}")
    ids, used, out = set(), set(), []
    kinds = {q.get("type") for q in questions if isinstance(q, dict)}
    if "numeric" not in kinds or "choice" not in kinds:
        raise QuizError(f"{where_file}: a quiz needs at least one 'choice' and one 'numeric' question")
    for number, q in enumerate(questions, 1):
        where = f"{where_file}, question {number} ({q.get('id', '?') if isinstance(q, dict) else '?'})"
        if not isinstance(q, dict):
            raise QuizError(f"{where}: each question is a mapping")
        unknown = set(q) - {"id", "type", "question", "section", "options", "multiple", "answer", "tolerance", "why"}
        if unknown:
            raise QuizError(f"{where}: unknown keys {sorted(unknown)}")
        if not q.get("id") or q["id"] in ids:
            raise QuizError(f"{where}: needs an 'id' unique in the chapter")
        ids.add(q["id"])
        if not str(q.get("question", "")).strip():
            raise QuizError(f"{where}: no 'question' text")
        if str(q["question"]).lstrip().lower().startswith("this build"):
            raise QuizError(f"{where}: the question starts with 'This build'; leave it out, the quiz adds "
                            "it to every question keyed on the chapter's results")
        section = q.get("section")
        if section not in headings:
            raise QuizError(f"{where}: section {section!r} is not a heading of {path} "
                            f"(headings: {sorted(headings)})")
        from_results = _used_names(q)
        used |= from_results
        text = _fill(q["question"], results, where)
        if from_results:  # keyed on this build's numbers: say so, as the chapter's quiz intro promises
            text = "<em>This build.</em> " + text
        if q.get("type") == "choice":
            out.append(_choice(q, results, where, text, section))
        elif q.get("type") == "numeric":
            out.append(_numeric(q, results, where, text, section))
        else:
            raise QuizError(f"{where}: type must be 'choice' or 'numeric', got {q.get('type')!r}")
    missing = used - set(results)
    if missing:
        raise QuizError(f"{where_file}: the quiz uses results {sorted(missing)} that the chapter did not pass to "
                        f"quiz.show (passed: {sorted(results)})")
    unused = set(results) - used
    if unused:
        raise QuizError(f"{where_file}: results {sorted(unused)} are passed but no question uses them")
    if not used:
        raise QuizError(f"{where_file}: no question is built from the chapter's computed results; "
                        f"add a 'read this plot' or 'predict the result' question")
    return out


def _choice(q, results, where, text, section) -> dict:
    options = q.get("options")
    if not isinstance(options, list) or len(options) < 2:
        raise QuizError(f"{where}: a choice question needs at least 2 options")
    answers, rendered, n_correct = set(), [], 0
    for option in options:
        answer = _fill(option.get("answer", ""), results, where).strip()
        if not answer or answer in answers:
            raise QuizError(f"{where}: options must be non-empty and different ({answer!r})")
        answers.add(answer)
        if not str(option.get("why", "")).strip():
            raise QuizError(f"{where}: option {answer[:40]!r} has no 'why' (its explanation)")
        correct = option.get("correct", False)
        if isinstance(correct, str):
            correct = evaluate(correct, results)
        if not isinstance(correct, bool):
            raise QuizError(f"{where}: 'correct' of {answer[:40]!r} must be true/false or a comparison")
        n_correct += correct
        why = _fill(option["why"], results, where).strip()
        rendered.append({"answer": answer, "correct": correct,
                         "feedback": ("Right. " if correct else "Not this one. ") + why + _section_link(section)})
    multiple = bool(q.get("multiple", False))
    if multiple and n_correct < 2:
        raise QuizError(f"{where}: 'multiple: true' but {n_correct} option(s) are right with these results")
    if not multiple and n_correct != 1:
        raise QuizError(f"{where}: {n_correct} options are right with these results {results}; exactly one "
                        f"must be (or say 'multiple: true')")
    return {"question": text, "type": "many_choice" if multiple else "multiple_choice", "answers": rendered}


def _numeric(q, results, where, text, section) -> dict:
    answer, tolerance = q.get("answer"), q.get("tolerance")
    if answer is None or tolerance is None:
        raise QuizError(f"{where}: a numeric question needs 'answer' and 'tolerance'")
    key = evaluate(answer, results) if isinstance(answer, str) else answer
    if isinstance(key, bool) or not isinstance(key, (int, float)) or not math.isfinite(key):
        raise QuizError(f"{where}: the key {answer!r} is not a finite number")
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or tolerance < 0:
        raise QuizError(f"{where}: 'tolerance' must be a number >= 0")
    if not str(q.get("why", "")).strip():
        raise QuizError(f"{where}: no 'why' (the explanation)")
    why = _fill(q["why"], results, where).strip() + _section_link(section)
    lo, hi = float(key) - float(tolerance), float(key) + float(tolerance)
    hi_open = math.nextafter(hi, math.inf)  # jupyterquiz ranges are [lo, hi)
    return {"question": text, "type": "numeric", "key": float(key), "tolerance": float(tolerance),
            "answers": [{"type": "range", "range": [lo, hi_open], "correct": True, "feedback": "Right. " + why},
                        {"type": "range", "range": [-_FAR, lo], "correct": False, "feedback": "Too low. " + why},
                        {"type": "default", "feedback": "Too high. " + why}]}


def keys(quiz: list[dict]) -> list:
    """The right answers of a built quiz: the numeric key, or the list of right option texts."""
    return [q["key"] if q["type"] == "numeric" else [a["answer"] for a in q["answers"] if a["correct"]]
            for q in quiz]


def show(chapter_id: str, root=None, **results):
    """Display the chapter's quiz in the notebook, keyed on this run's ``results``.

    The quiz is self-contained HTML and JavaScript (jupyterquiz), so it works in the built book
    without a kernel or a network. A JSON output (:data:`RECORD_MIME`) records the results and the
    keys for the tests; the book does not show it.
    """
    from IPython.display import display
    from jupyterquiz import display_quiz

    quiz = build(chapter_id, results, root)
    state = random.getstate()  # jupyterquiz draws its element ids from the global generator
    try:
        display_quiz(quiz, shuffle_answers=True)
    finally:
        random.setstate(state)
    display({RECORD_MIME: {"chapter": chapter_id, "results": {k: float(v) for k, v in results.items()},
                           "keys": keys(quiz)}}, raw=True)


def recorded(notebook) -> dict | None:
    """The quiz record of an executed notebook (an ``nbformat`` node or a path), or None."""
    import nbformat

    nb = nbformat.read(str(notebook), as_version=4) if isinstance(notebook, (str, Path)) else notebook
    for cell in nb.cells:
        for output in cell.get("outputs", []) if cell.cell_type == "code" else []:
            if RECORD_MIME in output.get("data", {}):
                return output["data"][RECORD_MIME]
    return None
