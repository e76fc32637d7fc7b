# The two-command quick start: `make run` and `make test` each install what they need.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export MLFLOW_DISABLE_TELEMETRY := true
export DVC_NO_ANALYTICS := 1

.PHONY: install run test test-slow test-servers bench

$(BIN)/hwnas: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

install: $(BIN)/hwnas

run: install
	$(BIN)/hwnas run

test: install
	$(BIN)/pytest -q

test-slow: install
	$(BIN)/pytest -q -m slow

test-servers: install  # each test starts its servers on 127.0.0.1 and stops them
	$(BIN)/pytest -q -m servers

bench: install
	$(BIN)/python bench/bench_simulator.py
