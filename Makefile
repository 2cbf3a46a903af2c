# Quick start: `make demo` and `make test` on a fresh clone; both set up .venv themselves.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup demo test test-fast lint docs docs-check bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned: the CPU wheel (an open range would pull a multi-GB CUDA build)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[all,dev,docs]'
	touch $(STAMP)

setup: $(STAMP)

# demo: train residual, mHC and sHC on the bundled corpus (preset `demo`, 150 steps, 1 seed), analyse
# every run, print the summary table, write runs/demo/report.md, then sample from the sHC model.
# One torch thread: on a shared 2-core machine two threads per process oversubscribe the cores.
demo: $(STAMP)
	$(VENV)/bin/hyperconn compare --preset demo --kinds residual,mhc,shc --num-streams 4 --seeds 1 \
		--steps 150 --bench-rounds 3 --out runs/demo --set train.threads=1
	$(VENV)/bin/hyperconn generate runs/demo/shc-n4-s0 --prompt "ROMEO:" --max-new-tokens 200

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks scripts

# docs: the MkDocs site (guides + API reference from the docstrings) into site/. docs-check is the
# same build with --strict (a broken link, anchor or missing page fails) into a scratch folder.
# NO_MKDOCS_2_WARNING: silences the theme's banner about MkDocs 2.
MKDOCS := NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs

docs: $(STAMP)
	$(MKDOCS) build --strict --site-dir site

docs-check: $(STAMP)
	rm -rf $(VENV)/docs-check-site
	$(MKDOCS) build --strict --site-dir $(VENV)/docs-check-site

test: lint docs-check
	$(PY) -m pytest

# test-fast: lint and every test not marked slow (training runs, subprocesses, torch.compile: see
# docs/development.md); no docs build. `make test` runs everything.
test-fast: lint
	$(PY) -m pytest -m "not slow"

bench: $(STAMP)
	$(VENV)/bin/hyperconn bench

clean:
	rm -rf $(VENV) runs site .pytest_cache .ruff_cache .hypothesis
