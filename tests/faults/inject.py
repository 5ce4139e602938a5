"""In-process DynamoDB fault injection for the integration tests (in-process moto).

`Injector` registers a `before-send` handler first on every DynamoDB client of the storage layer, so it sees
each HTTP attempt botocore makes (retries included) before moto does, and can:

- let it through (moto answers);
- raise a read or connect timeout, as urllib3 would;
- answer an error as DynamoDB would (throttling, 5xx, a cancelled transaction with given reasons);
- "slow commit": let moto execute the request, then raise a read timeout as if the answer never arrived, so
  botocore retries a write that has already been applied.

The plan is a function of (attempt number, operation) -> Fault | None, so a test can fail "everything from the
k-th attempt on" (every retry of that call fails too, which is how a paused or throttled storage looks) or
"the first TransactWriteItems only".
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from botocore.awsrequest import AWSResponse
from botocore.exceptions import ConnectTimeoutError, ReadTimeoutError

WRITE_OPERATIONS = frozenset({"PutItem", "UpdateItem", "DeleteItem", "TransactWriteItems", "BatchWriteItem"})


class _Raw:
    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._body


@dataclass(frozen=True)
class Fault:
    """One failure class. `kind`: read_timeout, connect_timeout, error, slow_commit."""

    name: str
    kind: str
    status: int = 400
    code: str = ""
    reasons: tuple[str, ...] = ()

    def apply(self, request: Any, operation: str) -> AWSResponse | None:
        if self.kind == "read_timeout":
            raise ReadTimeoutError(endpoint_url=request.url)
        if self.kind == "connect_timeout":
            raise ConnectTimeoutError(endpoint_url=request.url)
        if self.kind == "slow_commit":
            from moto.core.models import botocore_stubber

            botocore_stubber(f"before-send.dynamodb.{operation}", request)  # applied...
            raise ReadTimeoutError(endpoint_url=request.url)  # ...but the answer is lost
        body: dict[str, Any] = {"__type": f"com.amazonaws.dynamodb.v20120810#{self.code}",
                                "message": f"injected {self.name}"}
        if self.reasons:
            body["CancellationReasons"] = [{"Code": reason, "Message": reason} for reason in self.reasons]
        # moto's handler runs after this one: pointed elsewhere, it finds no service and leaves the request alone.
        request.url = "http://fault-injected.invalid/"
        return AWSResponse(request.url, self.status, {"Content-Type": "application/x-amz-json-1.0"},
                           _Raw(json.dumps(body).encode()))


READ_TIMEOUT = Fault("read timeout", "read_timeout")
CONNECT_TIMEOUT = Fault("connect timeout", "connect_timeout")
PROVISIONED = Fault("ProvisionedThroughputExceeded", "error", 400, "ProvisionedThroughputExceededException")
THROTTLING = Fault("ThrottlingException", "error", 400, "ThrottlingException")
REQUEST_LIMIT = Fault("RequestLimitExceeded", "error", 400, "RequestLimitExceeded")
INTERNAL = Fault("500 InternalServerError", "error", 500, "InternalServerError")
UNAVAILABLE = Fault("503 ServiceUnavailable", "error", 503, "ServiceUnavailable")
SLOW_COMMIT = Fault("slow commit", "slow_commit")

# Every failure class that must answer 503 wherever it happens.
TRANSIENT = (READ_TIMEOUT, CONNECT_TIMEOUT, PROVISIONED, THROTTLING, REQUEST_LIMIT, INTERNAL, UNAVAILABLE)


def cancelled(*reasons: str) -> Fault:
    """A TransactWriteItems cancelled with these reasons (one per item; "None" for an item that was fine)."""
    return Fault(f"cancelled ({', '.join(reasons)})", "error", 400, "TransactionCanceledException", reasons)


Plan = Callable[[int, str], Fault | None]


@dataclass
class Injector:
    """Counts every DynamoDB attempt of the storage layer and applies `plan` to it."""

    plan: Plan | None = None
    attempts: int = 0
    operations: list[str] = field(default_factory=list)
    injected: list[tuple[int, str, str]] = field(default_factory=list)

    def reset(self, plan: Plan | None = None) -> None:
        self.plan, self.attempts = plan, 0
        self.operations.clear()
        self.injected.clear()

    def from_attempt(self, first: int, fault: Fault, operations: frozenset[str] | None = None) -> None:
        """Fail every attempt from the `first`-th (1-based) on, optionally only of some operations."""
        self.reset(lambda n, op: fault if n >= first and (operations is None or op in operations) else None)

    def once(self, fault: Fault, operation_number: int, operations: frozenset[str]) -> None:
        """Fail the `operation_number`-th (1-based) attempt among `operations` only, once."""
        seen = {"n": 0}

        def plan(_: int, op: str) -> Fault | None:
            if op not in operations:
                return None
            seen["n"] += 1
            return fault if seen["n"] == operation_number else None

        self.reset(plan)

    def __call__(self, request: Any, event_name: str = "", **_: Any) -> AWSResponse | None:
        operation = event_name.rpartition(".")[2]
        self.attempts += 1
        self.operations.append(operation)
        fault = self.plan(self.attempts, operation) if self.plan is not None else None
        if fault is None:
            return None
        self.injected.append((self.attempts, operation, fault.name))
        return fault.apply(request, operation)


def storage_clients() -> list[Any]:
    """Every botocore DynamoDB client the storage layer uses (created now if not yet)."""
    from chalicelib.storage import get_repository
    from chalicelib.storage.tables import ALL_MODELS

    clients = [model._get_connection().connection.client for model in ALL_MODELS]
    clients.append(get_repository().conn.client)
    clients.append(get_repository().hot_client)  # the ping ingest path's own client
    return list({id(c): c for c in clients}.values())


@contextmanager
def injected(injector: Injector, monkeypatch: Any) -> Iterator[Injector]:
    """Install `injector` on every storage client; botocore's backoff sleeps nothing and its retry quota never
    runs dry, so the tests are fast and every call gets its full number of attempts."""
    from botocore.retries import quota, standard

    monkeypatch.setattr(standard.ExponentialBackoff, "delay_amount", lambda self, context: 0.0)
    monkeypatch.setattr(quota.RetryQuota, "acquire", lambda self, amount: True)
    clients = storage_clients()
    for client in clients:
        client.meta.events.register_first("before-send.dynamodb", injector, unique_id="test-fault-injector")
    try:
        yield injector
    finally:
        injector.reset()
        for client in clients:
            client.meta.events.unregister("before-send.dynamodb", unique_id="test-fault-injector")


@contextmanager
def own_table() -> Iterator[str]:
    """Point the storage layer at a fresh table for a while (then delete it).

    In-process moto deep-copies a whole table before every transaction, its stream records included, so a
    test module that makes thousands of transactions on the session's shared, ever-growing table costs minutes
    and gigabytes. On a table of its own without a stream (nothing here runs the pipeline), each copy stays
    small, and the memory goes with the table.
    """
    import uuid

    import boto3
    from pynamodb.connection.base import MetaTable

    from chalicelib.core.config import get_settings
    from chalicelib.storage.tables import ALL_MODELS, TableItem
    from infra.local.resources import table_create_params

    settings, meta = get_settings(), TableItem.Meta
    shared = settings.table_name
    name = f"{shared}-{uuid.uuid4().hex[:8]}"
    client = boto3.client("dynamodb")
    params = table_create_params(name)
    params.pop("StreamSpecification", None)  # moto copies every stream record with the table, per transaction
    client.create_table(**params)

    def point_at(table: str) -> None:
        # pynamodb binds each model's connection to the table name; retarget the connections rather than let
        # pynamodb make new ones (a botocore client each, about half a second).
        for model in ALL_MODELS:
            connection = model._get_connection()
            known = connection.connection._tables
            if table not in known:
                known[table] = MetaTable({**connection.get_meta_table().data, "TableName": table})
            connection.table_name = table
        meta.table_name = table  # every model's Meta
        object.__setattr__(settings, "table_name", table)  # the low-level stores read it per call

    point_at(name)
    try:
        yield name
    finally:
        point_at(shared)
        client.delete_table(TableName=name)
