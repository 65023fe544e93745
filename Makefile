# Fleetgate: the two commands are `make run` and `make test`. Everything else is a helper for them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: venv run test test-packages lint check services requirements bench clean

$(STAMP): requirements/base.txt requirements/dev.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q --require-hashes -r requirements/base.txt
	$(BIN)/pip install -q -r requirements/dev.txt
	@touch $(STAMP)

venv: $(STAMP)

## Start the whole product on embedded defaults (SQLite, a real Celery worker and beat, sandbox clusters).
run: venv
	$(BIN)/python scripts/run.py

## Run every check and the whole test suite (installs the Debian packages the tests need when missing).
test: venv test-packages lint check
	$(BIN)/pytest $(PYTEST_ARGS)

## Debian packages the tests need (chromium for the browser tests): installed when missing.
test-packages:
	scripts/ci-packages.sh

lint: venv
	$(BIN)/ruff check .
	$(BIN)/mypy fleet clusters policies

check: venv
	$(BIN)/python manage.py check --fail-level WARNING
	$(BIN)/python manage.py makemigrations --check --dry-run
	$(BIN)/python manage.py spectacular --validate --fail-on-warn --file /dev/null

## Install (apt, when missing) and start PostgreSQL and Redis on 127.0.0.1.
services:
	scripts/services.sh

## Recompile the pinned requirements from the .in files.
requirements: venv
	$(BIN)/pip-compile -q --strip-extras --no-emit-index-url --no-emit-find-links --generate-hashes \
		-o requirements/base.txt requirements/base.in
	$(BIN)/pip-compile -q --strip-extras --no-emit-index-url --no-emit-find-links \
		-o requirements/dev.txt requirements/dev.in
	$(BIN)/pip-compile -q --strip-extras --no-emit-index-url --no-emit-find-links \
		-o requirements/prod.txt requirements/prod.in

bench: venv
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
