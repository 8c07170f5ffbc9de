# Two commands for a newcomer:  make run  (the main job)  and  make test  (every test).
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
DEVSTAMP:= $(VENV)/.installed-dev-$(shell cat pyproject.toml package.json | cksum | cut -d' ' -f1)

.PHONY: run test lint agents synth bench clean help

help:
	@echo "make run    install and run a full optimization cycle on the bundled agents"
	@echo "make test   install everything and run lint, type checks and every test"
	@echo "make agents rebuild the sample agents' .wasm from their C sources (clang, lld)"
	@echo "make synth  synthesize the CDK app with the pinned CDK CLI"
	@echo "make bench  run the benchmarks under bench/"

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): $(BIN)/python
	$(BIN)/pip install -q -e '.[local]'
	touch $@

$(DEVSTAMP): $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	npm ci --no-audit --no-fund --silent
	touch $@

run: $(STAMP)
	$(BIN)/chimera run

test: $(DEVSTAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest

lint: $(DEVSTAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/mypy

agents:
	$(MAKE) -C layers_shared/agents

synth: $(DEVSTAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH npx cdk synth --quiet

bench: $(DEVSTAMP)
	$(BIN)/python bench/evolution_bench.py && $(BIN)/python bench/sandbox_bench.py \
	  && $(BIN)/python bench/experiment_bench.py && $(BIN)/python bench/changepoint_bench.py

clean:
	rm -rf $(VENV) .chimera cdk.out build node_modules
