"""What the protocol adapters share: number and time parsing, and the one validation of a fix.

The adapters only *translate*: they rename fields, convert units, turn the
protocol's time forms into RFC 3339, and coerce numbers that arrive as strings.
Whether a value is acceptable (a number, in range, finite) is decided by
`chalicelib.models.parse_ping`, the validator of the native ping API, called
once per fix by `NativeItem.check`. A value the adapter cannot translate
(e.g. `lat=abc`) is passed through untouched so that the validator refuses it,
and the refusal is renamed to the protocol's field name (`lon`, not `lng`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime

from chalicelib.core.errors import DomainError, ErrorKind, FieldProblem
from chalicelib.core.times import from_ms, to_ms
from chalicelib.core.types import EARLIEST, LATEST
from chalicelib.ingest.models import parse_ping
from chalicelib.ingest.rules import Fix, ItemResult

# Bodies above this are refused before parsing (the HTTP layer has its own, larger, cap).
MAX_BODY_BYTES = 256 * 1024
# Same cap as the native batch (PingBatch.pings max_length).
MAX_FIXES_PER_REQUEST = 500

KNOT_MPS = 1852.0 / 3600.0
KMH_MPS = 1.0 / 3.6

# Epoch values below 2**31 - 1 are seconds, others milliseconds: Traccar's OsmAnd decoder rule.
_EPOCH_SECONDS_BELOW = 2**31 - 1
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_INTEGER = re.compile(r"[+-]?\d+")
# ISO 8601 / RFC 3339 with "T", or Traccar's "yyyy-MM-dd HH:mm:ss" (a space); optional fraction and offset.
_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|z|[+-]\d{2}(?::?\d{2})?)?")
# Traccar's 12-digit device time ddMMyyHHmmss (UTC), tried before epoch numbers like Traccar does.
_DEVICE_TIME = re.compile(r"\d{12}")
_LOST_PLUS = re.compile(r"^(\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?) (\d{2}(?::?\d{2})?)$")


def bad_request(field_name: str, reason: str, message: str | None = None) -> DomainError:
    """The 400 every adapter answers for a request it cannot use, naming the field."""
    return DomainError(ErrorKind.MALFORMED, "bad_request", message or f"Invalid request: {field_name}: {reason}",
                    [FieldProblem(field_name, reason)])


def payload_too_large() -> DomainError:
    return DomainError(ErrorKind.TOO_LARGE, "payload_too_large", f"The request body exceeds {MAX_BODY_BYTES} bytes.",
                    [FieldProblem("body", f"at most {MAX_BODY_BYTES} bytes")])


def as_bytes(body: bytes | str | None) -> bytes:
    if body is None:
        return b""
    data = body.encode() if isinstance(body, str) else bytes(body)
    if len(data) > MAX_BODY_BYTES:
        raise payload_too_large()
    return data


def number(value: object) -> object:
    """A float for numbers and numeric strings; anything else comes back unchanged for the validator to refuse.

    Booleans are not numbers here (JSON `true` is not 1). "nan"/"inf" strings are not numeric;
    a float NaN passes through and the validator refuses it as not finite.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        if _NUMBER.fullmatch(text):
            return float(text)
    return value


def scaled(value: object, factor: float, *, negative_is_unknown: bool = True) -> object:
    """`number(value) * factor`; None when the protocol's "unknown" sentinel (a negative) is sent."""
    n = number(value)
    if isinstance(n, float):
        if negative_is_unknown and n < 0:
            return None
        return n * factor if factor != 1.0 else n
    return n


def epoch_to_ms(value: int | float) -> int:
    """Epoch seconds below 2**31-1, else epoch milliseconds (Traccar's rule), as integer milliseconds."""
    if isinstance(value, int):
        return value * 1000 if abs(value) < _EPOCH_SECONDS_BELOW else value
    if not math.isfinite(value):
        raise ValueError("not a finite number")
    return math.floor(value * 1000) if abs(value) < _EPOCH_SECONDS_BELOW else math.floor(value)


