# The commands developers and CI share. Each target sets up what it needs by itself.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test check bench fmt clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	touch $(STAMP)

demo: $(STAMP)  ## the whole diode on localhost with the simulator
	$(BIN)/qrng-dd demo

test: $(STAMP)  ## every test suite, end-to-end included
	$(BIN)/python -m pytest $(PYTEST_ARGS)

check: $(STAMP)  ## lint and type-check
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy

bench: $(STAMP)  ## benchmarks; writes bench-results.json
	$(BIN)/qrng-dd bench

fmt: $(STAMP)
	$(BIN)/ruff format src tests
	$(BIN)/ruff check --fix src tests

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
