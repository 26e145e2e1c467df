# Developer entry points. Run `make` (or `make help`) for the list.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:
MAKEFLAGS += --no-builtin-rules

VENV        := .venv
VENV_BIN    := $(VENV)/bin
VENV_PY     := $(VENV_BIN)/python
STAMP       := $(VENV)/.installed
INSTALL_DEPS := pyproject.toml $(wildcard layers/common/requirements.txt)
PACKAGE_DIR := layers/common/proactive_delivery tools/proactive_delivery_tools

# Extra arguments for pytest, e.g. `make test PYTEST_ARGS='-k delivery -x'`.
PYTEST_ARGS ?=

# Run a command with the PostgreSQL settings printed by ensure-postgres.sh.
# The assignment keeps the script's exit status (set -e stops on failure).
define with_postgres
pg_env="$$(scripts/ensure-postgres.sh)"; \
eval "$$pg_env"; \
echo "PostgreSQL: $$PGHOST:$$PGPORT user=$$PGUSER db=$$PGDATABASE" >&2;
endef

.PHONY: help install tools test lint check demo bench build deploy clean pg-start pg-stop

# `make build` / `make deploy` (scripts/deploy.py): the samconfig.toml environment, the
# functions' architecture (default: samconfig's, else the deployed stack's, else the
# template's arm64), more template parameters, and DRY_RUN=1 to print the commands only.
CONFIG_ENV ?= default
ARCHITECTURE ?=
PARAMETER_OVERRIDES ?=
DRY_RUN ?=
DEPLOY_ARGS = --config-env $(CONFIG_ENV) $(if $(ARCHITECTURE),--architecture $(ARCHITECTURE)) \
	$(if $(DRY_RUN),--dry-run) $(PARAMETER_OVERRIDES)

TOOLS_STAMP := .tools/.installed

help: ## Show this list
	@echo "Targets:"
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) \
		| awk 'BEGIN {FS = ":.*## "} {printf "  %-10s %s\n", $$1, $$2}'
	@echo
	@echo "Variables: PYTEST_ARGS='...' (extra pytest args), PYTHON=/path/to/python3 (venv interpreter)"

install: $(STAMP) ## Create .venv and install the package with dev extras

$(STAMP): $(INSTALL_DEPS)
	@if [ ! -x $(VENV_PY) ] || ! $(VENV_PY) -c 'import sys' >/dev/null 2>&1; then \
		py="$$(scripts/find-python.sh)"; \
		echo "Creating $(VENV) with $$py ($$("$$py" --version 2>&1))"; \
		rm -rf $(VENV); \
		"$$py" -m venv $(VENV); \
	fi
	$(VENV_PY) -m pip install --disable-pip-version-check --upgrade pip
	$(VENV_PY) -m pip install --disable-pip-version-check -e '.[dev]'
	@touch $@

test: install ## Run the test suite against PostgreSQL (PYTEST_ARGS=... for extra args)
	@$(with_postgres) \
	rc=0; $(VENV_PY) -m pytest $(PYTEST_ARGS) || rc=$$?; \
	if [ "$$rc" -eq 5 ]; then \
		echo "make test: FAILED: pytest collected no tests (exit code 5)" >&2; \
	elif [ "$$rc" -ne 0 ]; then \
		echo "make test: FAILED: pytest exited with code $$rc" >&2; \
	fi; \
	exit "$$rc"

lint: install ## ruff check, ruff format --check, mypy
	$(VENV_BIN)/ruff check .
	$(VENV_BIN)/ruff format --check .
	$(VENV_BIN)/mypy

tools: $(TOOLS_STAMP) ## Create .tools (SAM CLI, cfn-lint) and .tools-checkov, apart from .venv

$(TOOLS_STAMP): scripts/tools-venv.sh
	bash scripts/tools-venv.sh
	@touch $@

check: lint tools ## lint + template checks (sam validate/build, cfn-lint, checkov) + bandit
	@if [ ! -f scripts/check-template.sh ]; then \
		echo "make check: scripts/check-template.sh is missing" >&2; exit 1; \
	fi
	PATH="$(CURDIR)/$(VENV_BIN):$$PATH" bash scripts/check-template.sh
	@if grep -q '^\[tool\.bandit' pyproject.toml; then \
		echo "$(VENV_BIN)/bandit -q -r $(PACKAGE_DIR) -c pyproject.toml"; \
		$(VENV_BIN)/bandit -q -r $(PACKAGE_DIR) -c pyproject.toml; \
	else \
		echo "$(VENV_BIN)/bandit -q -r $(PACKAGE_DIR)"; \
		$(VENV_BIN)/bandit -q -r $(PACKAGE_DIR); \
	fi

demo: install ## Run the pipeline locally once (DATABASE_URL, else a throwaway PostgreSQL it stops)
	$(VENV_BIN)/proactive-delivery local --once

bench: install ## Run the pipeline benchmark
	@$(with_postgres) \
	$(VENV_PY) benchmarks/bench_pipeline.py

build: install tools ## sam build without a container (ARCHITECTURE=arm64|x86_64, CONFIG_ENV=...)
	$(VENV_PY) scripts/deploy.py build $(DEPLOY_ARGS)

deploy: install tools ## build, migrate (DATABASE_SECRET_ARN), sam deploy (CONFIG_ENV=prod, PARAMETER_OVERRIDES='K=V ...')
	$(VENV_PY) scripts/deploy.py deploy $(DEPLOY_ARGS)

pg-start: ## Find or start PostgreSQL and write .pg-env
	@scripts/ensure-postgres.sh >/dev/null

pg-stop: ## Stop the throwaway PostgreSQL cluster (if one was started)
	@scripts/ensure-postgres.sh stop

clean: ## Remove the venv, caches, build output and the throwaway cluster
	scripts/ensure-postgres.sh destroy
	rm -rf $(VENV) .aws-sam build .pytest_cache .mypy_cache .ruff_cache .local-run .pg-env
	find . \( -path ./.git -o -path './.tools*' \) -prune -o \( -name __pycache__ -o -name '*.egg-info' \) -type d -print0 \
		| xargs -0 rm -rf
