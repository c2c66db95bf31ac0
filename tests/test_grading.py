"""Tests of tlcourse.grading in-process: exercises from solutions, plain data, questions, and
self-study feedback. The sandboxed grader (kernels, bubblewrap, batch) is tested in
test_grading_sandbox.py.
"""
from __future__ import annotations

import io
import json
import re
import time
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from tlcourse.grading import (
    CheckResult,
    Grader,
    Question,
    Report,
    build_exercises,
    load_questions,
    main_exercises,
    make_exercise,
    plain,
)
from tlcourse.grading.feedback import FEEDBACK_LOG_ENV
from tlcourse.grading.runner import collection_points

DEMO = Path(__file__).parent / "fixtures" / "grading" / "_DEMO-demo.ipynb"
PLACEHOLDER = 'raise NotImplementedError("replace this line with your code")'


def _solution(*cells, minor=5):
    nb = new_notebook(cells=list(cells), metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python", "version": "3.11"}, "papermill": {"duration": 1.5}})
    for index, cell in enumerate(nb.cells):
        cell.id = f"c{index}"
    nb.nbformat_minor = minor
    return nb


def test_make_exercise_replaces_regions_keeping_indentation():
    source = ("import math\n"
              "def f(x):\n"
              "    y = 1\n"
              "    # BEGIN SOLUTION\n"
              "    if x:\n"
              "        return math.sqrt(x) + y\n"
              "    # END SOLUTION\n"
              "    return y\n"
              "class A:\n"
              "    def g(self):\n"
              "        # BEGIN SOLUTION\n"
              "        return 42\n"
              "        # END SOLUTION\n"
              "# BEGIN SOLUTION\n"
              "secret = f(4)\n"
              "# END SOLUTION")
    exercise = make_exercise(_solution(new_code_cell(source)))
    assert exercise.cells[1].source == (
        "import math\n"
        "def f(x):\n"
        "    y = 1\n"
        "    # YOUR CODE HERE\n"
        f"    {PLACEHOLDER}\n"
        "    return y\n"
        "class A:\n"
        "    def g(self):\n"
        "        # YOUR CODE HERE\n"
        f"        {PLACEHOLDER}\n"
        "# YOUR CODE HERE\n"
        f"{PLACEHOLDER}")
    compile(exercise.cells[1].source, "exercise", "exec")  # still valid Python


@pytest.mark.parametrize("line, expected", [
    ("x = compute(3)  # SOLUTION", "x = ...  # YOUR CODE HERE"),
    ("    total: float = a + b # SOLUTION", "    total: float = ...  # YOUR CODE HERE"),
    ("        acc += weights[i] * 2#SOLUTION", "        acc += ...  # YOUR CODE HERE"),
    ("    return torch.mean(x)  # SOLUTION", "    return ...  # YOUR CODE HERE"),
    ('label = "élan # not the marker"  # SOLUTION', "label = ...  # YOUR CODE HERE"),
    ("a, b = b, a  # SOLUTION", "a, b = ...  # YOUR CODE HERE"),
])
def test_solution_one_liners_keep_the_target_and_hide_the_value(line, expected):
    exercise = make_exercise(_solution(new_code_cell(f"before = 1\n{line}\nafter = 2")))
    assert exercise.cells[1].source == f"before = 1\n{expected}\nafter = 2"


@pytest.mark.parametrize("source, words", [
    ("print(x)  # SOLUTION", "cell 1, line 1"),
    ("# BEGIN SOLUTION\nx = 1", "never closed"),
    ("x = 1\n# END SOLUTION", "without BEGIN"),
    ("# BEGIN SOLUTION\n# BEGIN SOLUTION\n# END SOLUTION", "inside the region"),
])
def test_malformed_solution_markers_fail_loudly(source, words):
    with pytest.raises(ValueError, match=words):
        make_exercise(_solution(new_code_cell(source)))


def test_make_exercise_drops_solution_only_cells_and_clears_outputs():
    solution = _solution(
        new_markdown_cell("Intro"),
        new_code_cell("n = 3", metadata={"tags": ["parameters"], "execution": {"t": "now"}},
                      execution_count=7,
                      outputs=[nbformat.v4.new_output("stream", name="stdout", text="hi\n")]),
        new_markdown_cell("Answer explained", metadata={"tags": ["solution-only"]}),
        new_code_cell("print('answer')", metadata={"tags": ["solution-only", "other"]}),
    )
    exercise = make_exercise(solution, source_name="T99-x.ipynb")
    assert [c.cell_type for c in exercise.cells] == ["markdown", "markdown", "code"]
    assert "solutions/T99-x.ipynb" in exercise.cells[0].source
    assert "tlcourse exercises" in exercise.cells[0].source
    code = exercise.cells[2]
    assert code.outputs == [] and code.execution_count is None
    assert code.metadata == {"tags": ["parameters"]}  # tags kept, volatile metadata dropped
    assert dict(exercise.metadata) == {"kernelspec": solution.metadata.kernelspec,
                                       "tlcourse": {"chapter": "T99"}}  # read by the grader
    assert solution.cells[1].outputs and len(solution.cells) == 4  # the solution is not modified
    nbformat.validate(exercise)
    old = _solution(new_code_cell("x = 1"), minor=4)
    for cell in old.cells:
        del cell["id"]
    nbformat.validate(make_exercise(old))  # no cell ids before nbformat 4.5


def test_build_exercises_is_deterministic_and_check_reports_drift(tmp_path):
    solutions, exercises = tmp_path / "solutions", tmp_path / "exercises"
    solutions.mkdir()
    (solutions / DEMO.name).write_bytes(DEMO.read_bytes())
    nbformat.write(_solution(new_code_cell("y = 2 * 21  # SOLUTION")), solutions / "T99-two.ipynb")

    assert build_exercises(solutions, exercises, check=True) == [exercises / "T99-two.ipynb",
                                                                 exercises / DEMO.name]
    assert not exercises.exists()  # check writes nothing
    written = build_exercises(solutions, exercises)
    first = {p.name: p.read_bytes() for p in written}
    assert build_exercises(solutions, exercises, check=True) == []
    for path in written:
        path.unlink()
    assert {p.name: p.read_bytes() for p in build_exercises(solutions, exercises)} == first
    text = first[DEMO.name].decode()
    assert text.endswith("}\n") and "return 2 * x" not in text and "sum(values)" not in text
    assert "statistics.mean" not in text  # the solution-only cell
    buffer = io.StringIO()
    nbformat.write(make_exercise(nbformat.read(DEMO, 4), DEMO.name), buffer)
    assert text == buffer.getvalue()

    (exercises / "T99-two.ipynb").write_text(text)
    assert build_exercises(solutions, exercises, check=True) == [exercises / "T99-two.ipynb"]
    assert main_exercises(["--root", str(tmp_path), "--check"]) == 1
    assert main_exercises(["--root", str(tmp_path)]) == 0
    assert main_exercises(["--root", str(tmp_path), "--check"]) == 0
    assert main_exercises(["--root", str(tmp_path / "nowhere")]) == 2


# ---------------------------------------------------------------- Grader in-process


# ---------------------------------------------------------------- plain data
class _Sneaky(float):
    """A float whose arithmetic lies: the trusted side must never call its methods."""

    def __rsub__(self, other):
        return 0.0

    def __eq__(self, other):
        return True

    __hash__ = float.__hash__


def test_plain_data_converts_student_values_to_builtin_types():
    tree = plain.to_plain({"a": np.float32(0.25), "b": torch.tensor(3), "c": (1, [2.0]),
                           "d": _Sneaky(0.5), "e": np.arange(3), "f": torch.ones(2, 2)})
    assert type(tree["a"]) is float and tree["a"] == 0.25
    assert type(tree["b"]) is int and tree["b"] == 3
    assert tree["c"] == [1, [2.0]]
    assert type(tree["d"]) is float and 1 - tree["d"] == 0.5  # the lie is gone
    assert isinstance(tree["e"], np.ndarray) and tree["f"].shape == (2, 2)
    for bad, words in [(lambda: 0, "function"), (np.array([object()]), "dtype"),
                       ({1: 2}, "keys must be strings"), (torch.nn.Linear(1, 1), "Linear")]:
        with pytest.raises(plain.PlainDataError, match=words):
            plain.to_plain(bad)


def test_plain_dump_and_load_roundtrip_and_refuse_anything_else(tmp_path):
    tree = {"w": np.arange(6.0).reshape(2, 3), "acc": float("nan"), "s": "x", "l": [True, None]}
    plain.dump(tmp_path / "a", tree)
    back = plain.load(tmp_path / "a")
    assert np.array_equal(back["w"], tree["w"]) and np.isnan(back["acc"])
    assert back["l"] == [True, None] and back["s"] == "x"
    assert plain.roundtrip(tree)["w"].tolist() == tree["w"].tolist()

    np.save(tmp_path / "evil.npy", np.array([object()]), allow_pickle=True)
    with open(tmp_path / "b.npz", "wb") as handle:  # an .npz holding a pickled object array
        np.savez(handle, a0=np.array([{"x": 1}], dtype=object))
    (tmp_path / "b.json").write_text(json.dumps({"__array__": "a0"}))
    with pytest.raises(plain.PlainDataError, match="not a plain .npz"):
        plain.load(tmp_path / "b")
    (tmp_path / "c.json").write_text(json.dumps({"__array__": "a9"}))
    with pytest.raises(plain.PlainDataError, match="missing array"):
        plain.load(tmp_path / "c")
    (tmp_path / "d.json").write_text("{not json")
    with pytest.raises(plain.PlainDataError, match="not valid JSON"):
        plain.load(tmp_path / "d")
    (tmp_path / "e.json").write_text(json.dumps([1] * 100))
    with pytest.raises(plain.PlainDataError, match="larger than"):
        plain.load(tmp_path / "e", max_bytes=50)
    (tmp_path / "f.json").symlink_to(tmp_path / "a.json")
    with pytest.raises(plain.PlainDataError, match="link"):
        plain.load(tmp_path / "f")


# ---------------------------------------------------------------- questions and feedback
def test_questions_are_found_by_chapter_id():
    assert [q.name for q in load_questions("_demo")] == ["q1", "q2"]
    with pytest.raises(ValueError, match="available: .*_DEMO"):
        Grader("T404")
    with pytest.raises(TypeError, match="tuple"):
        Question("q1", points=1, names="x", collect=lambda ns, s: None, grade=lambda a, s: None)
    with pytest.raises(ValueError, match="points"):
        Question("q1", points=-1, collect=lambda ns, s: None, grade=lambda a, s: None)


def test_check_reads_the_callers_globals(monkeypatch, capsys):
    grader = Grader("_DEMO")
    monkeypatch.delitem(globals(), "double", raising=False)
    result = grader.check("q1")
    assert result == CheckResult("q1", False, 0, 2, "define `double` first (run the cell that "
                                 "computes it)", "Return the argument times two.", result.seconds)
    assert "q1 failed: 0 / 2 points" in capsys.readouterr().out

    monkeypatch.setitem(globals(), "double", lambda x: 2 * x)
    result = grader.check("q1")
    assert (result.passed, result.points, result.max_points, result.message) == (True, 2, 2, "")
    assert capsys.readouterr().out.strip() == "q1 passed: 2 / 2 points"

    monkeypatch.setitem(globals(), "double", lambda x: x + 2)
    assert grader.check("q1").message.startswith("double(")


def test_checks_draw_fresh_inputs_so_a_memorised_answer_fails():
    seen = {}

    def memorise(x):  # right on the first call's inputs, then replays them
        return seen.setdefault(len(seen) % 3, 2 * x)

    grader = Grader("_DEMO", quiet=True)
    assert grader.check("q1", namespace={"double": memorise}).passed
    assert not grader.check("q1", namespace={"double": memorise}).passed


def _forever(x):
    """Loops for 5 s, not for ever: a broken time limit then fails the test, not hangs it."""
    end = time.monotonic() + 5
    while time.monotonic() < end:
        try:
            pass
        except Exception:  # a student's catch-all must not swallow the time limit
            pass


@pytest.mark.parametrize("student, words", [
    (lambda x: 1 / 0, "ZeroDivisionError: division by zero"),
    (lambda x: exec("raise SystemExit(3)"), "SystemExit: 3"),
    (lambda x: exec("raise KeyboardInterrupt"), "interrupted"),
    (lambda x: _Sneaky(2 * x), None),  # a float subclass is converted, and passes as a float
    (lambda x: object(), "cannot pass a object to the grader"),
    (_forever, "stopped after 0.3 s"),
])
def test_check_never_propagates_the_students_errors(student, words):
    start = time.perf_counter()
    result = Grader("_DEMO", time_limit=0.3, quiet=True).check("q1", namespace={"double": student})
    if words is None:
        assert result.passed
    else:
        assert not result.passed and result.points == 0 and words in result.message
    assert time.perf_counter() - start < 3


def test_check_all_sums_and_the_feedback_log_is_only_a_log(tmp_path, monkeypatch, capsys):
    log = tmp_path / "log.jsonl"
    monkeypatch.setenv(FEEDBACK_LOG_ENV, str(log))
    grader = Grader("_DEMO")
    assert grader.check("q7", namespace={}).message.startswith("_DEMO has no question 'q7'")
    report = grader.check_all(namespace={"double": lambda x: 2 * x, "mean_of": len})
    assert (report.score, report.max_score, report.isolated) == (2, 3, False)
    assert "total     2 / 3" in capsys.readouterr().out
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(r["chapter_id"], r["question"], r["points"]) for r in records] == [
        ("_DEMO", "q7", 0), ("_DEMO", "q1", 2), ("_DEMO", "q2", 0)]


