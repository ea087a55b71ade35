# AI Model Operator. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
IMG ?= aimodel-operator:latest
CONTAINER_TOOL ?= docker
DEVCLUSTER := PYTHONPATH=hack $(BIN)/python -m devcluster
# kubectl built with the local cluster (matches its version); override to use your own.
KUBECTL ?= $(shell PYTHONPATH=hack $(PYTHON) -c 'from devcluster import build; print(build.kubernetes_bin() / "kubectl")' 2>/dev/null || echo kubectl)
ifeq ($(wildcard $(KUBECTL)),)
KUBECTL := kubectl
endif

##@ General

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make \033[36m<target>\033[0m\n"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Development

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

.PHONY: setup
setup: $(BIN)/.installed ## Create .venv with the operator and its dev tools.

.PHONY: lint
lint: setup ## Lint and format-check the code (ruff).
	$(BIN)/ruff check src tests hack
	$(BIN)/ruff format --check src tests hack

.PHONY: fmt
fmt: setup ## Format the code (ruff).
	$(BIN)/ruff check --fix src tests hack
	$(BIN)/ruff format src tests hack

.PHONY: test-unit
test-unit: setup ## Fast tests that need no cluster.
	$(BIN)/pytest -q tests/unit

.PHONY: test
test: setup lint ## The whole suite: lint, unit, and end-to-end tests on a local cluster (built on first use).
	$(BIN)/pytest -q tests

##@ Local cluster (etcd, kube-apiserver, controller-manager, scheduler, kwok as local processes)

.PHONY: cluster-up
cluster-up: setup ## Start the local cluster in .devcluster/ (KEDA=1 adds KEDA); builds on first use.
	$(DEVCLUSTER) up

.PHONY: cluster-down
cluster-down: setup ## Stop every process of the local cluster.
	$(DEVCLUSTER) down

.PHONY: cluster-status
cluster-status: setup ## Show the local cluster's processes, memory and nodes.
	$(DEVCLUSTER) status
