"""Exercises generated from solutions: one source of truth for every graded exercise.

``solutions/<ID>-<slug>.ipynb`` holds the worked answer. In a code cell the student's part lies
between ``# BEGIN SOLUTION`` and ``# END SOLUTION`` lines, or is a single ``name = value  # SOLUTION``
line; cells tagged ``solution-only`` are answers only. :func:`make_exercise` turns a solution into
the exercise that ``exercises/`` ships, and :func:`build_exercises` writes them all, byte for byte
the same every time (``check=True`` lists the ones that drifted instead).

Each exercise records its chapter in its metadata (``{"tlcourse": {"chapter": "T01"}}``, taken from
the file name), which the grader cross-checks against the file name and the ``Grader(...)`` call.
"""
from __future__ import annotations

import argparse
import ast
import copy
import io
import re
import sys
from pathlib import Path

import nbformat

__all__ = ["make_exercise", "build_exercises", "main_exercises", "chapter_from_name",
           "SOLUTION_ONLY_TAG", "PLACEHOLDER"]

SOLUTION_ONLY_TAG = "solution-only"
PLACEHOLDER = 'raise NotImplementedError("replace this line with your code")'
BANNER = ("> **Exercise notebook**, generated from `{source}` by `tlcourse exercises`: edit the "
          "solution instead.\n> Replace each `raise NotImplementedError(...)` and `...` with your "
          "code, and run `grader.check(...)` after each question.")
# Keys that tools rewrite on every run; keeping them would make exercises drift for nothing.
_VOLATILE_CELL_METADATA = ("execution", "papermill", "ExecuteTime", "collapsed", "scrolled")
_ONE_LINER = re.compile(r"^(?P<code>.*?\S)\s*#\s*SOLUTION\s*$")
_CHAPTER_IN_NAME = re.compile(r"^(_?[A-Za-z0-9]+)-")


def chapter_from_name(name: str) -> str | None:
    """``"T01-what-is-transfer-learning.ipynb"`` -> ``"T01"``; None when the name has no id.

    >>> chapter_from_name("T07-fine-tuning.ipynb"), chapter_from_name("homework.ipynb")
    ('T07', None)
    """
    match = _CHAPTER_IN_NAME.match(Path(name).name)
    return match[1].upper() if match else None


def _blank_one_liner(code: str, where: str) -> str:
    """``x = 6 * 7`` -> ``x = ...  # YOUR CODE HERE`` (also annotated, augmented and ``return``)."""
    indent, statement = code[: len(code) - len(code.lstrip())], code.strip()
    try:
        body = ast.parse(statement).body
    except SyntaxError:
        body = []
    node = body[0] if len(body) == 1 else None
    value = getattr(node, "value", None)
    kinds = (ast.Assign, ast.AnnAssign, ast.AugAssign, ast.Return)
    if not isinstance(node, kinds) or value is None:
        raise ValueError(f"{where}: `# SOLUTION` marks a line `name = value` or `return value`, "
                         f"not {statement!r}; use BEGIN/END SOLUTION lines")
    head = statement.encode()[: value.col_offset].decode()  # col_offset counts UTF-8 bytes
    return f"{indent}{head}...  # YOUR CODE HERE"


def _strip_solutions(source: str, where: str) -> str:
    out: list[str] = []
    opened = None  # line number of the open BEGIN SOLUTION
    for number, line in enumerate(source.splitlines(), start=1):
        marker = line.strip()
        if marker == "# BEGIN SOLUTION":
            if opened is not None:
                raise ValueError(f"{where}, line {number}: BEGIN SOLUTION inside the region "
                                 f"opened on line {opened}")
            opened, indent = number, line[: len(line) - len(line.lstrip())]
            out += [f"{indent}# YOUR CODE HERE", f"{indent}{PLACEHOLDER}"]
        elif marker == "# END SOLUTION":
            if opened is None:
                raise ValueError(f"{where}, line {number}: END SOLUTION without BEGIN SOLUTION")
            opened = None
        elif opened is None:
            match = _ONE_LINER.match(line)
            out.append(_blank_one_liner(match["code"], f"{where}, line {number}")
                       if match else line)
    if opened is not None:
        raise ValueError(f"{where}: BEGIN SOLUTION on line {opened} is never closed")
    return "\n".join(out) + ("\n" if source.endswith("\n") else "")


