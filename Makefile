# modelfleet: `make help` lists the tasks.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export MODELFLEET_CACHE ?= $(HOME)/.cache/modelfleet
PYTEST_ARGS ?=

.PHONY: help
help: ## List the tasks
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(BIN)/modelfleet: pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip >/dev/null
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

.PHONY: venv
venv: $(BIN)/modelfleet ## Create .venv with the package and the dev tools

.PHONY: deps
deps: ## Install the Debian packages the local cluster and image build need (root)
	@cluster/deps.sh

.PHONY: components
components: deps ## Build Kubernetes, etcd, CoreDNS, Helm and versitygw (S3 store) from the Go module proxy (cached)
	@cluster/build.sh

.PHONY: cluster-up
cluster-up: components ## Start the local single-node Kubernetes (no-op when healthy; repairs a partly stopped one)
	@cluster/up.sh

.PHONY: cluster-restart
cluster-restart: ## Restart one component, keeping all state: make cluster-restart COMPONENT=kubelet (names: cluster/restart.sh)
	@cluster/restart.sh $(COMPONENT)

.PHONY: cluster-down
cluster-down: ## Stop the local cluster and remove its processes, mounts, bridge and rules
	@cluster/down.sh

.PHONY: cluster-status
cluster-status: ## Show whether the local cluster is running, and its node
	@cluster/status.sh

.PHONY: images
images: deps venv ## Build the project's images with buildah and load them into the cluster
	@images/build.sh

.PHONY: crds
crds: venv ## Generate crds/*.yaml, the chart's copy and docs/api-reference.md from the pydantic models
	$(BIN)/modelfleet crds --out crds --chart-out charts/modelfleet/crds --docs docs/api-reference.md

SHELL_SCRIPTS := cluster/*.sh images/build.sh tests/*.sh demo/*.sh .ci/run

.PHONY: lint
lint: venv deps ## ruff, the import-layer contracts, and shellcheck on the shell scripts
	shellcheck --external-sources --source-path=SCRIPTDIR $(SHELL_SCRIPTS)
	$(BIN)/ruff check operator tests bench images
	$(BIN)/ruff format --check operator tests bench images
	$(BIN)/lint-imports

.PHONY: fmt
fmt: venv ## Format the code
	$(BIN)/ruff format operator tests bench images
	$(BIN)/ruff check --fix operator tests bench images

.PHONY: typecheck
typecheck: venv ## mypy --strict
	$(BIN)/mypy

.PHONY: test-unit
test-unit: venv ## Unit tests only (no cluster)
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

.PHONY: test
test: lint typecheck venv components images ## Lint, typecheck, then every tier: unit, process, integration and e2e, bringing the cluster up when needed
	@tests/run-all.sh $(PYTEST_ARGS)

.PHONY: demo
demo: venv images cluster-up ## Bring everything up, then show a canary rollout and an automatic rollback live
	@demo/run.sh

.PHONY: bench
bench: bench-router bench-router-features bench-operator bench-artifacts bench-mlflow ## All benchmarks (about 32 minutes); figures go to bench/results/

.PHONY: bench-router
bench-router: venv ## Router overhead vs calling the model server directly
	$(BIN)/python -m bench.router

.PHONY: bench-router-features
bench-router-features: venv ## Router with input sampling, the feedback store and capture on vs a plain router; prediction store memory
	$(BIN)/python -m bench.router --features

.PHONY: bench-operator
bench-operator: venv ## The operator with 1,000 Deployments: memory, idle CPU, reconcile throughput (needs the cluster)
	$(BIN)/python -m bench.operator_scale

.PHONY: bench-artifacts
bench-artifacts: venv ## Artifact versions: applied -> Ready at 1 MiB and 200 MiB; scale-out downloads, node cache on and off (needs the cluster)
	$(BIN)/python -m bench.artifacts

.PHONY: bench-mlflow
bench-mlflow: venv ## MLflow: alias moved -> the canary's first request, webhooks and polling; syncing 500 versions (needs the cluster)
	$(BIN)/python -m bench.mlflow

.PHONY: clean
clean: ## Remove build leftovers in the repo (the cache stays)
	rm -rf build dist *.egg-info .mypy_cache .ruff_cache .pytest_cache
