# Each target sets itself up: a .venv with the pinned torch, Ray and the package (editable).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint unit integration coverage bench setup clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e ".[dev]"
	@touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/colecionador demo

# ruff (lint and format), import-linter's contracts and mypy --strict on training/, tuning/
# and services/ (pyproject.toml): the habits, checked first
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy

# the unit tests on both cores with coverage's report and its floor ([tool.coverage.report]
# fail_under, what CI checks), then the integration tests (one Ray cluster: one process)
test: lint
	$(BIN)/python -m pytest -q -ra --durations=15 -n 2 --cov --cov-report=term tests/unit
	$(BIN)/python -m pytest -q -ra --durations=15 tests/integration

# the suite with pytest-cov's report, failing under [tool.coverage.report] fail_under
coverage: $(STAMP)
	$(BIN)/python -m pytest -q -ra --cov --cov-report=term

unit: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 tests/unit

integration: $(STAMP)
	$(BIN)/python -m pytest -q -ra tests/integration

bench: $(STAMP)
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache *.egg-info
