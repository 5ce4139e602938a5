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
