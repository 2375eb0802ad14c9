# parallel-stacks: make targets for isolated copies of this compose project.
# Shipped unchanged by parallel-stacks' `make adopt` (a later adopt replaces it);
# included from the Makefile. `make stack-<target>` always works; `make <target>`
# too where the Makefile has no target of that name (STACK_ALIASES, written by
# adopt to parallel-stacks/aliases.mk). Per copy: PORT_OFFSET=<n> make stack-up.
# A new target: a `stack-<name>: $(STACK_DEPS) ## <help>` rule below; the next
# `make adopt` gives it its short alias where that name is free.
STACK_VENV ?= .venv-stack
ifeq ($(origin STACK_PYTHON),undefined)
STACK_PYTHON := $(STACK_VENV)/bin/python
STACK_DEPS := $(STACK_VENV)/.installed
else
STACK_DEPS :=
endif
STACK_DIR := parallel-stacks
STACK_HELPERS := $(STACK_DIR)/helpers.py
export STACK_ROOT := $(CURDIR)
ARGS ?=
STACK_ALIASES ?=
-include $(STACK_DIR)/aliases.mk
ifeq ($(.DEFAULT_GOAL),)
.DEFAULT_GOAL := stack-help
endif

stack-up: $(STACK_DEPS) ## Start this copy (build, wait until healthy) and print its URLs; SERVICES="db redis" starts only those
	@$(STACK_PYTHON) $(STACK_HELPERS) up

stack-down: $(STACK_DEPS) ## Stop this copy; keeps its data volumes
	@$(STACK_PYTHON) $(STACK_HELPERS) down

stack-ps: $(STACK_DEPS) ## Show this copy's containers
	@$(STACK_PYTHON) $(STACK_HELPERS) ps

stack-logs: $(STACK_DEPS) ## Follow this copy's logs (ARGS=service)
	@$(STACK_PYTHON) $(STACK_HELPERS) logs -f $(ARGS)

stack-nuke: $(STACK_DEPS) ## Remove this copy's containers, networks, volumes, images and data directories (FORCE=1, DRY_RUN=1)
	@$(STACK_PYTHON) $(STACK_HELPERS) nuke

stack-env: $(STACK_DEPS) ## Print every derived value (SHOW_SECRETS=1 unmasks)
	@$(STACK_PYTHON) $(STACK_HELPERS) env

stack-ports: $(STACK_DEPS) ## Print this copy's ports and URLs
	@$(STACK_PYTHON) $(STACK_HELPERS) ports

stack-check-ports: $(STACK_DEPS) ## Check that every host port of this copy is free
	@$(STACK_PYTHON) $(STACK_HELPERS) check-ports

stack-release: $(STACK_DEPS) ## Free this worktree's PORT_OFFSET=auto slot
	@$(STACK_PYTHON) $(STACK_HELPERS) release

stack-slots: $(STACK_DEPS) ## List every copy on this machine (FORMAT=json)
	@$(STACK_PYTHON) $(STACK_HELPERS) slots

stack-dashboard: $(STACK_DEPS) ## Live read-only page of every copy on this machine (STOP=1 stops it; DASHBOARD_PORT=7356)
	@$(STACK_PYTHON) $(STACK_HELPERS) dashboard

stack-dashboard-stop: $(STACK_DEPS) ## Stop the dashboard
	@$(STACK_PYTHON) $(STACK_HELPERS) dashboard --stop

stack-gc: $(STACK_DEPS) ## List stale claims and copies of vanished worktrees; FORCE=1 removes them
	@$(STACK_PYTHON) $(STACK_HELPERS) gc

stack-doctor: $(STACK_DEPS) ## Check engine, compose files, ports and env files
	@$(STACK_PYTHON) $(STACK_HELPERS) doctor

stack-k8s: $(STACK_DEPS) ## Render this copy as Kubernetes manifests (stdout)
	@$(STACK_PYTHON) $(STACK_HELPERS) k8s

stack-worktree: $(STACK_DEPS) ## New git worktree NAME with its own copy (UP=1 starts it)
	@$(STACK_PYTHON) $(STACK_HELPERS) worktree add

