# Two entry points, both safe to repeat:
#   make sandbox   set up and run the local sandbox (Slurm + Kubernetes + the bridge), then a sample job
#   make test      lint, type-check and run the test suite against that sandbox (all but the slow suites)
#   make test-slow the slow suites: faults injected into the sandbox, benchmarks' quick runs, the upgrade
# Debian's own Python: the batch step runs `skbridge attach` as the job's user, who must be
# able to execute the venv's interpreter (a pyenv under /root would not do).
PYTHON ?= $(shell test -x /usr/bin/python3 && echo /usr/bin/python3 || echo python3)
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: sandbox test test-slow test-all lint unit sandbox-down clean

$(BIN)/skbridge: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

# `make sandbox SANDBOX_NODES="--nodes 3 --sim-nodes 100"`; empty: as many as the last `up` (first: 2 nodes).
SANDBOX_NODES ?=

sandbox: $(BIN)/skbridge
	$(BIN)/skbridge sandbox up $(SANDBOX_NODES)
	$(BIN)/skbridge sandbox demo

sandbox-down: $(BIN)/skbridge
	$(BIN)/skbridge sandbox down

lint: $(BIN)/skbridge
	$(BIN)/ruff check bridge tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

unit: $(BIN)/skbridge
	$(BIN)/pytest -m unit -q

test: lint
	$(BIN)/pytest -q -m "not slow" $(PYTEST_ARGS)

test-slow: $(BIN)/skbridge
	$(BIN)/pytest -q -m slow $(PYTEST_ARGS)

test-all: test test-slow

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
