PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv codegen check lint typecheck test run clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,local,bench]'
	touch $(STAMP)

venv: $(STAMP)

codegen: $(STAMP)
	$(PY) -m codegen

check: $(STAMP)
	$(PY) -m codegen --check

lint: $(STAMP)
	$(VENV)/bin/ruff check bpj codegen tests benchmarks
	$(VENV)/bin/ruff format --check bpj codegen tests benchmarks

typecheck: $(STAMP)
	$(VENV)/bin/mypy

test: check lint typecheck
	$(PY) -m pytest

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .hypothesis
