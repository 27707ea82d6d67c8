# Set up, execute the notebooks with papermill, build the book, test, benchmark.
#   make book              # fresh machine: corpus (root, Debian), .venv, every notebook at SCALE, _build/html
#   make test              # the test suite (what CI runs)
#   make book SCALE=smoke  # any scale: smoke | default | gpu | paper
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SCALE ?= default
DEVICE ?= auto
NOTEBOOKS := $(wildcard notebooks/*.py)

.PHONY: setup corpus need-corpus test-deps execute book test bench lint typecheck clean FORCE

setup: $(VENV)/.installed

# torch first, pinned: this pin takes the CPU wheel here; an unpinned torch would pull a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[lm,book,saelens,dev]"
	touch $@

# The default corpus (Jane Austen's novels and WordNet's glosses) installs from Debian's archive (needs root).
corpus:
	apt-get update -qq && apt-get install -y -qq --no-install-recommends r-cran-janeaustenr=1.0.0-1 wordnet-base=1:3.0-37

# Before anything long: every scale but smoke reads the default corpus. Installed here when missing (root, Debian);
# otherwise stop now with the commands to run. SAELIB_DEB_ROOT: where the .deb files were unpacked instead.
DEB_ROOT = $${SAELIB_DEB_ROOT:-/}
need-corpus:
	@if [ "$(SCALE)" = smoke ] \
	  || { [ -f "$(DEB_ROOT)/usr/lib/R/site-library/janeaustenr/data/Rdata.rdx" ] \
	       && [ -f "$(DEB_ROOT)/usr/share/wordnet/data.noun" ]; }; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "The default corpus is missing: installing it (make corpus)"; $(MAKE) --no-print-directory corpus; \
	else \
	  echo "error: the default corpus (two Debian packages) is missing, and this is not root on Debian."; \
	  echo "Install it, then rerun make book:"; \
	  echo "  sudo apt-get update && sudo apt-get install -y --no-install-recommends r-cran-janeaustenr=1.0.0-1 wordnet-base=1:3.0-37"; \
	  echo "or without root: download both .deb files (apt-get download ...), unpack each with"; \
	  echo "  dpkg-deb -x FILE.deb DIR   and run  SAELIB_DEB_ROOT=DIR make book"; \
	  echo "or build the book on the committed sample text:  make book SCALE=smoke"; \
	  exit 1; \
	fi

# One notebook: book/executed/NN_name.ipynb (always re-executed: with a warm artifact cache it takes seconds).
book/executed/%.ipynb: notebooks/%.py FORCE | setup
	HF_HUB_OFFLINE=1 $(BIN)/python book/run_notebooks.py --scale $(SCALE) --device $(DEVICE) $<

# Every notebook in order: the chapter, the library's progress bars and steps as they run, then a timing table.
execute: setup
	HF_HUB_OFFLINE=1 $(BIN)/python book/run_notebooks.py --scale $(SCALE) --device $(DEVICE) $(NOTEBOOKS)

book: need-corpus execute
	@start=$$(date +%s); $(BIN)/jupyter-book build . -W -n --keep-going \
	  && echo "Book built in $$(( $$(date +%s) - start ))s: _build/html/index.html"

# What the tests use beyond the venv: the corpus and headless Chromium (the browser test), installed when missing
# (root, Debian); elsewhere their tests are skipped, and this says so.
test-deps:
	@missing=""; \
	[ -f "$(DEB_ROOT)/usr/lib/R/site-library/janeaustenr/data/Rdata.rdx" ] \
	  && [ -f "$(DEB_ROOT)/usr/share/wordnet/data.noun" ] || missing="$$missing corpus"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	[ -z "$$missing" ] && exit 0; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  case "$$missing" in *corpus*) $(MAKE) --no-print-directory corpus || echo "warning: corpus not installed";; esac; \
	  case "$$missing" in *chromium*) { apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium; } \
	    || echo "warning: chromium not installed; the browser test will be skipped";; esac; \
	else \
	  echo "warning: missing:$$missing (not root on Debian); their tests will be skipped. To install them:"; \
	  echo "  sudo apt-get install -y --no-install-recommends r-cran-janeaustenr=1.0.0-1 wordnet-base=1:3.0-37 chromium"; \
	fi

test: test-deps setup
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest

# Each script prints a table with ratios measured in the same run; benchmarks/README.md keeps the latest ones.
bench: setup
	$(BIN)/python benchmarks/bench_train.py
	$(BIN)/python benchmarks/bench_stability.py
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/bench_collection.py
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/bench_grid.py
	$(BIN)/python benchmarks/bench_book.py

# What CI checks before the tests: lint and formatting (notebooks included), then the core's types.
LINTED := saelib tests benchmarks notebooks book

lint: setup
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	$(MAKE) typecheck

# pyright in basic mode on the core (pyproject.toml, [tool.pyright]); the venv's python resolves the imports.
typecheck: setup
	PYRIGHT_PYTHON_IGNORE_WARNINGS=1 $(BIN)/pyright --pythonpath $(BIN)/python

clean:
	rm -rf _build build book/executed

FORCE:
