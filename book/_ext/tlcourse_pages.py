"""Sphinx fixes for the built book's pages, so that they load without a JavaScript error.

- sphinx-thebe 0.3 adds its configuration script (``const THEBE_JS_URL = ...``) once per
  ``env-before-read-docs`` event, which Jupyter Book 1 fires twice; the second ``const``
  declaration is a SyntaxError in every page. Identical scripts are kept once.
- pydata-sphinx-theme logs "Got invalid theme mode" on a first visit unless ``default_mode``
  is set; it is set to "auto" (follow the reader's system setting) unless the config says otherwise.

Besides, ``static/tlcourse-print.css`` is added to every page: the cheat sheet prints in two
columns of small type (tests/test_browser.py bounds its page count).

The browser test (tests/test_browser.py) fails on any JavaScript error, so a regression shows.
"""
from __future__ import annotations

from pathlib import Path

STATIC = Path(__file__).resolve().parent / "static"


def _dedupe_scripts(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, kept = set(), []
    for script in scripts:
        key = (str(getattr(script, "filename", script) or ""),  # None and "" both mean inline
               tuple(sorted((k, str(v)) for k, v in getattr(script, "attributes", {}).items())))
        if key in seen:
            continue
        seen.add(key)
        kept.append(script)
    scripts[:] = kept
    context.setdefault("default_mode", "auto")


def _add_static(app, config):
    config.html_static_path = [*config.html_static_path, str(STATIC)]


def setup(app):
    app.connect("config-inited", _add_static)
    app.add_css_file("tlcourse-print.css")
    app.connect("html-page-context", _dedupe_scripts, priority=100)  # early: a later handler may return a template and stop the event
    return {"parallel_read_safe": True, "parallel_write_safe": True}
