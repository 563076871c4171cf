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

test: $(STAMP)  ## every test suite, end-to-end included, with the branch-coverage floor
	$(BIN)/python -m pytest $(if $(PYTEST_ARGS),,--cov) $(PYTEST_ARGS)  # a subset skips the floor

check: $(STAMP)  ## lint and type-check (src, tests and bench, mypy strict)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

bench: $(STAMP)  ## benchmarks; writes bench-results.json
	$(BIN)/python -m bench $(BENCH_ARGS)

fmt: $(STAMP)
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis .coverage