def make_exercise(solution_nb: nbformat.NotebookNode,
                  source_name: str | None = None) -> nbformat.NotebookNode:
    """The exercise for a solution notebook; ``source_name`` is named in the banner.

    >>> cell = nbformat.v4.new_code_cell("x = 6 * 7  # SOLUTION")
    >>> print(make_exercise(nbformat.v4.new_notebook(cells=[cell])).cells[1].source)
    x = ...  # YOUR CODE HERE
    """
    exercise = copy.deepcopy(solution_nb)
    cells = []
    for index, cell in enumerate(exercise.cells, start=1):
        if SOLUTION_ONLY_TAG in cell.get("metadata", {}).get("tags", []):
            continue
        for key in _VOLATILE_CELL_METADATA:
            cell.get("metadata", {}).pop(key, None)
        if cell.cell_type == "code":
            cell.source = _strip_solutions(cell.source, f"cell {index}")
            cell.outputs, cell.execution_count = [], None
        cells.append(cell)
    source = f"solutions/{source_name}" if source_name else "the solution notebook"
    banner = nbformat.v4.new_markdown_cell(BANNER.format(source=source))
    if exercise.get("nbformat_minor", 0) >= 5:
        banner.id = "exercise-banner"  # fixed, so that generation is deterministic
    else:
        del banner["id"]
    exercise.cells = [banner, *cells]
    kernelspec = exercise.metadata.get("kernelspec")
    metadata = {"kernelspec": kernelspec} if kernelspec else {}
    chapter = chapter_from_name(source_name) if source_name else None
    if chapter:
        metadata["tlcourse"] = {"chapter": chapter}
    exercise.metadata = nbformat.from_dict(metadata)
    return exercise


def _notebook_text(nb: nbformat.NotebookNode) -> str:
    buffer = io.StringIO()
    nbformat.write(nb, buffer)  # adds the trailing newline
    return buffer.getvalue()


def build_exercises(solutions_dir, exercises_dir, check: bool = False) -> list[Path]:
    """Write ``exercises_dir/<name>`` for every ``solutions_dir/*.ipynb``; return their paths.

    A file whose bytes are already right is left alone. With ``check=True`` nothing is written
    and the exercises that are missing or differ are returned.
    """
    solutions_dir, exercises_dir = Path(solutions_dir), Path(exercises_dir)
    if not solutions_dir.is_dir():
        raise FileNotFoundError(f"no solutions folder at {solutions_dir}")
    listed = []
    for solution in sorted(solutions_dir.glob("*.ipynb")):
        try:
            exercise = make_exercise(nbformat.read(solution, as_version=4), solution.name)
            nbformat.validate(exercise)
        except Exception as exc:
            raise ValueError(f"{solution}: {exc}") from exc
        data, target = _notebook_text(exercise).encode(), exercises_dir / solution.name
        current = target.read_bytes() if target.is_file() else None
        if check:
            listed += [target] if current != data else []
            continue
        if current != data:
            exercises_dir.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        listed.append(target)
    return listed



def main_exercises(argv: list[str] | None = None) -> int:
    """``tlcourse exercises [--check] [--root DIR]``: ``exercises/`` from ``solutions/``.

    Exit 0 when done or in sync, 1 when ``--check`` finds drift, 2 on a bad solution notebook."""
    parser = argparse.ArgumentParser(prog="tlcourse exercises",
                                     description="Generate exercises/ from solutions/.")
    parser.add_argument("--root", type=Path, default=Path("."), help="repository root (default .)")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if an exercise is missing or out of date")
    args = parser.parse_args(argv)
    try:
        paths = build_exercises(args.root / "solutions", args.root / "exercises", check=args.check)
    except (OSError, ValueError) as exc:
        print(f"tlcourse exercises: {exc}", file=sys.stderr)
        return 2
    if args.check and paths:
        print("exercises out of date with solutions/ (run `tlcourse exercises`):")
        print("\n".join(f"  {p}" for p in paths))
        return 1
    print("exercises/ matches solutions/" if args.check
          else f"{len(paths)} exercises in {args.root / 'exercises'}")
    return 0
