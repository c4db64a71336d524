# Two commands do all set-up on a fresh machine (Python >= 3.11, make):
#   make serve   install into .venv and run the server on its embedded default (the simulator)
#   make test    install, lint, type-check and run the whole test suite (also under openai 1.x)
PY ?= python3
VENV := .venv
VENV1 := .venv-openai1
VENV_BENCH := .venv-bench
LITELLM := litellm[proxy]==1.106.2
PIP_FLAGS := --quiet --disable-pip-version-check
ARGS ?=
NODE_SDK := tests/node/node_modules/.installed

.PHONY: serve test check pytest pytest-openai1 bench bench-litellm clean

serve: $(VENV)/.installed
	$(VENV)/bin/oai-bridge serve $(ARGS)

test: check pytest pytest-openai1

check: $(VENV)/.installed
	$(VENV)/bin/ruff check
	$(VENV)/bin/ruff format --check
	$(VENV)/bin/mypy

pytest: $(VENV)/.installed $(NODE_SDK)
	$(VENV)/bin/python -m pytest

# Many frameworks still pin openai 1.x: the SDK-facing tests run again with the last 1.x release.
pytest-openai1: $(VENV1)/.installed
	$(VENV1)/bin/python -m pytest -m sdk -p no:cacheprovider tests/server

# The overhead bench: direct vs oai-bridge vs LiteLLM's proxy (bench/README.md). LiteLLM goes into its
# own venv (heavy deps, kept out of the test venv); if it cannot be installed the bench runs without it.
bench: $(VENV)/.installed
	@$(MAKE) --no-print-directory bench-litellm || echo "LiteLLM could not be installed: the bench runs without it"
	$(VENV)/bin/python bench/overhead.py $(ARGS)

bench-litellm: $(VENV_BENCH)/.installed

# httptools: uvicorn's fast HTTP parser (LiteLLM's extras leave uvicorn on h11), the fastest honest setup
$(VENV_BENCH)/.installed:
	$(PY) -m venv $(VENV_BENCH)
	$(VENV_BENCH)/bin/pip install $(PIP_FLAGS) '$(LITELLM)' httptools
	touch $@

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(VENV)/bin/pip install $(PIP_FLAGS) -e '.[test]'
	touch $@

$(VENV1)/.installed: pyproject.toml
	$(PY) -m venv $(VENV1)
	$(VENV1)/bin/pip install $(PIP_FLAGS) -e . 'openai==1.109.1' pytest pytest-asyncio pytest-timeout httpx psutil
	touch $@

# The official openai Node SDK, for tests/server/test_node_sdk.py.
$(NODE_SDK): tests/node/package.json tests/node/package-lock.json
	cd tests/node && npm ci --no-audit --no-fund --loglevel=error
	touch $@

clean:
	rm -rf $(VENV) $(VENV1) $(VENV_BENCH) tests/node/node_modules .pytest_cache .mypy_cache .ruff_cache
