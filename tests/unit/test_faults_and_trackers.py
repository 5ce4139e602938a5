"""Pure parts of issue 12: which DynamoDB answers are storage faults, device-id entropy, log redaction,
transaction tokens."""

from __future__ import annotations

import secrets

import pytest
from botocore.exceptions import (
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ParamValidationError,
    ReadTimeoutError,
)

from chalicelib.core.errors import ErrorKind
from chalicelib.fleet.rules import (
    DEVICE_ID_MIN_BITS,
    TRACKER_FAILURES,
    device_id_problem,
    estimated_bits,
    generate_device_id,
)
from chalicelib.storage.faults import fault_of_error, fault_of_exception
from infra.local.redact import redact_line


def error(code: str, status: int = 400, reasons: tuple[str, ...] = ()) -> dict[str, object]:
    parsed: dict[str, object] = {"Error": {"Code": code, "Message": "x"}}
    if reasons:
        parsed["CancellationReasons"] = [{"Code": r} for r in reasons]
    return parsed


@pytest.mark.parametrize(("code", "status"), [
    ("ProvisionedThroughputExceededException", 400), ("ThrottlingException", 400), ("RequestLimitExceeded", 400),
    ("InternalServerError", 500), ("ServiceUnavailable", 503), ("TransactionInProgressException", 400),
    ("", 502), ("SomethingNew", 500)])
def test_throttles_and_5xx_are_storage_unavailable(code: str, status: int) -> None:
    fault = fault_of_error(status, error(code))
    assert fault is not None and fault.kind is ErrorKind.UNAVAILABLE and fault.retry_after_s


@pytest.mark.parametrize("reasons", [("TransactionConflict", "None"), ("None", "ThrottlingError"),
                                     ("ProvisionedThroughputExceeded",), ("TransactionConflict", "ThrottlingError")])
def test_transactions_cancelled_for_capacity_or_conflict_are_unavailable(reasons: tuple[str, ...]) -> None:
    assert fault_of_error(400, error("TransactionCanceledException", reasons=reasons)) is not None


@pytest.mark.parametrize(("code", "reasons"), [
    ("TransactionCanceledException", ("ConditionalCheckFailed", "None")),
    ("TransactionCanceledException", ("ConditionalCheckFailed", "TransactionConflict")),  # a real condition wins
    ("TransactionCanceledException", ("ValidationError",)), ("ConditionalCheckFailedException", ()),
    ("ValidationException", ()), ("ResourceNotFoundException", ()), ("IdempotentParameterMismatchException", ())])
def test_conditions_and_defects_pass_through(code: str, reasons: tuple[str, ...]) -> None:
    assert fault_of_error(400, error(code, reasons=reasons)) is None


def test_timeouts_and_dropped_connections_are_unavailable_other_client_errors_are_not() -> None:
    for exc in (ReadTimeoutError(endpoint_url="http://x"), ConnectTimeoutError(endpoint_url="http://x"),
                EndpointConnectionError(endpoint_url="http://x"), ConnectionClosedError(endpoint_url="http://x")):
        assert fault_of_exception(exc) is not None, exc
    for other in (NoCredentialsError(), ParamValidationError(report="bad"), ValueError("x")):
        assert fault_of_exception(other) is None, other


def test_generated_device_ids_carry_100_bits_and_pass_the_rule() -> None:
    ids = {generate_device_id() for _ in range(2000)}
    assert len(ids) == 2000
    for device_id in list(ids)[:200]:
        assert device_id_problem(device_id) is None
        assert len(device_id) == 24 and device_id.count("-") == 4


@pytest.mark.parametrize("weak", ["1234", "123456", "356938035643809", "phone-12345", "a" * 40, "ab" * 20,
                                  "0123456789abcdef0123", "driver-1-phone", "ABCDEFGHIJKLMNOP", "0000-1111-2222-3333"])
def test_short_or_patterned_ids_are_refused(weak: str) -> None:
    assert device_id_problem(weak) is not None


def test_random_ids_of_96_bits_are_accepted() -> None:
    assert device_id_problem(secrets.token_hex(12)) is None  # 24 hex digits = 96 bits
    assert device_id_problem(secrets.token_urlsafe(16)) is None  # 128 bits
    assert device_id_problem("dtk_" + secrets.token_urlsafe(32)) is None  # a driver token
    assert estimated_bits(secrets.token_hex(12)) == DEVICE_ID_MIN_BITS


def test_the_failure_window_is_fixed_and_aligned() -> None:
    start, end = TRACKER_FAILURES.window(1_800_000_123)
    assert start % TRACKER_FAILURES.window_s == 0 and end - start == TRACKER_FAILURES.window_s
    assert start <= 1_800_000_123 < end


@pytest.mark.parametrize(("line", "kept", "hidden"), [
    ('127.0.0.1 - - "GET /osmand?id=dtk_SECRET&lat=1&lon=2 HTTP/1.1" 200 -', "GET /osmand?", "SECRET"),
    ('"POST /osmand/?deviceid=SECRET HTTP/1.1" 400', "/osmand/?", "SECRET"),
    ('"GET /?deviceid=SECRET&lat=1 HTTP/1.1" 404', "lat=1", "SECRET"),
    ('"GET /v1/track/SECRET HTTP/1.1" 200', "/v1/track/", "SECRET"),
    ('"GET /track/SECRET/status HTTP/1.1" 200', "/track/", "SECRET"),
    ('"GET /driver/SECRET HTTP/1.1" 200', "/driver/", "SECRET"),
    ('"GET /x?a=1&token=SECRET HTTP/1.1" 200', "a=1", "SECRET"),
])
def test_log_lines_lose_their_secrets(line: str, kept: str, hidden: str) -> None:
    redacted = redact_line(line)
    assert kept in redacted and hidden not in redacted and "<redacted>" in redacted


def test_the_driver_api_path_is_not_a_secret() -> None:
    line = '"POST /v1/driver/pings HTTP/1.1" 200'
    assert redact_line(line) == line


def test_transaction_tokens_follow_the_items() -> None:
    from chalicelib.storage.repository import transaction_token

    items = [{"Put": {"TableName": "t", "Item": {"PK": {"S": "a"}}}}]
    same = [{"Put": {"Item": {"PK": {"S": "a"}}, "TableName": "t"}}]
    other = [{"Put": {"TableName": "t", "Item": {"PK": {"S": "b"}}}}]
    assert transaction_token(items) == transaction_token(same)  # key order does not matter
    assert transaction_token(items) != transaction_token(other)
    assert 1 <= len(transaction_token(items)) <= 36
