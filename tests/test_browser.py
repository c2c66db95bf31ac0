"""The built book in a real browser: Debian's Chromium driven through chromium-driver (Selenium).

Run after the book is built (``make browser``, part of ``make test``): the pages in
``_build/html`` are served from 127.0.0.1 and every page is loaded and checked for JavaScript
errors, formulas left untypeset and images that do not load; then the search, a quiz answered
wrong and then right, the exercise download and the cheat sheet's printed length are checked.
Screenshots for a human reader land in ``_build/screenshots/``.

The browser is never downloaded: the project's set-up installs ``chromium`` and
``chromium-driver`` with apt-get where it can (``make browser-tools``). In CI (``CI`` set) a
missing browser is a failure, not a skip.
"""
from __future__ import annotations

import functools
import http.server
import json
import math
import os
import re
import shutil
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tlcourse import quiz, study

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
SHOTS = ROOT / "_build" / "screenshots"
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
# The print stylesheet (book/_ext/static/tlcourse-print.css) sets two columns of small type: about
# four chapters a page at the browser's default print settings; a third of a page each is the bound.
PAGES_PER_CHAPTER = 1 / 3


def _missing(what: str):
    if os.environ.get("CI"):
        pytest.fail(f"{what}; in CI the browser test must run (make browser-tools installs it)")
    pytest.skip(f"{what}: install Debian's chromium and chromium-driver (make browser-tools)")


@pytest.fixture(scope="module")
def site():
    if not (HTML / "index.html").exists():
        _missing("the book is not built (_build/html/index.html missing): run make html first")
    handler = functools.partial(_QuietHandler, directory=str(HTML))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM and DRIVER):
        _missing("chromium or chromedriver not found")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1400"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_page_load_timeout(60)
    SHOTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()


def _pages() -> list[str]:
    pages = sorted(p.relative_to(HTML).as_posix() for p in HTML.rglob("*.html")
                   if not p.relative_to(HTML).parts[0].startswith(("_", "reports")))
    return [p for p in pages if p not in {"genindex.html"}]


def _open(driver, url: str):
    """Load a page and wait until MathJax has typeset it (when the page uses MathJax)."""
    driver.get_log("browser")  # drop what earlier pages logged
    driver.get(url)
    driver.execute_async_script("""
        const done = arguments[arguments.length - 1];
        const wait = () => (window.MathJax && MathJax.startup && MathJax.startup.promise)
            ? MathJax.startup.promise.then(() => done(true), () => done(false)) : done(true);
        if (document.readyState === "complete") { wait(); } else { window.addEventListener("load", wait); }
    """)


def _errors(driver) -> list[str]:
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def test_every_page_loads_typeset_with_images_and_no_js_error(site, browser):
    pages = _pages()
    assert len(pages) >= 20, f"only {len(pages)} pages built"
    problems = []
    for page in pages:
        _open(browser, f"{site}/{page}")
        for message in _errors(browser):
            problems.append(f"{page}: JavaScript or network error: {message}")
        text = browser.execute_script("return document.querySelector('main') ? "
                                      "document.querySelector('main').innerText : document.body.innerText")
        if "$$" in text or re.search(r"\\(frac|sum|mathcal|operatorname)\b", text):
            problems.append(f"{page}: untypeset formula in the text: {text[text.find('$$') - 40:][:120]!r}")
        broken = browser.execute_script("""
            return Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0))
                        .map(i => i.getAttribute('src'));""")
        if broken:
            problems.append(f"{page}: images that did not load: {broken[:3]}")
    assert not problems, "\n".join(problems)


def test_formulas_are_typeset_by_mathjax(site, browser):
    _open(browser, f"{site}/book/theory/T13-knowledge-distillation.html")
    assert browser.execute_script("return document.querySelectorAll('mjx-container').length") > 10


def test_search_finds_a_chapter_by_a_key_term(site, browser):
    from selenium.webdriver.support.ui import WebDriverWait

    _open(browser, f"{site}/search.html?q=distillation")
    links = WebDriverWait(browser, 30).until(
        lambda d: [a.get_attribute("href") for a in d.find_elements("css selector", "#search-results a")] or None)
    assert any("T13-knowledge-distillation.html" in link for link in links), links[:10]


def _feedback(browser, question):
    fb = question.find_element("css selector", ".Feedback")
    return fb.get_attribute("class"), fb.text


