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

.PHONY: install demo test lint typecheck unit compiled docs bench clean

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
	$(BIN)/ruff check guard_plugins tests examples benchmarks integrations setup.py buildsupport

typecheck: $(STAMP)
	$(BIN)/mypy guard_plugins
	$(BIN)/mypy integrations/langchain/guard_plugins_langchain
	$(BIN)/mypy integrations/llamaindex/guard_plugins_llamaindex

unit: $(STAMP)
	$(BIN)/pytest -q tests integrations/langchain/tests integrations/llamaindex/tests \
		--reliability-report docs/reliability.md $(PYTEST_ARGS)

# The code screen as wheels ship it: compiled with mypyc (buildsupport/guard_plugins_build.py),
# built once per source change into $(COMPILED_SITE), then its tests run against that build.
COMPILED_SITE := $(VENV)/compiled-site
SCREEN_SOURCES := $(wildcard guard_plugins/codescreen/*.py)

$(COMPILED_SITE)/.built: $(STAMP) $(SCREEN_SOURCES) setup.py buildsupport/guard_plugins_build.py buildsupport/mypyc.ini
	rm -rf $(COMPILED_SITE) $(VENV)/compiled-wheel
	PIP_CONSTRAINT=$(abspath ci/constraints.txt) $(PIP) wheel --quiet --no-deps --wheel-dir $(VENV)/compiled-wheel .
	$(PIP) install --quiet --no-deps --target $(COMPILED_SITE) $(VENV)/compiled-wheel/guard_plugins-*.whl
	touch $@

compiled: $(COMPILED_SITE)/.built
	# No rootdir on sys.path (pythonpath, the plugin in addopts): the sources would shadow the build.
	GUARD_PLUGINS_EXPECT_COMPILED=1 PYTHONPATH=$(abspath $(COMPILED_SITE)) $(BIN)/pytest -q \
		-o pythonpath= -o addopts= -p no:cacheprovider \
		tests/test_codescreen_api.py tests/test_codescreen_rules.py tests/test_codescreen_gate.py \
		tests/test_codescreen_corpus.py $(PYTEST_ARGS)

docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir site

# Everything CI runs: lint, strict type checks, all tests (core + both integrations), the compiled
# code screen's tests, docs build.
test: lint typecheck unit compiled docs

bench: $(STAMP)
	$(BIN)/guard-plugins bench --quick

clean:
	rm -rf $(VENV) site .mypy_cache .ruff_cache .pytest_cache
