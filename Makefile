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

.PHONY: help install system-deps test lint typecheck unit demo lock clean

help:
	@echo "make demo     bootstrap, snapshot, destroy and recover the platform on the sandbox (set-up included)"
	@echo "make test     lint + type check + tests (set-up included)"
	@echo "make install  create .venv/ from uv.lock (reused while the lock is unchanged)"
	@echo "make lock     re-resolve uv.lock after changing dependencies"
	@echo "make clean    remove .venv/, .tools/ and caches"

$(TOOLS)/bin/uv:
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(VENV)/.synced: uv.lock pyproject.toml | $(UV)
	$(UV) sync --locked --quiet
	@touch $@

install: $(VENV)/.synced

# Tests use system tools: gpg (PGP-encrypted init), kubectl (the sandbox API), chromium (the HTML report).
# Installed from Debian's packages where missing, so a fresh machine needs nothing by hand.
SYSTEM_TOOLS := gpg:gnupg kubectl:kubernetes-client chromium:chromium
system-deps:
	@missing=""; for pair in $(SYSTEM_TOOLS); do command -v $${pair%%:*} >/dev/null || missing="$$missing $${pair#*:}"; done; \
	if [ -n "$$missing" ]; then echo "installing$$missing"; \
		apt-get install -y -q $$missing || { apt-get update -q && apt-get install -y -q $$missing; }; fi

lock: | $(UV)
	$(UV) lock

lint: install
	$(BIN)/ruff check dr tests scripts
	$(BIN)/ruff format --check dr tests scripts
	$(BIN)/lint-imports

typecheck: install
	$(BIN)/mypy

unit: install system-deps
	$(BIN)/pytest

test: lint typecheck unit

# The demo is the product's main job on the sandbox: build the platform, snapshot its Vault, destroy the
# cluster, recover it on a new one from the snapshot and the original shares, and say how long it took.
# State in .demo/ (started fresh each time); both sandboxes are stopped whatever happened.
DEMO := .demo
demo: install
	@for d in original recovered; do $(BIN)/dr sandbox down --dir $(DEMO)/$$d/sandbox >/dev/null 2>&1 || true; done; rm -rf $(DEMO)
	@trap 'for d in original recovered; do $(BIN)/dr sandbox down --dir $(DEMO)/$$d/sandbox >/dev/null 2>&1; done' EXIT; \
	set -e; mkdir -p $(DEMO); \
	printf 'state_dir: %s\ncluster: {provider: sandbox}\nsnapshots: {store: %s}\n' \
		$(DEMO)/original $(DEMO)/snapshots > $(DEMO)/original.yaml; \
	printf 'state_dir: %s\ncluster: {provider: sandbox}\nsnapshots: {store: %s, canary_path: %s}\nkeys: {source: files, files: [%s], token_file: %s}\n' \
		$(DEMO)/recovered $(DEMO)/snapshots secret/data/workloads/demo-app \
		"$(DEMO)/original/keys/share-1, $(DEMO)/original/keys/share-2, $(DEMO)/original/keys/share-3" \
		$(DEMO)/original/keys/root-token > $(DEMO)/recover.yaml; \
	echo "== 1. dr bootstrap: the platform from nothing on a sandbox (keys to $(DEMO)/original/keys)"; \
	$(BIN)/dr --config $(DEMO)/original.yaml --log-format console bootstrap; \
	echo; echo "== 2. dr snapshot save: the nightly job, once"; \
	VAULT_TOKEN="$$(cat $(DEMO)/original/keys/root-token)" $(BIN)/dr --config $(DEMO)/original/sandbox/dr.yaml \
		--log-format console snapshot save --store $(DEMO)/snapshots --cluster platform; \
	echo; echo "== 3. the cluster is lost"; \
	$(BIN)/dr sandbox down --dir $(DEMO)/original/sandbox; rm -rf $(DEMO)/original/sandbox; \
	echo; echo "== 4. dr recover --cluster new: a new cluster, the snapshot restored with the original shares"; \
	$(BIN)/dr --config $(DEMO)/recover.yaml --log-format console recover --cluster new

clean:
	rm -rf $(VENV) $(TOOLS) .mypy_cache .ruff_cache .pytest_cache