def parse_time_ms(value: object) -> int:
    """A protocol timestamp as epoch milliseconds.

    Accepted: epoch seconds, epoch milliseconds (numbers or numeric strings; >= 2**31-1 means ms),
    ISO 8601 / RFC 3339 (`2016-01-27T18:55:47Z`, with fraction and offset), and `yyyy-MM-dd HH:mm:ss`.
    A date-time without an offset is taken as UTC (Traccar uses its server's zone; Lambda's is UTC).
    Also Traccar's 12-digit device time `ddMMyyHHmmss` (UTC). Raises ValueError with the reason.
    """
    if isinstance(value, bool) or value is None:
        raise ValueError("expected epoch seconds or milliseconds, ISO 8601, or yyyy-MM-dd HH:mm:ss")
    if isinstance(value, int | float):
        return epoch_to_ms(value)
    if not isinstance(value, str):
        raise ValueError("expected epoch seconds or milliseconds, ISO 8601, or yyyy-MM-dd HH:mm:ss")
    text = value.strip()
    if _DEVICE_TIME.fullmatch(text):
        try:
            return to_ms(datetime.strptime(text, "%d%m%y%H%M%S"))
        except ValueError:
            pass  # not a valid ddMMyyHHmmss: an epoch number, as Traccar falls back
    if _INTEGER.fullmatch(text):
        return epoch_to_ms(int(text))
    if _NUMBER.fullmatch(text):
        return epoch_to_ms(float(text))
    # An offset "+02:00" sent unencoded in a query string arrives as " 02:00".
    text = _LOST_PLUS.sub(r"\1+\2", text)
    if _DATETIME.fullmatch(text):
        try:
            return to_ms(datetime.fromisoformat(text.replace("z", "Z")))
        except ValueError as exc:
            raise ValueError(f"not a valid date-time: {exc}") from None
    raise ValueError("expected epoch seconds or milliseconds, ISO 8601, or yyyy-MM-dd HH:mm:ss")


_EARLIEST_MS = to_ms(EARLIEST)
_LATEST_MS = to_ms(LATEST)


def parse_event_time_ms(value: object) -> int:
    """`parse_time_ms` for a time that is not a fix (an OwnTracks transition's `tst`, `wtst`): also within the
    range every edge time must be in (1970 to 2099), as a fix's time is through the fix validator."""
    ms = parse_time_ms(value)
    if not _EARLIEST_MS <= ms < _LATEST_MS:
        raise ValueError("outside 1970-01-01 to 2099-12-31")
    return ms


def rfc3339(ms: int) -> str:
    """Epoch ms as the native API's `fix_time` (RFC 3339, UTC, millisecond precision)."""
    try:
        moment = from_ms(ms)
    except (OverflowError, OSError, ValueError):
        raise ValueError("outside the representable date range") from None
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


@dataclass(slots=True)
class NativeItem:
    """One fix being translated into the native ping shape (`PingIn`), remembering where each value came from."""

    values: dict[str, object] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)  # native field -> the protocol's field
    notes: dict[str, str] = field(default_factory=dict)  # native field -> unit conversion, told in refusals
    error: tuple[str, str] | None = None  # a refusal the adapter already decided (protocol field, reason)

    def put(self, native: str, protocol: str, value: object, note: str | None = None) -> None:
        self.names[native] = protocol  # also when absent: "lon: Field required", not "lng"
        if value is None:
            return
        self.values[native] = value
        if note and isinstance(value, float):
            self.notes[native] = note

    def put_time(self, protocol: str, raw: object, default_ms: int | None) -> None:
        """`fix_time` from the protocol's timestamp, or `default_ms` (the receive time) when absent."""
        if raw is None or raw == "":
            if default_ms is None:
                self.fail(protocol, "required")
                return
            ms = default_ms
        else:
            try:
                ms = parse_time_ms(raw)
            except ValueError as exc:
                self.fail(protocol, str(exc))
                return
        try:
            self.values["fix_time"] = rfc3339(ms)
        except ValueError as exc:
            self.fail(protocol, str(exc))
            return
        self.names["fix_time"] = protocol

    def fail(self, protocol: str, reason: str) -> None:
        if self.error is None:
            self.error = (protocol, reason)

    def check(self, index: int) -> Fix | ItemResult:
        """Validate with the native validator; a refusal names the protocol's field."""
        if self.error is not None:
            return ItemResult(index, "rejected", None, self.error[0], self.error[1])
        result = parse_ping(index, self.values)
        if isinstance(result, Fix):
            return result
        native = (result.field or "item").split(".")[0]
        reason = result.reason or "invalid"
        if native in self.notes:
            reason = f"{reason} ({self.notes[native]})"
        return ItemResult(index, "rejected", None, self.names.get(native, native), reason)


def refusal(results: list[ItemResult], message: str) -> DomainError:
    return DomainError(ErrorKind.MALFORMED, "bad_request", message,
                    [FieldProblem(r.field or "item", r.reason or "invalid") for r in results])
