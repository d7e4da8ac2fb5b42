# pdscaler: `make demo` runs it on the embedded default, `make test` runs every check.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test install services lint typecheck imports pytest bench-api dashboard fmt clean

demo: install
	$(VENV)/bin/pdscaler demo --serve

test: install services lint typecheck imports pytest

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

services:
	.ci/services

lint: install
	$(VENV)/bin/ruff check pdscaler tests bench migrations
	$(VENV)/bin/ruff format --check pdscaler tests bench migrations

typecheck: install
	$(VENV)/bin/mypy

imports: install
	$(VENV)/bin/lint-imports

pytest: install services
	$(PY) -m pytest

bench-api: install services
	$(PY) bench/api_decisions.py

# Regenerate the Grafana dashboard from pdscaler/grafana/dashboard.py; a test fails when the
# checked-in JSON is stale.
dashboard: install
	$(PY) -m pdscaler.grafana.dashboard

fmt: install
	$(VENV)/bin/ruff format pdscaler tests bench migrations
	$(VENV)/bin/ruff check --fix pdscaler tests bench migrations

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache
