"""Storage faults, translated in one place.

Every DynamoDB client the storage layer hands out (each pynamodb model's, the repository's transaction
connection, and so the low-level client the feature stores use, and the ping ingest path's `hot_client`) is
`guard`ed: two botocore event handlers look
at the final outcome of each call, after botocore's own bounded retries (standard mode; `tables.py` sets the
attempts), and raise `StorageUnavailable` (a `DomainError`, which the HTTP edge answers as 503 with
`Retry-After` and the JSON error shape) for what is transient:

- a read or connect timeout, a refused or dropped connection (`after-call-error`);
- throttling (`ProvisionedThroughputExceededException`, `ThrottlingException`, `RequestLimitExceeded`, ...)
  and any DynamoDB 5xx (`after-call`);
- a cancelled transaction whose reasons are only capacity, throttling or `TransactionConflict`.

Everything else passes through unchanged: a conditional check failure (alone or in a cancelled transaction) is
business logic the repository handles; a validation error or a missing table is a defect and stays a 500.

The handlers raise instead of botocore, so pynamodb never wraps these in `PutError` / `GetError` /
`TransactWriteError` and no caller has to dig in `exc.cause` (which is not a `ClientError` for a timeout).
"""

from __future__ import annotations

import weakref
from typing import Any

from chalicelib.core.errors import DomainError, ErrorKind
from chalicelib.core.observability import MetricUnit, logger, metrics

# Error codes that mean "try again later", whatever the operation.
TRANSIENT_CODES = frozenset({
    "ProvisionedThroughputExceededException", "ThrottlingException", "Throttling", "RequestLimitExceeded",
    "LimitExceededException", "TransactionInProgressException", "InternalServerError", "InternalFailure",
    "ServiceUnavailable", "ServiceUnavailableException", "RequestTimeout", "RequestTimeoutException",
    "ReplicatedWriteConflictException",
})
THROTTLE_CODES = frozenset({
    "ProvisionedThroughputExceededException", "ThrottlingException", "Throttling", "RequestLimitExceeded",
    "LimitExceededException", "TransactionInProgressException",
})
# Cancellation reasons of TransactWriteItems that a retry can cure ("None" marks an item that did not fail).
TRANSIENT_REASONS = frozenset({"TransactionConflict", "ProvisionedThroughputExceeded", "ThrottlingError"})

RETRY_AFTER_THROTTLED_S = 1  # capacity comes back within a second or two
RETRY_AFTER_UNREACHABLE_S = 3  # a timeout or a 5xx: give the storage a moment


class StorageUnavailable(DomainError):
    """DynamoDB timed out, throttled or failed after botocore's retries; the caller may retry the same request
    (nothing was reported as stored; every write path is idempotent or conditional)."""

    def __init__(self, detail: str, retry_after_s: int = RETRY_AFTER_THROTTLED_S) -> None:
        super().__init__(ErrorKind.UNAVAILABLE, "service_unavailable",
                         "Storage is busy; retry the same request, it is idempotent.", retry_after_s=retry_after_s)
        self.detail = detail

    def __str__(self) -> str:
        return self.detail


def fault_of_error(status: int, parsed: dict[str, Any]) -> StorageUnavailable | None:
    """The StorageUnavailable an error answer (HTTP status and parsed body) stands for, or None to let it through."""
    code = str((parsed.get("Error") or {}).get("Code") or "")
    if code == "TransactionCanceledException":
        reasons = [str(r.get("Code")) for r in parsed.get("CancellationReasons") or [] if isinstance(r, dict)]
        failed = {r for r in reasons if r not in ("None", "")}
        if failed and failed <= TRANSIENT_REASONS:
            return StorageUnavailable(f"transaction cancelled: {', '.join(sorted(failed))}",
                                      RETRY_AFTER_THROTTLED_S)
        return None
    if code in THROTTLE_CODES or status == 429:
        return StorageUnavailable(f"throttled: {code or status}", RETRY_AFTER_THROTTLED_S)
    if code in TRANSIENT_CODES or status >= 500:
        return StorageUnavailable(f"storage error: {code or status}", RETRY_AFTER_UNREACHABLE_S)
    return None


def fault_of_exception(exception: BaseException) -> StorageUnavailable | None:
    """The StorageUnavailable a transport failure stands for (timeouts, refused or dropped connections)."""
    from botocore.exceptions import ConnectionError as BotocoreConnectionError
    from botocore.exceptions import HTTPClientError

    if isinstance(exception, (BotocoreConnectionError, HTTPClientError)):
        return StorageUnavailable(f"storage unreachable: {type(exception).__name__}", RETRY_AFTER_UNREACHABLE_S)
    return None


def _raise(fault: StorageUnavailable, operation: str, cause: BaseException | None = None) -> None:
    metrics.add_metric(name="StorageUnavailable", unit=MetricUnit.Count, value=1)
    logger.warning("storage unavailable", extra={"operation": operation, "fault": fault.detail})
    raise fault from cause


def _after_call(http_response: Any, parsed: dict[str, Any], model: Any, **_: Any) -> None:
    status = int(getattr(http_response, "status_code", 200) or 200)
    if status < 300:
        return
    fault = fault_of_error(status, parsed)
    if fault is not None:
        _raise(fault, getattr(model, "name", "?"))


def _after_call_error(exception: BaseException, event_name: str = "", **_: Any) -> None:
    fault = fault_of_exception(exception)
    if fault is not None:
        _raise(fault, event_name.rpartition(".")[2], exception)


_GUARDED: weakref.WeakSet[Any] = weakref.WeakSet()


def guard(client: Any) -> Any:
    """Register the translation on a botocore DynamoDB client (once; cheap to call again). Returns the client."""
    if client not in _GUARDED:
        client.meta.events.register("after-call.dynamodb", _after_call, unique_id="doorstep-storage-faults")
        client.meta.events.register("after-call-error.dynamodb", _after_call_error,
                                    unique_id="doorstep-storage-faults-error")
        _GUARDED.add(client)
    return client

