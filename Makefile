# Doorstep developer commands. `make run` and `make test` work on a fresh clone.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PORT ?= 8000
MOTO_PORT ?= 5001
STAGE ?= dev

.PHONY: help venv run simulate outbox replay test test-unit test-integration test-e2e bench eval lint package merchant clean

help:
	@echo "make run        start the local stack (moto + chalice local) with a demo merchant"
	@echo "make simulate   play a real GPS trace through the driver API (needs make run)"
	@echo "make outbox     the SMS and email the local stack sent (needs make run)"
	@echo "make replay     replay the local stack's dead-lettered stream records (needs make run)"
	@echo "make test       run unit, integration and end-to-end tests"
	@echo "make bench      print benchmark figures as JSON lines"
	@echo "make eval       ETA evaluation on real GeoLife trips against the SPEED baseline"
	@echo "make lint       ruff + mypy + import contracts (lint-imports)"
	@echo "make package    write the deployable template to build/package (STAGE=dev|prod)"
	@echo "make merchant NAME=...  create a merchant and print its API key once"

venv: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required, found " + sys.version' 
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m infra.local.stack --port $(PORT) --moto-port $(MOTO_PORT) $(if $(TILE_URL),--tile-url '$(TILE_URL)',)

simulate: $(STAMP)
	$(PY) -m infra.local.simulate $(if $(TRACE),--trace $(TRACE),) $(if $(SPEED),--speed $(SPEED),) $(if $(BATCH),--batch $(BATCH),)

outbox: $(STAMP)
	$(PY) -m infra.local.outbox

replay: $(STAMP)
	$(PY) -m infra.replay stream --local

test: $(STAMP)
	$(PY) -m pytest tests

test-unit: $(STAMP)
	$(PY) -m pytest tests/unit

test-integration: $(STAMP)
	$(PY) -m pytest tests/integration

test-e2e: $(STAMP)
	$(PY) -m pytest tests/e2e

bench: $(STAMP)
	$(PY) -m bench

eval: $(STAMP)
	$(PY) -m bench.eval_eta

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

package: $(STAMP)
	$(PY) -m infra.package --stage $(STAGE) --out build/package

merchant: $(STAMP)
	$(PY) -m chalicelib.cli create-merchant --name "$(NAME)"

clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache
