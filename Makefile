# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# Both build on `make install`, which creates .venv/ from uv.lock and reuses it
# while uv.lock and pyproject.toml are unchanged.

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
UV_VERSION := 0.13.9
VENV := .venv
TOOLS := .tools
# A uv already on PATH is used as is; otherwise a pinned one is installed into .tools/.
UV := $(or $(shell command -v uv 2>/dev/null),$(TOOLS)/bin/uv)
BIN := $(VENV)/bin

# Never download an interpreter; build the venv on this machine's Python.
export UV_PYTHON_DOWNLOADS := never
export UV_PYTHON := $(shell $(PYTHON) -c 'import sys; print(sys.executable)')
export UV_PROJECT_ENVIRONMENT := $(VENV)

.PHONY: help install system-deps testbed image test lint typecheck unit demo lock clean

help:
	@echo "make demo     a DR drill on the sandbox: build, snapshot, destroy, recover, verify, report (set-up included)"
	@echo "make test     lint + type check + tests (set-up included)"
	@echo "make install  create .venv/ from uv.lock (reused while the lock is unchanged)"
	@echo "make testbed  build the sandbox's Go tools (kine, kube-apiserver, ..., ESO, versitygw) into .tools/bin/"
	@echo "make image    the CronJob's OCI image of dr into dist/image/ (no Docker needed; root), pinned in the example"
	@echo "make lock     re-resolve uv.lock after changing dependencies"
	@echo "make clean    remove .venv/, .tools/ and caches"

$(TOOLS)/bin/uv:
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

# Bytecode compiled once here (8 s on 2 cores): a start-up then never pays for it, also where .pyc files
# cannot be written (PYTHONDONTWRITEBYTECODE, a read-only root): `dr plan` 0.3 s instead of 0.6 s.
$(VENV)/.synced: uv.lock pyproject.toml | $(UV)
	$(UV) sync --locked --quiet --compile-bytecode
	@touch $@

install: $(VENV)/.synced

# Tests use system tools: gpg (PGP-encrypted init), kubectl (the sandbox API), chromium (the HTML report),
# mmdebstrap (the image's Debian root).
# Installed from Debian's packages where missing, so a fresh machine needs nothing by hand.
SYSTEM_TOOLS := gpg:gnupg kubectl:kubernetes-client chromium:chromium mmdebstrap:mmdebstrap
system-deps:
	@missing=""; for pair in $(SYSTEM_TOOLS); do command -v $${pair%%:*} >/dev/null || missing="$$missing $${pair#*:}"; done; \
	if [ -n "$$missing" ]; then echo "installing$$missing"; \
		apt-get install -y -q $$missing || { apt-get update -q && apt-get install -y -q $$missing; }; fi

lock: | $(UV)
	$(UV) lock

lint: install
	$(BIN)/ruff check dr tests scripts image
	$(BIN)/ruff format --check dr tests scripts image
	$(BIN)/lint-imports

typecheck: install
	$(BIN)/mypy

# The sandbox's real control plane, built from the Go modules pinned in testbed/*/go.mod: ~11 min cold on two
# cores, a copy from ~/.cache/dr-testbed/ once the same pins were built on this machine (testbed/build.sh).
testbed:
	@bash testbed/build.sh

# The image the nightly CronJob runs (image/build.py): a Debian root with Python from mmdebstrap, dr and its locked
# runtime dependencies, written as an OCI layout and oci-archive; reproducible (the same commit and Debian mirror
# state give the same digest). The example platform's CronJob is pinned to the digest it prints.
image: install system-deps
	$(BIN)/python image/build.py --pin-example

unit: install system-deps testbed
	$(BIN)/pytest -n 2 --dist loadfile  # two workers, one test file each: the sandbox tests mostly wait

test: lint typecheck unit

# The demo is the product's main job, as a game day on the sandbox: `dr drill` builds the platform, writes canary
# secrets before and after a Vault snapshot, destroys the cluster, recovers it on a new one from the snapshot and
# the original shares, proves which canaries came back, tears everything down and reports RTO and RPO.
# State and reports in .demo/ (kept between runs, so `dr report history --state-dir .demo` shows the trend).
DEMO := .demo
demo: install testbed
	@$(BIN)/dr drill cleanup --state-dir $(DEMO) >/dev/null
	$(BIN)/dr --log-format console drill --state-dir $(DEMO) --report-dir $(DEMO)/report
	@echo; echo "reports: $(DEMO)/report/report.html (timeline), report.md, report.json, junit.xml;" \
		"history: $(BIN)/dr report history --state-dir $(DEMO)"

clean:
	rm -rf $(VENV) $(TOOLS) dist .mypy_cache .ruff_cache .pytest_cache
