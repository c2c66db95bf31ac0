"""Launch buttons: built once with a sample repository URL, every notebook page's Colab and Binder
links must open that very notebook (chapters, exercises and solutions alike)."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = "https://github.com/example-org/tlcourse"


@pytest.mark.slow
def test_launch_buttons_point_at_each_notebook(tmp_path):
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert "repository" not in config and "launch_buttons" not in config, (
        "_config.yml names no repository, so it must not configure launch buttons")
    config["repository"] = {"url": SAMPLE, "branch": "main"}
    config["launch_buttons"] = {"colab_url": "https://colab.research.google.com",
                                "binderhub_url": "https://mybinder.org", "notebook_interface": "classic"}
    config["execute"]["execute_notebooks"] = "off"  # the buttons do not depend on outputs
    # paths in the config are relative to its own folder
    config["sphinx"]["local_extensions"] = {name: str(ROOT / path) for name, path in
                                            config["sphinx"]["local_extensions"].items()}
    (tmp_path / "_config.yml").write_text(yaml.safe_dump(config))
    jb = Path(sys.executable).parent / "jupyter-book"
    run = subprocess.run([str(jb), "build", str(ROOT), "--config", str(tmp_path / "_config.yml"),
                          "--path-output", str(tmp_path / "out"), "--builder", "html"],
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    html = tmp_path / "out" / "_build" / "html"
    notebooks = sorted(p.relative_to(ROOT) for pattern in ("book/*/*.ipynb", "exercises/*.ipynb", "solutions/*.ipynb")
                       for p in ROOT.glob(pattern))
    assert len(notebooks) >= 24
    problems = []
    for nb in notebooks:
        page = (html / nb.with_suffix(".html")).read_text(encoding="utf-8")
        colab = re.findall(r'href="(https://colab\.research\.google\.com/[^"]+)"', page)
        binder = re.findall(r'href="(https://mybinder\.org/[^"]+)"', page)
        want_colab = f"https://colab.research.google.com/github/example-org/tlcourse/blob/main/{nb.as_posix()}"
        if colab != [want_colab]:
            problems.append(f"{nb}: Colab links {colab}, expected [{want_colab}]")
        if len(binder) != 1 or not binder[0].startswith("https://mybinder.org/v2/gh/example-org/tlcourse/main?") \
                or not binder[0].endswith(nb.as_posix()):
            problems.append(f"{nb}: Binder links {binder}")
    assert not problems, "\n".join(problems)
