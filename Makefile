# guard-plugins: `make demo` (main job) and `make test` (everything CI runs).
# Both create .venv on first use and install the project with the pinned set in ci/constraints.txt.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
STAMP := $(VENV)/.installed
DEV ?=
PYTEST_ARGS ?=

INSTALL_SPECS := -e ".[transformers,http,eval,otel,dev,docs]" \
	-e "integrations/langchain[agents]" \
	-e "integrations/llamaindex[test]"

.PHONY: install demo test lint typecheck unit docs bench clean

install: $(STAMP)

$(STAMP): pyproject.toml integrations/langchain/pyproject.toml integrations/llamaindex/pyproject.toml ci/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade "pip>=24"
	$(PIP) install --quiet -c ci/constraints.txt $(INSTALL_SPECS)
	touch $(STAMP)

# The main job: guard a scripted chat + code agent with Llama Guard 4.
# Needs the real weights (HF cache / --model) or an endpoint (GUARD_PLUGINS_ENDPOINT);
# without them it stops and tells you to run `make demo DEV=1` (a random-weight dev model).
demo: $(STAMP)
	$(BIN)/guard-plugins demo $(if $(DEV),--dev,)

lint: $(STAMP)
	$(BIN)/ruff check guard_plugins tests examples benchmarks integrations

typecheck: $(STAMP)
	$(BIN)/mypy guard_plugins
	$(BIN)/mypy integrations/langchain/guard_plugins_langchain
	$(BIN)/mypy integrations/llamaindex/guard_plugins_llamaindex

unit: $(STAMP)
	$(BIN)/pytest -q tests integrations/langchain/tests integrations/llamaindex/tests \
		--reliability-report docs/reliability.md $(PYTEST_ARGS)

docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir site

# Everything CI runs: lint, strict type checks, all tests (core + both integrations), docs build.
test: lint typecheck unit docs

bench: $(STAMP)
	$(BIN)/guard-plugins bench --quick

clean:
	rm -rf $(VENV) site .mypy_cache .ruff_cache .pytest_cache
