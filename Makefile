# Two commands for a fresh machine: `make demo` and `make test`. Both set everything up first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup cluster browser prometheus test demo demo-istio lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## setup: Python environment (from pyproject.toml), the local Kubernetes binaries (cached in ~/.cache), Chromium, Prometheus
setup: $(STAMP) cluster browser prometheus

## browser: Debian's Chromium for the browser tests (Playwright drives /usr/bin/chromium; it downloads no browser)
browser:
	@[ -x /usr/bin/chromium ] || { apt-get update -qq && apt-get install -y -qq chromium; }

## prometheus: Debian's Prometheus for the canary's metrics (about 12 s; building 3.x from its Go module took 8 min)
prometheus:
	@[ -x /usr/bin/prometheus ] || { apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; }

## cluster: build etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok from Go modules
cluster:
	bash scripts/build-cluster.sh

## test: set up, then run the whole suite against the real local cluster and Temporal servers
test: setup
	$(PY) -m pytest

## demo: set up, then deliver a canary end to end on the embedded defaults
demo: setup
	$(PY) -m starter.demo

## demo-istio: the same, routed through an Istio VirtualService (exact weights; the simulated mesh follows them)
demo-istio: setup
	$(PY) -m starter.demo_istio

## lint: ruff, mypy and the import-layer contracts (pyproject.toml [tool.importlinter]), as CI runs them
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
