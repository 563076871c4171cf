# The commands developers and CI share. Each target sets up what it needs by itself.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test check bench fuzz soak fmt clean

FUZZ_SCALE ?= 20
FUZZ_RUNS ?= 1000000
SOAK_SECONDS ?= 300

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

fuzz: $(STAMP)  ## long fuzzing: FUZZ_SCALE times the bounded run of make test, then atheris
	$(BIN)/pip install --quiet -e '.[dev,bench,fuzz]'
	QRNG_FUZZ_SCALE=$(FUZZ_SCALE) $(BIN)/python -m pytest -m fuzz tests/fuzz $(PYTEST_ARGS)
	$(BIN)/python -m tests.fuzz.coverage_guided -atheris_runs=$(FUZZ_RUNS)

soak: $(STAMP)  ## steady mixed load on the whole diode; SOAK_SECONDS=3600 for the hour
	QRNG_SOAK_SECONDS=$(SOAK_SECONDS) $(BIN)/python -m pytest -m soak tests/soak $(PYTEST_ARGS)

fmt: $(STAMP)
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis .coverage