def test_inside_a_sandbox_check_only_announces_grading(monkeypatch):
    monkeypatch.setenv("TLCOURSE_GRADING", "sandbox")
    result = Grader("_DEMO", quiet=True).check("q1", namespace={"double": lambda x: 2 * x})
    assert (result.passed, result.points) == (False, 0) and "instructor" in result.message


def test_report_text_and_json():
    results = [CheckResult("q1", True, 2, 2, "", "h1", 0.1),
               CheckResult("q2", False, 0, 1.5, "wrong\nvalue", "h2", 0.2)]
    report = Report("_DEMO", results, "x.ipynb", notes=["cell 3 raised ValueError: v"],
                    sha256="ab" * 32, isolated=True)
    lines = report.to_text().splitlines()
    assert lines[0] == "x.ipynb (chapter _DEMO)"
    assert lines[1:] == ["note: cell 3 raised ValueError: v",
                         "question  points   result",
                         "q1        2 / 2    passed",
                         "q2        0 / 1.5  failed: wrong value",
                         "                   hint: h2",
                         "total     2 / 3.5"]
    data = json.loads(report.to_json())
    assert data["score"] == sum(r["points"] for r in data["results"]) == 2
    assert data["max_score"] == 3.5 and data["error"] is None
    assert data["sha256"] == "ab" * 32 and data["isolated"] is True


