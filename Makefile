# Quick start: `make demo` and `make test` on a fresh clone; both set up .venv themselves.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned: the CPU wheel (an open range would pull a multi-GB CUDA build)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev,triton]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/shc demo

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks scripts

test: lint
	$(PY) -m pytest

bench: $(STAMP)
	$(VENV)/bin/shc bench

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache .hypothesis
