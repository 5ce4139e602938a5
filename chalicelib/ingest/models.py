"""Edge models of ping batches and their per-item results."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import (
    ConfigDict,
    Field,
    Strict,
    ValidationError,
)

from chalicelib.core.json_input import value_problems
from chalicelib.core.times import to_ms
from chalicelib.core.types import EARLIEST, LATEST, FixTime, Latitude, Longitude, Model_
from chalicelib.ingest.rules import Fix, ItemResult


class PingIn(Model_):
    """One fix from a driver's phone. Unknown fields are ignored for forward compatibility."""

    model_config = ConfigDict(extra="ignore")

    lat: Latitude
    lng: Longitude
    fix_time: FixTime = Field(description="When the fix was taken: RFC 3339 with offset, or epoch s/ms")
    accuracy: Annotated[float, Strict(), Field(ge=0, le=100_000, allow_inf_nan=False)] | None = Field(
        default=None, description="Horizontal accuracy radius, metres"
    )
    speed: Annotated[float, Strict(), Field(ge=0, le=150, allow_inf_nan=False)] | None = Field(
        default=None, description="m/s"
    )
    heading: Annotated[float, Strict(), Field(ge=0, le=360, allow_inf_nan=False)] | None = Field(
        default=None, description="degrees clockwise from north"
    )
    altitude: Annotated[float, Strict(), Field(ge=-1000, le=20_000, allow_inf_nan=False)] | None = Field(
        default=None, description="metres above WGS84 ellipsoid"
    )
    battery: Annotated[float, Strict(), Field(ge=0, le=100, allow_inf_nan=False)] | None = Field(
        default=None, description="percent"
    )


def parse_ping(index: int, raw: object) -> Fix | ItemResult:
    """Validate one item of a batch; a bad item becomes a per-item rejection naming the field.

    The item's values are screened first (`chalicelib.core.json_input`: text, integer and float ranges DynamoDB
    can store), here rather than for the whole body, so that one bad item is refused alone.
    """
    screened = value_problems(raw)
    if screened:
        return ItemResult(index, "rejected", None, screened[0].field, screened[0].reason)
    fast = fast_fix(raw)
    if fast is not None:
        return fast
    try:
        ping = PingIn.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "item"
        return ItemResult(index, "rejected", None, where, first["msg"])
    return Fix(ping.lat, ping.lng, to_ms(ping.fix_time), ping.accuracy, ping.speed,
               ping.heading, ping.altitude, ping.battery)


# A fix time as phones send it: UTC with "Z" and at most microseconds. Other forms go through pydantic.
_PLAIN_UTC = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))?Z")
_OPTIONAL_RANGES = (("accuracy", 0.0, 100_000.0), ("speed", 0.0, 150.0), ("heading", 0.0, 360.0),
                    ("altitude", -1000.0, 20_000.0), ("battery", 0.0, 100.0))
_EARLIEST_MS = to_ms(EARLIEST)
_LATEST_MS = to_ms(LATEST)


def fast_fix(raw: object) -> Fix | None:
    """The Fix of an item that is plainly valid (floats in range, an RFC 3339 UTC fix time), else None.

    `PingIn.model_validate` costs more than the rest of a ping's screening; this path accepts only what
    `PingIn` accepts with the same value (a property test checks it on random items), and hands everything
    else (ints, epoch times, offsets, anything out of range) to pydantic, which decides and words the errors.
    """
    if type(raw) is not dict:
        return None
    lat, lng, fix_time = raw.get("lat"), raw.get("lng"), raw.get("fix_time")
    if type(lat) is not float or type(lng) is not float or type(fix_time) is not str:
        return None
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lng <= 180.0):
        return None  # NaN too
    matched = _PLAIN_UTC.fullmatch(fix_time)
    if matched is None:
        return None
    year, month, day, hour, minute, second, fraction = matched.groups()
    try:
        moment = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second),
                          int(fraction.ljust(6, "0")) if fraction else 0, tzinfo=UTC)
    except ValueError:
        return None
    fix_ms = to_ms(moment)
    if not _EARLIEST_MS <= fix_ms < _LATEST_MS:
        return None
    optional: list[float | None] = []
    for name, low, high in _OPTIONAL_RANGES:
        value = raw.get(name)
        if value is not None and (type(value) is not float or not low <= value <= high):
            return None
        optional.append(value)
    return Fix(lat, lng, fix_ms, *optional)


class PingBatch(Model_):
    pings: Annotated[list[PingIn], Field(min_length=1, max_length=500)]


class PingItemResult(Model_):
    index: int
    status: Literal["accepted", "duplicate", "rejected"]
    field: str | None = None
    reason: str | None = None


class PingBatchResult(Model_):
    accepted: int
    duplicates: int
    rejected: int
    items: list[PingItemResult]
