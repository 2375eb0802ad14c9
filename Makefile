# parallel-stacks: the cookiecutter template's own tasks.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

VENV   ?= .venv
PY     := $(VENV)/bin/python
PYTEST_ARGS ?=
BENCH_ARGS ?=

##@ Main
demo: $(VENV)/.installed ## Bake a demo project with defaults and run two copies side by side
	@$(PY) scripts/demo.py

test: $(VENV)/.installed lint ## Run the whole test suite (lint, unit, bake, end-to-end on real Docker)
	@$(PY) -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed ## ruff and mypy (strict on the helper package), ruff on the template's own code
	@$(PY) -m ruff check --quiet tests bench scripts hooks
	@$(PY) -m ruff check --quiet --config '$(HELPER_PACKAGE)/pyproject.toml' '$(HELPER_PACKAGE)' 
	@$(PY) -m ruff format --check --quiet --config '$(HELPER_PACKAGE)/pyproject.toml' '$(HELPER_PACKAGE)'
	@$(PY) -m mypy --config-file '$(HELPER_PACKAGE)/pyproject.toml' '$(HELPER_PACKAGE)/parallel_stacks' 

##@ Existing repositories
adopt: $(VENV)/.installed ## Give an existing compose project parallel copies (TARGET=path/to/repo; DRY_RUN=1 shows the diff only)
	@test -n "$(TARGET)" || { echo "error: TARGET=path/to/repo is required" >&2; exit 2; }
	@PYTHONPATH=scripts $(PY) -m adopt $(if $(filter 1 true yes,$(DRY_RUN)),--dry-run) '$(TARGET)'

##@ Measure
bench: $(VENV)/.bench-installed ## Measure isolation's costs against the alternatives; writes docs/PERFORMANCE.md (~15 min)
	@PYTHONPATH=scripts $(PY) -m bench $(BENCH_ARGS)

soak: $(VENV)/.installed ## Soak: 20 test-parallel runs, 5 on 12 workers, 20 worktree cycles, 5 copies at once, a fleet of 30 idle copies, the long fault matrix (~40 min)
	@$(PY) scripts/soak.py

##@ Setup
setup: $(VENV)/.installed ## Create .venv with the pinned dev dependencies (uv when it can, else pip; UV=none forces pip)

offline-images: ## Build offline stand-ins for the postgres/redis/python images (Debian, root)
	@bash scripts/offline-images.sh

# The baked project's own bootstrap (uv when it can, else pip) serves the template too.
BOOTSTRAP := '{{cookiecutter.project}}/scripts/bootstrap-venv.sh'

# The tests import the very package a baked project installs: editable, from the template.
HELPER_PACKAGE := {{cookiecutter.project}}/tools

$(VENV)/.installed: env/requirements-dev.txt $(HELPER_PACKAGE)/pyproject.toml
	@EDITABLE='$(HELPER_PACKAGE)' bash $(BOOTSTRAP) $(VENV) env/requirements-dev.txt
	@touch $@

$(VENV)/.bench-installed: $(VENV)/.installed env/requirements-bench.txt
	@EDITABLE='$(HELPER_PACKAGE)' bash $(BOOTSTRAP) $(VENV) env/requirements-dev.txt env/requirements-bench.txt
	@touch $@

demo-clean: $(VENV)/.installed ## Nuke the demo's copies and remove build/demo
	@$(PY) scripts/demo.py --clean

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} \
	  /^##@/ {printf "\n%s\n", substr($$0, 5); next} \
	  /^[a-zA-Z_-]+:.*## / {printf "  %-18s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: adopt demo demo-clean test lint bench soak setup offline-images help
