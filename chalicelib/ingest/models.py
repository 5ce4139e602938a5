"""Edge models of ping batches and their per-item results."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    ConfigDict,
    Field,
    Strict,
    ValidationError,
)

from chalicelib.core.json_input import value_problems
from chalicelib.core.times import to_ms
from chalicelib.core.types import FixTime, Latitude, Longitude, Model_
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
    try:
        ping = PingIn.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "item"
        return ItemResult(index, "rejected", None, where, first["msg"])
    return Fix(ping.lat, ping.lng, to_ms(ping.fix_time), ping.accuracy, ping.speed,
               ping.heading, ping.altitude, ping.battery)


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
