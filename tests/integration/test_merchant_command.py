"""`make merchant NAME=...` (infra/local/merchant.py): a new tenant in the running local stack with nothing exported,
or a clear message instead of a traceback (issue 14).

The "running stack" here is DynamoDB Local (the session's engine) with the local stage's table, found through a
demo.json as `make run` writes it; the command runs as `make` runs it, in a fresh interpreter with no AWS_ or
DOORSTEP_ variable in its environment.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

PROJECT_DIR = Path(__file__).resolve().parents[2]
LOCAL_TABLE = "doorstep-local"


def _bare_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "DOORSTEP_", "POWERTOOLS_"))}
    env["PYTHONPATH"] = str(PROJECT_DIR)
    return env


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=PROJECT_DIR, env=env or _bare_env(),
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture()
def local_stack(dynamodb_local: str, tmp_path: Path) -> Iterator[tuple[Path, Any]]:
    from infra.local.resources import create_table

    client = boto3.client("dynamodb", endpoint_url=dynamodb_local, region_name="us-east-1",
                          aws_access_key_id="local", aws_secret_access_key="local")
    create_table(client, LOCAL_TABLE)
    demo = tmp_path / "demo.json"
    demo.write_text(json.dumps({"base_url": "http://127.0.0.1:8000", "moto_url": "http://127.0.0.1:1",
                                "dynamodb_url": dynamodb_local}))
    try:
        yield demo, client
    finally:
        client.delete_table(TableName=LOCAL_TABLE)


def _merchant_of_key(client: Any, api_key: str) -> str | None:
    digest = hashlib.sha256(api_key.encode()).hexdigest()
    item = client.get_item(TableName=LOCAL_TABLE, Key={"PK": {"S": f"APIKEY#{digest}"}, "SK": {"S": "APIKEY"}},
                           ConsistentRead=True).get("Item")
    return item["merchant_id"]["S"] if item else None


@pytest.mark.slow
def test_make_merchant_creates_tenants_in_the_local_stack_with_nothing_exported(local_stack):
    demo, client = local_stack
    first = _run("infra.local.merchant", "--name", "Acme", "--demo", str(demo))
    assert first.returncode == 0, first.stderr
    assert "Traceback" not in first.stderr
    lines = dict(line.split(":", 1) for line in first.stdout.strip().splitlines())
    merchant_id, api_key = lines["merchant_id"].strip(), lines["api_key"].strip()
    assert "shown only now" in first.stderr and api_key not in first.stderr  # printed once, on stdout
    second = _run("infra.local.merchant", "--name", "Acme", "--json", "--demo", str(demo))
    assert second.returncode == 0, second.stderr
    other = json.loads(second.stdout)
    assert other["merchant_id"] != merchant_id and other["api_key"] != api_key  # a second tenant
    assert _merchant_of_key(client, api_key) == merchant_id
    assert _merchant_of_key(client, other["api_key"]) == other["merchant_id"]
    for mid in (merchant_id, other["merchant_id"]):
        item = client.get_item(TableName=LOCAL_TABLE, Key={"PK": {"S": f"MERCHANT#{mid}"}, "SK": {"S": "MERCHANT"}},
                               ConsistentRead=True)["Item"]
        assert item["name"]["S"] == "Acme"
    # only the key's hash is stored
    dump = json.dumps(client.scan(TableName=LOCAL_TABLE)["Items"])  # a test reading the whole table, not a request
    assert api_key not in dump and other["api_key"] not in dump


def test_without_a_stack_or_an_environment_it_says_what_to_do(tmp_path):
    r = _run("infra.local.merchant", "--name", "Acme", "--demo", str(tmp_path / "missing.json"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "make run" in r.stderr and "DOORSTEP_TABLE_NAME" in r.stderr


def test_a_stopped_stack_is_named_not_a_traceback(tmp_path):
    demo = tmp_path / "demo.json"
    demo.write_text(json.dumps({"moto_url": "http://127.0.0.1:1", "dynamodb_url": "http://127.0.0.1:1"}))
    r = _run("infra.local.merchant", "--name", "Acme", "--demo", str(demo))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "does not answer at http://127.0.0.1:1" in r.stderr


def test_a_name_is_required(tmp_path):
    r = _run("infra.local.merchant", "--name", "  ", "--demo", str(tmp_path / "demo.json"))
    assert r.returncode == 2 and "--name" in r.stderr


def test_the_stage_command_names_the_missing_variables_instead_of_a_traceback():
    r = _run("chalicelib.cli", "create-merchant", "--name", "Acme")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "DOORSTEP_TABLE_NAME" in r.stderr and "make merchant" in r.stderr


def test_make_merchant_runs_the_script():
    makefile = (PROJECT_DIR / "Makefile").read_text()
    recipe = makefile[makefile.index("\nmerchant:"):].split("\n\n")[0]
    assert '-m infra.local.merchant --name "$(NAME)"' in recipe
