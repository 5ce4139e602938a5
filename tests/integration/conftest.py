"""In-process moto with the real table definition, and a Chalice test client."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from tests.conftest import TEST_ENV

_SESSION_MOTO: list[bool] = []  # set while the session's in-process moto runs


@pytest.fixture(scope="session")
def aws() -> Iterator[None]:
    with mock_aws():
        _SESSION_MOTO.append(True)
        from infra.local.resources import create_bucket, create_table

        create_table(boto3.client("dynamodb"), TEST_ENV["DOORSTEP_TABLE_NAME"])
        create_bucket(boto3.client("s3"), TEST_ENV["DOORSTEP_BUCKET_NAME"])
        yield


@pytest.fixture(scope="module", autouse=True)
def fresh_moto_table(request: pytest.FixtureRequest) -> None:
    """Each module starts on an empty in-process table (and stream). Tests never share data, but a table
    kept for the whole session grows to tens of thousands of items, and moto deep-copies the table for
    every transaction: the suite slowed as it went and its memory grew past 14 GB. The modules under
    on_dynamodb_local point the app at their own table; this one is then simply unused."""
    from infra.local.resources import create_bucket, create_table

    if not _SESSION_MOTO or "on_dynamodb_local" in request.module.__name__:
        return  # the first module's table is new anyway; modules with their own `aws` are left alone
    client = boto3.client("dynamodb")
    name = TEST_ENV["DOORSTEP_TABLE_NAME"]
    # Gone already if a module's own mock_aws (test_infra) reset moto's backends when it started.
    with contextlib.suppress(client.exceptions.ResourceNotFoundException):
        client.delete_table(TableName=name)
    create_table(client, name)
    create_bucket(boto3.client("s3"), TEST_ENV["DOORSTEP_BUCKET_NAME"])  # reset with the table, if it was


@pytest.fixture(scope="session")
def chalice_app(aws: None) -> Any:
    import app as app_module
    from infra.local.api_server import answer_unknown_paths

    answer_unknown_paths()  # as `make run` does: an unknown path is the JSON 404, as deployed
    return app_module.app


_TEST_NUMBERS = itertools.count(1)


@pytest.fixture(autouse=True)
def own_source_address(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test calls from its own address, so failed tracker attempts (limited per source) of one test
    never count in another."""
    from chalice.local import LambdaEventConverter

    high, low = divmod(next(_TEST_NUMBERS), 250)
    monkeypatch.setattr(LambdaEventConverter, "LOCAL_SOURCE_IP", f"10.1.{high % 250}.{low + 1}")


@pytest.fixture()
def client(chalice_app: Any) -> Iterator[Any]:
    from chalice.test import Client

    with Client(chalice_app) as test_client:
        yield test_client


class Merchant:
    """A fresh merchant per test: tests never see each other's data."""

    def __init__(self, client: Any, merchant_id: str, api_key: str) -> None:
        self.client = client
        self.id = merchant_id
        self.key = api_key

    def headers(self, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}", "Content-Type": "application/json", **extra}

    def call(self, method: str, path: str, body: Any = None, **headers: str) -> Any:
        import json

        kwargs: dict[str, Any] = {"headers": self.headers(**headers)}
        if body is not None:
            kwargs["body"] = body if isinstance(body, (str, bytes)) else json.dumps(body)
        return getattr(self.client.http, method.lower())(path, **kwargs)


@pytest.fixture()
def merchant(client: Any) -> Merchant:
    return new_merchant(client, "Test Merchant")


def new_merchant(client: Any, name: str = "Another Merchant") -> Merchant:
    from chalicelib.fleet import service as fleet
    from chalicelib.storage import get_repository

    merchant_id, key = fleet.create_merchant(get_repository(), name)
    return Merchant(client, merchant_id, key)


@pytest.fixture()
def other_merchant(client: Any) -> Merchant:
    return new_merchant(client, "Other Merchant")