def test_quiz_wrong_then_right(site, browser):
    """On the T01 page: a wrong option, then the right one; a wrong number, then this build's key."""
    from selenium.webdriver.common.keys import Keys

    record = quiz.recorded(ROOT / "_build" / "executed" / "book" / "theory" / "T01-what-is-transfer-learning.ipynb")
    built = quiz.build("T01", record["results"] if record else None, ROOT) if record else None
    _open(browser, f"{site}/book/theory/T01-what-is-transfer-learning.html")
    questions = browser.find_elements("css selector", "[id^=quizWrap]")
    assert len(questions) == len(study.read_study_file("T01", ROOT)["quiz"])
    first = questions[0]
    options = {label.text.strip(): label for label in first.find_elements("css selector", "label.MCButton")}
    data = study.read_study_file("T01", ROOT)["quiz"][0]
    right = next(o["answer"] for o in data["options"] if o.get("correct") is True)
    wrong = next(o["answer"] for o in data["options"] if not o.get("correct"))
    options[wrong].click()
    cls, text = _feedback(browser, first)
    assert "incorrect" in cls and text.startswith("Not this one.") and "(See" in text, (cls, text)
    browser.save_screenshot(str(SHOTS / "quiz-after-wrong-answer.png"))
    options[right].click()
    cls, text = _feedback(browser, first)
    assert "correct" in cls.split() and text.startswith("Right."), (cls, text)

    assert built is not None, "T01 was not executed in this build (_build/executed is missing)"
    numeric = next(i for i, q in enumerate(built) if q["type"] == "numeric" and "This build" in q["question"])
    box = questions[numeric].find_element("css selector", "input")
    box.send_keys(f"{built[numeric]['key'] - 5 * built[numeric]['tolerance'] - 1:.2f}", Keys.ENTER)
    cls, text = _feedback(browser, questions[numeric])
    assert "incorrect" in cls and text.startswith("Too low."), (cls, text)
    box.clear()
    box.send_keys(f"{built[numeric]['key']:.2f}", Keys.ENTER)
    cls, text = _feedback(browser, questions[numeric])
    assert "correct" in cls.split() and text.startswith("Right."), (cls, text)
    assert not _errors(browser)


def test_exercise_page_downloads_the_notebook(site, browser):
    _open(browser, f"{site}/book/theory/T07-fine-tuning.html")
    browser.save_screenshot(str(SHOTS / "chapter-T07.png"))
    link = browser.find_element("css selector", "a[href$='exercises/T07-fine-tuning.html']")
    link.click()
    hrefs = [a.get_attribute("href") for a in browser.find_elements("css selector", "a[href$='.ipynb']")]
    assert not [h for h in hrefs if not h.startswith(site)], (
        f"links off the book with no repository configured (launch buttons pointing elsewhere?): {hrefs}")
    download = [h for h in hrefs if h.endswith("exercises/T07-fine-tuning.ipynb")]
    assert download, f"no download link to the exercise notebook on its page: {hrefs}"
    with urllib.request.urlopen(download[0]) as response:
        nb = json.loads(response.read())
    assert nb["nbformat"] == 4
    assert any('Grader("T07")' in "".join(c["source"]) for c in nb["cells"])
    assert any("NotImplementedError" in "".join(c["source"]) for c in nb["cells"]), "the exercise, not the solution"


def test_solution_is_folded_behind_try_it_first(site, browser):
    _open(browser, f"{site}/book/theory/T07-fine-tuning.html")
    fold = browser.find_element("css selector", "div.admonition.dropdown")
    assert "try the exercise first" in fold.text.lower()
    link = fold.find_element("css selector", "a[href$='solutions/T07-fine-tuning.html']")
    assert not link.is_displayed(), "the solution link must be folded until the reader opens it"
    fold.find_element("css selector", ".toggle-button, button").click()
    time.sleep(0.5)
    assert link.is_displayed()


def test_cheatsheet_prints_on_a_few_pages(site, browser):
    import base64

    _open(browser, f"{site}/book/cheatsheet.html")
    browser.save_screenshot(str(SHOTS / "cheatsheet.png"))
    text = browser.find_element("css selector", "main").text
    for _, path in study.chapter_paths(ROOT):
        assert path.name.split("-")[0] + " · " in text
    pdf = base64.b64decode(browser.execute_cdp_cmd("Page.printToPDF", {"printBackground": False})["data"])
    (SHOTS / "cheatsheet.pdf").write_bytes(pdf)
    pages = len(re.findall(rb"/Type\s*/Page(?!s)", pdf))
    chapters = len(study.chapter_paths(ROOT))
    most = 1 + math.ceil(chapters * PAGES_PER_CHAPTER)
    assert 1 <= pages <= most, f"the cheat sheet prints on {pages} pages for {chapters} chapters (at most {most})"
