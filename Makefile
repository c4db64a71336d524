# Two commands do all set-up on a fresh machine (Python >= 3.11, make):
#   make serve   install into .venv and run the server on its embedded default (the simulator)
#   make test    install, lint, type-check and run the whole test suite (also under openai 1.x)
PY ?= python3
VENV := .venv
VENV1 := .venv-openai1
PIP_FLAGS := --quiet --disable-pip-version-check
ARGS ?=
NODE_SDK := tests/node/node_modules/.installed

.PHONY: serve test check pytest pytest-openai1 bench clean

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

bench: $(VENV)/.installed
	$(VENV)/bin/python bench/overhead.py $(ARGS)

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
	rm -rf $(VENV) $(VENV1) tests/node/node_modules .pytest_cache .mypy_cache .ruff_cache