def test_collection_points_follow_the_check_cells():
    cells = [new_code_cell("x = 1"), new_code_cell('grader.check("q1")'), new_markdown_cell(
        'grader.check("q2")'), new_code_cell("grader.check( 'q2' ); grader.check('q9')"),
        new_code_cell("grader.check_all()")]
    assert collection_points(cells, ["q1", "q2"]) == [(1, ["q1"]), (3, ["q2"]), (4, ["q1", "q2"])]
    many = [new_code_cell('grader.check("q1")') for _ in range(20)]
    points = collection_points(many, ["q1"], per_question=8)
    assert [i for i, _ in points] == list(range(12, 20))  # the latest eight


def test_choice_question_reads_letters_the_same_way_everywhere():
    from tlcourse.grading import plain
    from tlcourse.grading.choice import choice_question

    q = choice_question("q9", "answer_q9", choices={"a": "A", "b": "B", "c": "C"}, answer="c",
                        feedback={"a": "fa", "b": "fb"}, points=2, hint="h")
    assert (q.name, q.points, q.names, q.hint) == ("q9", 2, ("answer_q9",), "h")

    def grade(value):
        try:
            q.grade(plain.roundtrip(q.collect({"answer_q9": value}, 0)), 0)
        except AssertionError as err:
            return str(err)
        return None

    for right in ("c", " C ", "(c)", "c.", "(C)"):
        assert grade(right) is None, right
    assert grade("a") == "not 'a': fa" and grade("b") == "not 'b': fb"
    assert "choose one of 'a', 'b', 'c'" in grade("d") and "choose one of" in grade("cc")
    assert "placeholder" in grade(...) and "one letter as a string" in grade(...)
    assert "a list" in grade(["c"]) and "an int" in grade(3)
    with pytest.raises(ValueError, match="not one of the choices"):
        choice_question("q1", "x", choices={"a": "A"}, answer="b", feedback={})
    with pytest.raises(ValueError, match="feedback is missing"):
        choice_question("q1", "x", choices={"a": "A", "b": "B"}, answer="b", feedback={})


