# Reelfab: `make demo` runs the factory, `make test` passes the tests. Everything else is set up here.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# uv, pinned, installed from PyPI into .tools/; it uses the machine's python3.11 and never downloads a Python.
UV_VERSION := 0.13.9
UV := .tools/bin/uv
export UV_PYTHON_DOWNLOADS := never
export UV_PYTHON := $(PYTHON)
LOCKED := pyproject.toml uv.lock $(wildcard libs/*/pyproject.toml services/*/pyproject.toml)

.PHONY: help venv deploy-tools up down status topics test test-unit chaos lint codegen lock sizes bench demo asyncapi check-schemas clean

help:
	@echo "make demo    run the whole factory on this machine"
	@echo "make test    set up, start the local stack, run every test, stop the stack"
	@echo "make up / make down / make status   the local Kafka + PostgreSQL"
	@echo "make chaos   fault injection (kill -9, Kafka/PostgreSQL/registry outages, revocation, poison) on a stack of its own"
	@echo "make lint | codegen | sizes | bench | asyncapi | check-schemas"

$(UV):
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) on PATH"; exit 1; }
	@test -x .tools/bin/python || $(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet uv==$(UV_VERSION)

# The workspace environment (every distribution, editable, and the dev tools) follows uv.lock exactly;
# it is synced again when a pyproject.toml or the lock changes.
$(STAMP): $(UV) $(LOCKED)
	$(UV) sync --frozen --quiet
	$(BIN)/reelfab setup
	@touch $(STAMP)

venv: $(STAMP)

# Deployment checks' Go tools (tests/deploy), pinned, built from the Go module proxy into .tools/bin
KUSTOMIZE_VERSION := v5.7.1
KUBECONFORM_VERSION := v0.7.0
GO_TOOLS := .tools/bin/kustomize .tools/bin/kubeconform

.tools/bin/kustomize:
	@command -v go >/dev/null || { echo "need Go on PATH to build kustomize (tests/deploy)"; exit 1; }
	GOBIN=$(CURDIR)/.tools/bin GOFLAGS=-mod=mod go install sigs.k8s.io/kustomize/kustomize/v5@$(KUSTOMIZE_VERSION)

.tools/bin/kubeconform:
	@command -v go >/dev/null || { echo "need Go on PATH to build kubeconform (tests/deploy)"; exit 1; }
	GOBIN=$(CURDIR)/.tools/bin GOFLAGS=-mod=mod go install github.com/yannh/kubeconform/cmd/kubeconform@$(KUBECONFORM_VERSION)

deploy-tools: $(GO_TOOLS)

up: $(STAMP)
	$(BIN)/reelfab up

down: $(STAMP)
	$(BIN)/reelfab down

status: $(STAMP)
	$(BIN)/reelfab status

topics: $(STAMP)
	$(BIN)/reelfab topics

# Every static check: style, types (first-party imports resolved), import contracts, generated code.
lint: $(STAMP)
	$(BIN)/ruff check libs services tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/reelfab codegen --check

codegen: $(STAMP)
	$(BIN)/reelfab codegen

lock: $(UV)
	$(UV) lock

check-schemas: $(STAMP)
	$(BIN)/reelfab check-schemas

asyncapi: $(STAMP)
	$(BIN)/reelfab asyncapi --out docs/asyncapi.json

# The tests' own stack (tests/stack.env): a state folder and ports apart from the one `make up` starts.
TEST_STACK := $(shell sed -n 's/^\(REELFAB_[A-Z_]*\)=\(.*\)$$/\1=\2/p' tests/stack.env | \
	sed 's|^REELFAB_STATE_DIR=\([^/].*\)$$|REELFAB_STATE_DIR=$(CURDIR)/\1|')

# Starts the tests' stack, runs everything, and stops it whatever the outcome; the stack `make up` and
# `make demo` use is not touched.
test: $(STAMP) $(GO_TOOLS)
	@env $(TEST_STACK) $(BIN)/reelfab up
	@status=0; \
	$(MAKE) --no-print-directory lint || status=$$?; \
	if [ $$status -eq 0 ]; then $(BIN)/reelfab check-schemas || status=$$?; fi; \
	if [ $$status -eq 0 ]; then env $(TEST_STACK) $(BIN)/pytest -q $(PYTEST_ARGS) || status=$$?; fi; \
	env $(TEST_STACK) $(BIN)/reelfab down; \
	exit $$status

test-unit: $(STAMP)
	$(BIN)/pytest -q -m "not kafka and not postgres" $(PYTEST_ARGS)

# The chaos suite's full variant (docs/reliability.md). It starts nothing shared: the suite runs its own
# Kafka, PostgreSQL and service processes on free ports in a temp folder, and stops them. The quick
# variant runs inside `make test` (tests/chaos, marker chaos_quick).
chaos: $(STAMP)
	$(BIN)/pytest -q -m chaos_full tests/chaos $(PYTEST_ARGS)

# Each service's installed environment beside the all-in-one one (bench/RESULTS.md keeps the figures).
sizes: $(STAMP)
	$(BIN)/python bench/sizes.py

bench: $(STAMP)
	@$(BIN)/reelfab up
	@status=0; $(BIN)/python bench/bus.py && $(BIN)/python bench/faces.py && $(BIN)/python bench/media.py && $(BIN)/python bench/planner.py || status=$$?; \
	$(BIN)/reelfab down; exit $$status

# The whole factory in one process on the local stack (README "The demo"); options through DEMO_ARGS,
# e.g. make demo DEMO_ARGS="--rounds 5 --out /tmp/demo".
DEMO_ARGS ?=
demo: $(STAMP)
	$(BIN)/reelfab up
	$(BIN)/reelfab demo $(DEMO_ARGS)
	@echo "The stack keeps running; 'make down' stops it."

clean:
	-$(BIN)/reelfab down
	rm -rf .reelfab
