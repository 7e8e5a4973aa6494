# Two entry points: `make demo` (set up + simulate the shipped example) and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "need python3.11 (or python3 >= 3.11) on PATH"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]"
	@touch $(STAMP)

# The tests also run the Ray executor against a local Ray they start: the ray extra is part of their set-up.
$(TEST_STAMP): $(STAMP)
	$(BIN)/pip install -q -e ".[dev,ray]"
	@touch $(TEST_STAMP)

.PHONY: install demo test bench
install: $(STAMP)

demo: $(STAMP)
	$(BIN)/packer demo

# Tests that measure wall-clock time (live servers on a scaled clock, solver time limits) run alone,
# after the rest has run on every core.
test: $(TEST_STAMP)
	$(BIN)/python -m pytest -m "not realtime" -n auto --dist loadfile
	$(BIN)/python -m pytest -m realtime

bench: $(STAMP)
	$(BIN)/python benchmarks/twin_fidelity.py
	$(BIN)/python benchmarks/twin_speed.py
