# The two everyday commands: `make run` and `make test`. Everything installs into .venv.
# PYTHON: the interpreter .venv is made with. Unset, scripts/find-python takes the newest
# python3.13/3.12/3.11 on PATH, or a python3 that is at least 3.11, and says which.
PYTHON ?=
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= config/bantin.toml

.PHONY: run test bench bench-quick clean

# The interpreter is looked for when .venv is made, and only then; `make -n` shows the choice.
$(BIN)/python:
	$(eval VENV_PYTHON := $(shell scripts/find-python $(PYTHON)))
	$(if $(VENV_PYTHON),,$(error no Python 3.11 or newer to make $(VENV) with; see the line above))
	$(VENV_PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed

run: $(VENV)/.installed
	@echo "make run: the bantin command is $(BIN)/bantin (e.g. $(BIN)/bantin status in another"
	@echo "make run: terminal), or run 'source $(BIN)/activate' once and then type bantin status"
	$(BIN)/bantin --config $(CONFIG) run

test: $(VENV)/.installed-test
	scripts/test-services
	$(BIN)/ruff format --check service tests bench
	$(BIN)/ruff check service tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/pytest

bench: | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test,bench]'
	$(BIN)/python -m bench

bench-quick: | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test,bench]'
	$(BIN)/python -m bench --quick

clean:
	rm -rf $(VENV) .venv-peers public var .mypy_cache .pytest_cache .ruff_cache
