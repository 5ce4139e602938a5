"""The process's one botocore session, shared by the ping ingest path's client and pynamodb's.

Each botocore session parses the DynamoDB service model again on its first client (tens of ms on a cold
start), so every client is made from this one. Sessions are not thread-safe while they create clients:
`LOCK` guards every creation (`tables.share_client` holds it too). Nothing here imports pynamodb, so the
ping path can reach DynamoDB without loading it.
"""

from __future__ import annotations

import threading
from typing import Any

LOCK = threading.RLock()
_SESSION: list[Any] = []


def botocore_session() -> Any:
    """The shared session (created on first use). Call with `LOCK` held when creating a client from it."""
    with LOCK:
        if not _SESSION:
            from botocore.session import get_session

            _SESSION.append(get_session())
        return _SESSION[0]


def create_client(**kwargs: Any) -> Any:
    """A DynamoDB client from the shared session (keyword arguments as `Session.create_client`)."""
    with LOCK:
        return botocore_session().create_client("dynamodb", **kwargs)


def pin_endpoint(client: Any) -> Any:
    """Resolve the client's endpoint once per operation instead of on every request; returns the client.

    botocore evaluates DynamoDB's endpoint rule set on every call: a dozen parameters, each looked up in the
    request's context, the builtins and (for a transaction) a JMESPath over every item's TableName, about a
    sixth of a small request's CPU. For this application's clients the answer never changes between two calls
    of one operation: the region, endpoint URL, FIPS/dual-stack settings and credentials are the client's, and
    the rule set's per-request inputs (ResourceArn, ResourceArnList) are only set when a request names a table
    by ARN, which ours never do (`pin_endpoint` is only applied to clients of the table named in the settings,
    not an ARN). The resolved endpoint (URL, headers, signing properties) is only read by botocore, so sharing
    it is safe. A botocore without the rule-set resolver keeps its own path.
    """
    resolver = getattr(client, "_ruleset_resolver", None)
    if resolver is None or getattr(resolver, "_doorstep_pinned", False):
        return client
    resolve = resolver.construct_endpoint
    resolved: dict[str, Any] = {}

    def construct_endpoint(operation_model: Any, call_args: Any, request_context: Any) -> Any:
        name = operation_model.name
        endpoint = resolved.get(name)
        if endpoint is None:
            endpoint = resolved[name] = resolve(operation_model, call_args, request_context)
        return endpoint

    resolver.construct_endpoint = construct_endpoint
    resolver._doorstep_pinned = True
    return client