stack-worktree-remove: $(STACK_DEPS) ## Nuke worktree NAME's copy and remove the worktree
	@$(STACK_PYTHON) $(STACK_HELPERS) worktree remove

stack-psql: $(STACK_DEPS) ## psql inside this copy's Postgres container
	@$(STACK_PYTHON) $(STACK_HELPERS) client psql $(ARGS)

##@ This repository's own test suite, against this copy (parallel-stacks/suite.mk says how it runs)
# STACK_SUITE_RUNNER: uv (uv run), poetry (poetry run), venv (.venv/bin/python) or python; PYTEST=... overrides
# the whole command (its environment then needs the plugin: STACK_SUITE_PYTHON=... make stack-test-setup).
-include $(STACK_DIR)/suite.mk
STACK_SUITE_RUNNER ?= python
PYTEST_WORKERS ?= auto
PYTEST_DIST ?= load
ifeq ($(STACK_SUITE_RUNNER),uv)
STACK_SUITE_PYTHON ?= uv run --with-editable $(STACK_DIR)/tools --with-requirements $(STACK_DIR)/suite-requirements.txt python
else ifeq ($(STACK_SUITE_RUNNER),poetry)
STACK_SUITE_PYTHON ?= poetry run python
else ifeq ($(STACK_SUITE_RUNNER),venv)
STACK_SUITE_PYTHON ?= .venv/bin/python
else
STACK_SUITE_PYTHON ?= python3
endif
# PYTEST from the command line or the environment only (a Makefile's own PYTEST may mean something else)
STACK_PYTEST := $(if $(filter command line environment,$(origin PYTEST)),$(PYTEST),$(STACK_SUITE_PYTHON) -m pytest)
# the plugin reads the copy (STACK_ROOT, PORT_OFFSET, ...) and maps the app's own variable names from this file
export STACK_ISOLATION_ENV := $(if $(wildcard $(STACK_DIR)/isolation_env),$(CURDIR)/$(STACK_DIR)/isolation_env)

stack-test: stack-test-setup ## Run this repository's pytest suite against this copy, isolated (ARGS="..."; SERVICES="db redis": only those)
	@$(STACK_PYTEST) $(ARGS)

stack-test-parallel: stack-test-setup ## The suite on PYTEST_WORKERS xdist workers (default auto), each with its own database, Redis DB, ...
	@$(STACK_PYTEST) -n $(PYTEST_WORKERS) --dist $(PYTEST_DIST) $(ARGS)

stack-test-setup: $(STACK_DEPS) ## Install the isolation plugin and pytest-xdist into the suite's own environment (once)
	@$(STACK_SUITE_PYTHON) -c "import parallel_stacks.pytest_plugin, xdist, dotenv, yaml, psutil" 2>/dev/null \
	  || { echo "stack-test-setup: installing the isolation plugin and pytest-xdist into $(STACK_SUITE_PYTHON)" >&2; \
	       $(STACK_SUITE_PYTHON) -m pip install --quiet -e $(STACK_DIR)/tools -r $(STACK_DIR)/suite-requirements.txt; }

stack-setup: $(STACK_VENV)/.installed ## Create $(STACK_VENV) with the helpers (uv when it can, else pip)

$(STACK_VENV)/.installed: $(STACK_DIR)/requirements.txt $(STACK_DIR)/tools/pyproject.toml
	@EDITABLE=$(STACK_DIR)/tools bash $(STACK_DIR)/bootstrap-venv.sh $(STACK_VENV) $(STACK_DIR)/requirements.txt
	@touch $@

stack-help: ## This file's targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-22s %s\n", $$1, $$2}' parallel-stacks.mk

$(foreach target,$(STACK_ALIASES),$(eval $(target): stack-$(target)))

.PHONY: stack-up stack-down stack-ps stack-logs stack-nuke stack-env stack-ports stack-check-ports stack-release \
	stack-slots stack-dashboard stack-dashboard-stop stack-gc stack-doctor stack-k8s stack-worktree stack-worktree-remove stack-psql stack-setup stack-help \
	stack-test stack-test-parallel stack-test-setup $(STACK_ALIASES)
