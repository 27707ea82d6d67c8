# Set up, execute the notebooks with papermill, build the book, test, benchmark.
#   make book              # fresh machine: creates .venv, executes every notebook at SCALE, builds _build/html
#   make test              # the test suite (what CI runs)
#   make book SCALE=smoke  # any scale: smoke | default | gpu | paper
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SCALE ?= default
DEVICE ?= auto
NOTEBOOKS := $(wildcard notebooks/*.py)
EXECUTED := $(patsubst notebooks/%.py,book/executed/%.ipynb,$(NOTEBOOKS))

.PHONY: setup corpus execute book test bench lint typecheck clean FORCE

setup: $(VENV)/.installed

# torch first, pinned: this pin takes the CPU wheel here; an unpinned torch would pull a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

# The default corpus (Jane Austen's novels and WordNet's glosses) installs from Debian's archive (needs root).
corpus:
	apt-get update -qq && apt-get install -y -qq --no-install-recommends r-cran-janeaustenr=1.0.0-1 wordnet-base=1:3.0-37

build/%.ipynb: notebooks/%.py | setup
	@mkdir -p build
	$(BIN)/jupytext --quiet --to ipynb --set-kernel python3 $< -o $@

# Always re-executed (FORCE): with a warm artifact cache this takes seconds per notebook.
book/executed/%.ipynb: build/%.ipynb FORCE | setup
	@mkdir -p book/executed
	HF_HUB_OFFLINE=1 $(BIN)/papermill --no-progress-bar $< $@ -p SCALE $(SCALE) -p DEVICE $(DEVICE)

execute: $(EXECUTED)

book: execute
	$(BIN)/jupyter-book build . -W -n --keep-going
	@echo "The book is at _build/html/index.html"

test: setup
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest

# Each script prints a table with ratios measured in the same run; benchmarks/README.md keeps the latest ones.
bench: setup
	$(BIN)/python benchmarks/bench_train.py
	$(BIN)/python benchmarks/bench_stability.py
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/bench_collection.py
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/bench_grid.py
	$(BIN)/python benchmarks/bench_book.py

# What CI checks before the tests: lint and formatting (notebooks included), then the core's types.
LINTED := saelib tests benchmarks notebooks

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
