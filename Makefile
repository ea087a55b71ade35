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
KUBECTL ?= $(shell PYTHONPATH=hack $(PYTHON) -c 'from devcluster import kubernetes; print(kubernetes.kubectl_path())' 2>/dev/null || echo kubectl)
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

.PHONY: lock
lock: setup ## Write requirements/*.txt, the images' dependencies with their hashes, from pyproject.toml (pip-tools).
	for image in operator worker; do \
	  extra=$$( [ $$image = worker ] && echo --extra=worker ); \
	  $(BIN)/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url \
	    --no-emit-find-links $$extra --output-file requirements/$$image.txt pyproject.toml; \
	done
	$(BIN)/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url \
	  --no-emit-find-links --all-build-deps --only-build-deps --output-file requirements/build.txt pyproject.toml

.PHONY: setup
setup: $(BIN)/.installed ## Create .venv with the operator and its dev tools.

.PHONY: lint
lint: setup ## Lint, format-check and type-check the code (ruff; mypy strict on src/).
	$(BIN)/ruff check src tests hack
	$(BIN)/ruff format --check src tests hack
	$(BIN)/mypy

.PHONY: fmt
fmt: setup ## Format the code (ruff).
	$(BIN)/ruff check --fix src tests hack
	$(BIN)/ruff format src tests hack

.PHONY: manifests
manifests: setup ## Regenerate the CRD (config/crd/bases and the chart's crds/) from the typed model (src/aimodel_operator/api.py).
	$(BIN)/aimodel-operator crd > config/crd/bases/model.youxam.com_aimodels.yaml
	cp config/crd/bases/model.youxam.com_aimodels.yaml charts/aimodel-operator/crds/

.PHONY: podtemplate-schema
podtemplate-schema: setup ## Regenerate spec.template's schema from the pinned Kubernetes' OpenAPI (needs `make cluster-up`), then `make manifests`.
	$$(PYTHONPATH=hack $(BIN)/python -c 'from devcluster import kubernetes; print(kubernetes.kubectl_path())') \
		--kubeconfig .devcluster/kubeconfig get --raw /openapi/v3/api/v1 | $(BIN)/python hack/podtemplate_schema.py

.PHONY: test-unit
test-unit: setup ## Fast tests that need no cluster.
	$(BIN)/pytest -q tests/unit

.PHONY: test
test: setup lint tools ## The whole suite: lint, unit, and end-to-end tests on a local cluster (built on first use).
	$(BIN)/pytest -q tests

.PHONY: tools
tools: setup ## Build (first use only, with progress; about 20 minutes on two cores) what the local cluster and the tests run.
	$(DEVCLUSTER) build --keda --pulsar --helm

##@ Local cluster (etcd, kube-apiserver, controller-manager, scheduler, kwok as local processes)

.PHONY: cluster-up
cluster-up: setup ## Start the local cluster in .devcluster/ (KEDA=1 adds KEDA, PULSAR=1 Pulsar); builds on first use.
	$(DEVCLUSTER) up

.PHONY: cluster-down
cluster-down: setup ## Stop every process of the local cluster.
	$(DEVCLUSTER) down

.PHONY: pulsar-token
pulsar-token: setup ## Print a token for ROLE=x signed with the local Pulsar's key (TTL=seconds, default: no expiry).
	$(DEVCLUSTER) pulsar-token --role "$(ROLE)" $(if $(TTL),--ttl $(TTL))

.PHONY: cluster-status
cluster-status: setup ## Show the local cluster's processes, memory and nodes.
	$(DEVCLUSTER) status

##@ Main job

.PHONY: demo
demo: setup ## Local cluster + KEDA + operator + the seed's sample, its error path and recovery, shown step by step.
	PYTHONPATH=hack $(BIN)/python hack/demo.py

.PHONY: peers
peers: ## Build the peers the benchmarks run side by side (the Go original operator, uplion's Python worker) into .peers/ from sources cloned there (docs/benchmarks.md).
	bash hack/peers/go-operator.sh
	bash hack/peers/uplion-worker.sh

.PHONY: bench-worker
bench-worker: setup ## Measure the reference worker's requests per second at MAX_PROCESS_NUM 1, 16, 256 (real Pulsar).
	PYTHONPATH=hack $(BIN)/python hack/bench_worker.py

.PHONY: bench
bench: setup ## Measure latency, convergence of MODELS (default 1000) AIModels, writes and memory on a throwaway local cluster.
	PYTHONPATH=hack $(BIN)/python hack/bench.py --models $(or $(MODELS),1000)

##@ Deployment (against the cluster of the current kubeconfig)

.PHONY: run
run: setup ## Run the operator locally against the current kubeconfig.
	$(BIN)/aimodel-operator run

.PHONY: install
install: ## Install the CRD into the cluster.
	$(KUBECTL) kustomize config/crd | $(KUBECTL) apply --server-side -f -

.PHONY: uninstall
uninstall: ## Remove the CRD (and with it every AIModel). Safe to run twice.
	$(KUBECTL) kustomize config/crd | $(KUBECTL) delete --ignore-not-found -f -

.PHONY: deploy
deploy: ## Deploy the CRD, the operator and its RBAC, using the image IMG.
	@rm -rf build/deploy && mkdir -p build/deploy && cp -r config build/deploy/
	@img='$(IMG)'; name="$${img%:*}"; tag="$${img##*:}"; \
	case "$$tag" in */*|"$$img") name="$$img"; tag=latest;; esac; \
	sed -i "s|newName: .*|newName: $$name|; s|newTag: .*|newTag: $$tag|" build/deploy/config/manager/kustomization.yaml
	$(KUBECTL) kustomize build/deploy/config/default | $(KUBECTL) apply --server-side -f -

.PHONY: helm
helm: setup ## Build helm from its Go module (cached in ~/.cache/aimodel-operator) and print its path.
	@PYTHONPATH=hack $(BIN)/python -c 'from devcluster import helm; print(helm.build())'

.PHONY: helm-lint
helm-lint: helm ## Lint the chart (charts/aimodel-operator) with the real helm.
	$$(PYTHONPATH=hack $(BIN)/python -c 'from devcluster import helm; print(helm.build())') lint --strict charts/aimodel-operator

.PHONY: undeploy
undeploy: ## Remove the operator, its RBAC and the CRD (with every AIModel). Safe to run twice.
	$(KUBECTL) kustomize config/default | $(KUBECTL) delete --ignore-not-found -f -

.PHONY: docker-build
docker-build: ## Build the operator image IMG with CONTAINER_TOOL (docker, podman).
	$(CONTAINER_TOOL) build -t $(IMG) .

.PHONY: docker-push
docker-push: ## Push the operator image IMG.
	$(CONTAINER_TOOL) push $(IMG)
