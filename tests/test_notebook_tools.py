"""The notebook runner's helpers: timing table, HTML check and the book-cache hand-over."""
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

from tlcourse import notebooks


def _nb(path: Path, source="x = 1"):
    nb = new_notebook(cells=[new_code_cell(source, metadata={"tags": ["parameters"]})])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return nb


def test_course_notebooks_and_limits(tmp_path):
    _nb(tmp_path / "book/theory/T99-x.ipynb")
    _nb(tmp_path / "solutions/T99-x.ipynb")
    _nb(tmp_path / "book/theory/.ipynb_checkpoints/T99-x-checkpoint.ipynb")
    found = notebooks.course_notebooks(tmp_path)
    assert [p.as_posix() for p in found] == ["book/theory/T99-x.ipynb", "solutions/T99-x.ipynb"]
    assert [notebooks.time_limit(p) for p in found] == [60.0, 20.0]


def test_timings_table_flags_notebooks_over_budget(tmp_path):
    records = [{"notebook": "book/a.ipynb", "seconds": 12.0, "limit": 60.0},
               {"notebook": "solutions/a.ipynb", "seconds": 25.0, "limit": 20.0}]
    text = notebooks.write_timings_table(records, tmp_path / "t.md")
    assert "| `book/a.ipynb` | 12.0 | 60 | yes |" in text
    assert "| `solutions/a.ipynb` | 25.0 | 20 | **no** |" in text
    assert "Total: 37 s for 2 notebooks." in text


def test_check_html_finds_missing_pages_figures_and_errors(tmp_path):
    for name in ("good", "nofig", "noquiz", "error", "missing"):
        _nb(tmp_path / f"book/theory/{name}.ipynb")
    _nb(tmp_path / "exercises/good.ipynb")
    _nb(tmp_path / "solutions/unlisted.ipynb")
    html = tmp_path / "_build/html/book/theory"
    html.mkdir(parents=True)
    quiz = "<script>show_questions(q, d)</script>"
    (html / "good.html").write_text(f'<p>ok</p><img src="a.png">{quiz}')
    (html / "nofig.html").write_text(f"<p>no figure</p>{quiz}")
    (html / "noquiz.html").write_text('<img src="a.png">')
    (html / "error.html").write_text(f'<img src="a.png">{quiz}<div class="output_error">Traceback (most recent call last)</div>')
    (tmp_path / "_build/html/exercises").mkdir(parents=True)
    (tmp_path / "_build/html/exercises/good.html").write_text("<p>exercise</p>")
    problems = "\n".join(notebooks.check_html(tmp_path))
    assert "good.html" not in problems
    assert "nofig.html: no figure" in problems
    assert "noquiz.html: no quiz" in problems and "nofig.html: no quiz" not in problems
    assert "error.html: contains an error output" in problems
    assert "missing.html: not built" in problems
    assert "solutions/unlisted.html: not built" in problems


def test_seed_book_cache_uses_only_fresh_unparameterised_runs(tmp_path):
    src = tmp_path / "book/theory/T99-x.ipynb"
    _nb(src, "print(41 + 1)")
    out = tmp_path / notebooks.EXECUTED / "book/theory/T99-x.ipynb"
    executed = _nb(out, "print(41 + 1)")
    executed.cells[0].outputs = [nbformat.v4.new_output("stream", name="stdout", text="42\n")]
    executed.cells[0].metadata["papermill"] = {"duration": 0.1}  # papermill adds metadata
    nbformat.write(executed, out)
    out.with_suffix(".json").write_text('{"seconds": 1.0, "parameters": {}}')
    assert notebooks.seed_book_cache(tmp_path) == ["book/theory/T99-x.ipynb"]

    from jupyter_cache import get_cache
    cache = get_cache(str(tmp_path / notebooks.CACHE))
    record = cache.match_cache_notebook(nbformat.read(src, as_version=4))  # the book build's lookup
    cached = cache.get_cache_bundle(record.pk).nb
    assert cached.cells[0].outputs[0]["text"] == "42\n"

    out.with_suffix(".json").write_text('{"seconds": 1.0, "parameters": {"n": 5}}')
    assert notebooks.seed_book_cache(tmp_path) == []  # a parameterised run is not the book's


def test_mark_graded_outputs_tags_only_the_grading_cells():
    nb = new_notebook(cells=[new_code_cell("x = 1"), new_code_cell('grader.check("q1")'),
                             new_code_cell("grader.check_all()", metadata={"tags": ["remove-input"]})])
    assert notebooks.mark_graded_outputs(nb) == 2
    assert "tags" not in nb.cells[0].metadata
    assert nb.cells[1].metadata["tags"] == [notebooks.NBVAL_CHECK]
    assert nb.cells[2].metadata["tags"] == ["remove-input", notebooks.NBVAL_CHECK]
    notebooks.mark_graded_outputs(nb)  # idempotent
    assert nb.cells[2].metadata["tags"].count(notebooks.NBVAL_CHECK) == 1
