"""The fault suite's stack: a DynamoDB endpoint (see emulator.py), the fault proxy in front of it, and
`chalice local` behind the proxy. One per module; each test uses its own merchant."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.faults.emulator import Endpoint, chalice_local, create_merchant, create_table, dynamodb_endpoint
from tests.faults.proxy import FaultProxy

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: Any
    seconds: float


def call(method: str, url: str, body: Any = None, *, token: str | None = None, headers: dict[str, str] | None = None,
         timeout: float = 60.0) -> Answer:
    data = body if isinstance(body, bytes) else json.dumps(body).encode() if body is not None else None
    sent = {"Content-Type": "application/json"} if data is not None else {}
    if token:
        sent["Authorization"] = f"Bearer {token}"
    sent.update(headers or {})
    request = urllib.request.Request(url, data=data, method=method, headers=sent)
    started = time.monotonic()
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            status, got, raw = response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            status, got, raw = exc.code, dict(exc.headers), exc.read()
    try:
        parsed: Any = json.loads(raw) if raw else None
    except ValueError:
        parsed = raw.decode("utf-8", "replace")
    return Answer(status, {k.lower(): v for k, v in got.items()}, parsed, time.monotonic() - started)


@dataclass
class Stack:
    endpoint: Endpoint
    proxy: FaultProxy
    base_url: str
    log_dir: Path

    def merchant(self, name: str = "Fault Suite Merchant") -> dict[str, str]:
        return create_merchant(self.endpoint.url, name)

    def storage(self) -> Any:
        """A client straight to the storage (not through the proxy): what is really stored."""
        import boto3
        from botocore.config import Config

        return boto3.client("dynamodb", endpoint_url=self.endpoint.url, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing",
                            config=Config(retries={"mode": "standard", "total_max_attempts": 5}))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    log_dir = tmp_path_factory.mktemp("fault-suite")
    with dynamodb_endpoint(log_dir) as endpoint:
        create_table(endpoint.url)
        with FaultProxy(endpoint.url) as proxy, chalice_local(proxy.url, log_dir / "chalice.log") as base_url:
            yield Stack(endpoint, proxy, base_url, log_dir)


@pytest.fixture()
def clean_proxy(stack: Stack) -> Iterator[FaultProxy]:
    stack.proxy.clear()
    stack.proxy.resume()
    yield stack.proxy
    stack.proxy.clear()
    stack.proxy.resume()
