# The two commands of the README's Quickstart: `make demo` and `make test`.
# Each does its own set-up: a virtual environment (unless one is active), the install, then the job.

PYTHON ?= python3
VENV ?= .venv
ifdef VIRTUAL_ENV
  PY := python
  STAMP := $(VIRTUAL_ENV)/.probgen-installed
else
  PY := $(VENV)/bin/python
  STAMP := $(VENV)/.probgen-installed
endif
OUT ?= demo-output

.PHONY: setup demo test test-all lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
ifndef VIRTUAL_ENV
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
endif
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

demo: setup
	$(PY) -m probgen demo --out $(OUT)

# the tests run one torch thread each, so they are spread over one worker per core
PYTEST = $(PY) -m pytest -q -n auto --dist worksteal

test: setup
	$(PYTEST)

test-all: setup
	$(PYTEST) -m "slow or not slow"

lint: setup
	$(PY) -m ruff check probgen models inference examples benchmarks tests

bench: setup
	$(PY) benchmarks/gmm_vs_sklearn.py
	$(PY) benchmarks/vae_step.py
	$(PY) benchmarks/gan_step.py

clean:
	rm -rf $(OUT) build dist *.egg-info .pytest_cache