def test_answers_call_and_returned_float():
    from tlcourse.grading import plain
    from tlcourse.grading.answers import call, describe, returned_float

    assert returned_float(plain.roundtrip(call(lambda: np.array([2.5]))), "f()", "2.5") == 2.5
    for bad, fragment in ((lambda: True, "a single float"), (lambda: "x", "str 'x'"),
                          (lambda: np.zeros(3), "an array of shape (3,)"), (lambda: float("nan"), "returned nan"),
                          (lambda: object(), "an object"), (lambda: [][0], "raised IndexError")):
        with pytest.raises(AssertionError, match=re.escape(fragment)):
            returned_float(plain.roundtrip(call(bad)), "f()", "2.5")
    with pytest.raises(AssertionError, match="malformed"):
        returned_float("nonsense", "f()", "2.5")
    assert describe({"unsupported": "ellipsis"}).startswith("`...`")


def test_answers_scalar_takes_numbers_and_names_the_rest():
    import torch

    from tlcourse.grading.answers import NOT_PLAIN, scalar

    for value, expected in ((2, 2.0), (np.float64(0.25), 0.25), (np.array(1.5), 1.5),
                            (torch.tensor(3.0, requires_grad=True), 3.0), (torch.tensor(7), 7.0)):
        got = scalar(value)
        assert type(got) is float and got == expected
    for bad, kind in ((True, "bool"), (np.bool_(True), "bool"), ([1.0], "list"), ("1.0", "str"),
                      (torch.ones(1), "Tensor"), (np.ones(2), "ndarray"), (..., "ellipsis")):
        assert scalar(bad) == f"{NOT_PLAIN}{kind}>", bad
