# Two commands for a fresh machine (see README.md):
#   make book   build the HTML book, executing every notebook  -> _build/html/index.html
#   make test   run every test: unit, grading, notebooks (papermill + nbval), book build with -W
# Each creates or updates .venv from the pins in requirements/pins.txt first.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SHARED_DATA := $(abspath ../shared/data)
# Data is looked for here first (then in the user cache, then downloaded).
export TLCOURSE_DATA ?= $(if $(wildcard $(SHARED_DATA)),$(SHARED_DATA),)
# Trained source models and decoded datasets are cached inside the checkout.
export TLCOURSE_CACHE ?= $(CURDIR)/_build/cache
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYDEVD_DISABLE_FILE_VALIDATION := 1
PIN_HASH := $(shell cat requirements/pins.txt pyproject.toml | sha256sum | cut -c1-12)
STAMP := $(VENV)/.installed-$(PIN_HASH)
JOBS ?= 2

.PHONY: env sandbox-tools browser-tools bench-grading book test unit notebooks nbval html browser exercises timings benchmarks clean

env: $(STAMP)

$(STAMP): requirements/pins.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip==26.3"
	$(PY) -m pip install --quiet -r requirements/pins.txt -e .
	@rm -f $(VENV)/.installed-* && touch $@

# The chapters run as `make test` runs them (papermill, $(JOBS) side by side, one thread each, only
# those changed since their last run); the build then takes their outputs from the cache.
book: env
	$(PY) -m tlcourse.study cheatsheet
	OMP_NUM_THREADS=1 $(PY) -m tlcourse.notebooks run book --jobs $(JOBS) --threads 1 --changed
	$(PY) -m tlcourse.notebooks seed-cache
	$(VENV)/bin/jupyter-book build . --builder html -W --keep-going
	$(PY) -m tlcourse.notebooks check-html
	@echo "Open _build/html/index.html"

# The grader runs each submission under bubblewrap, and its isolation tests need it. As root
# (CI) it is installed with apt-get; anyone else is told how, and the build goes on.
sandbox-tools:
	@if command -v bwrap >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing bubblewrap (the grading sandbox)"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get update -qq && apt-get install -y -qq bubblewrap; \
	else \
	    echo "warning: bwrap (bubblewrap) not found; the grading isolation tests need it." \
	         "On Debian or Ubuntu: sudo apt-get install bubblewrap" >&2; \
	fi

# The browser test drives the built book in Debian's Chromium through chromium-driver (Selenium),
# never a downloaded browser. As root (CI) both are installed with apt-get; anyone else is told how.
browser-tools:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing chromium and chromium-driver (the browser test)"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null; \
	else \
	    echo "warning: chromium or chromedriver not found; the browser test needs both." \
	         "On Debian or Ubuntu: sudo apt-get install chromium chromium-driver" >&2; \
	fi

# Unit tests and doctests, grading tests, and each notebook executed once with papermill.
unit: env sandbox-tools
	OMP_NUM_THREADS=1 $(PY) -m pytest -n $(JOBS) --dist load -m "not browser" --durations=40

# Every chapter is executed once, by papermill in `unit`; the notebook tests and the book build read
# that copy. nbval runs the solutions a second time and compares their grades (the grading cells are
# tagged nbval-check-output in the executed copy): a grade that changes between runs fails.
nbval: env
	OMP_NUM_THREADS=1 $(PY) -m pytest -n $(JOBS) --dist loadscope --nbval-lax -p no:cacheprovider -o addopts="" -o testpaths="" \
	    --nbval-current-env _build/executed/solutions

# The book from the notebooks executed above (their outputs are put in the book's cache).
html: env
	$(PY) -m tlcourse.study cheatsheet --check
	$(PY) -m tlcourse.notebooks seed-cache
	$(VENV)/bin/jupyter-book build . --builder html -W --keep-going
	$(PY) -m tlcourse.notebooks check-html

# The built book in Debian's Chromium: every page, the search, a quiz, the downloads, the cheat sheet.
browser: env browser-tools
	$(PY) -m pytest -p no:xdist -m browser tests/test_browser.py

test: unit nbval html browser
	@echo "all tests passed"

exercises: env
	$(PY) -m tlcourse exercises

timings: env
	$(PY) -m tlcourse timings

# Reference benchmarks against published numbers (minutes; not part of `make test`):
#   make benchmarks SETTING=full BENCH="dann_digits maml_sinusoid"   -> benchmarks/RESULTS.md
SETTING ?= cpu
BENCH ?=
benchmarks: env
	OMP_NUM_THREADS=1 $(PY) -m benchmarks $(BENCH) --setting $(SETTING)

# The grader on a class of 12 notebooks, and the sandbox's own cost -> benchmarks/GRADING.md
bench-grading: env sandbox-tools
	OMP_NUM_THREADS=1 $(PY) -m benchmarks.grading --jobs $(JOBS)

clean:
	rm -rf _build
