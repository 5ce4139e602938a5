"""Edge models of driver reports: queries, rows, pages and the merchant's report settings."""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, ValidationInfo, field_validator

from chalicelib.core.types import Day, Model_, QueryInt, Strict_

MAX_REPORT_DAYS = 92  # a quarter: the longest range one report request covers
_ISO_WEEK = re.compile(r"^(\d{4})-W(\d{2})$")

BehaviourKindName = Literal["speeding", "harsh_braking", "harsh_acceleration", "long_idle"]


def _range(value: date | None, info: ValidationInfo) -> date | None:
    start = info.data.get("from_")
    if value is not None and start is not None and not start <= value < start + timedelta(days=MAX_REPORT_DAYS):
        raise ValueError(f"must be on or after from and less than {MAX_REPORT_DAYS} days after it")
    return value


class ReportQuery(Model_):
    """Local days of the merchant's time zone (its settings' `time_zone`), both included. Without `to`: `from`
    and the 6 days after it, or the last 7 days up to today."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    from_: Day | None = Field(default=None, alias="from", description="First local day, YYYY-MM-DD")
    to: Day | None = Field(default=None, description=f"Last local day, YYYY-MM-DD (at most {MAX_REPORT_DAYS - 1} "
                                                     "days after from)")
    limit: Annotated[QueryInt, Field(ge=1, le=500)] = 100
    cursor: Annotated[str, Field(max_length=2000)] | None = None

    _to_in_range = field_validator("to")(_range)


class SummaryQuery(Model_):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    from_: Day | None = Field(default=None, alias="from", description="First local day, YYYY-MM-DD")
    to: Day | None = Field(default=None, description=f"Last local day, YYYY-MM-DD (at most {MAX_REPORT_DAYS - 1} "
                                                     "days after from)")

    _to_in_range = field_validator("to")(_range)


class BehaviourQuery(ReportQuery):
    kind: BehaviourKindName | None = Field(default=None, description="Only this kind")


class ScorecardQuery(Model_):
    model_config = ConfigDict(extra="forbid")
    week: str | None = Field(default=None, description="ISO week, YYYY-Www (e.g. 2026-W49), in the merchant's "
                                                       "time zone; default: the current week")
    limit: Annotated[QueryInt, Field(ge=1, le=100)] = 100
    cursor: Annotated[str, Field(max_length=2000)] | None = None

    @field_validator("week")
    @classmethod
    def _iso_week(cls, value: str | None) -> str | None:
        if value is None:
            return None
        match = _ISO_WEEK.fullmatch(value)
        if not match:
            raise ValueError("must be an ISO week as YYYY-Www")
        try:
            date.fromisocalendar(int(match[1]), int(match[2]), 1)
        except ValueError:
            raise ValueError("no such ISO week") from None
        if not 1970 <= int(match[1]) <= 2099:
            raise ValueError("must be between 1970 and 2099")
        return value


class TripOut(Model_):
    start_at: datetime
    end_at: datetime
    start_lat: float
    start_lng: float
    end_lat: float
    end_lng: float
    distance_m: float
    driving_s: float
    max_speed_kmh: float
    average_speed_kmh: float


class StopOut(Model_):
    start_at: datetime
    end_at: datetime
    lat: float
    lng: float
    duration_s: float


class BehaviourEventOut(Model_):
    kind: BehaviourKindName
    at: datetime
    lat: float
    lng: float
    value: float = Field(description="km/h for speeding (the episode's top speed when it fired), g for harsh "
                                     "braking/acceleration, minutes for long idle")
    threshold: float


class TripPage(Model_):
    items: list[TripOut]
    next_cursor: str | None = None


class StopPage(Model_):
    items: list[StopOut]
    next_cursor: str | None = None


class BehaviourEventPage(Model_):
    items: list[BehaviourEventOut]
    next_cursor: str | None = None


class BehaviourCounts(Model_):
    speeding: int = 0
    harsh_braking: int = 0
    harsh_acceleration: int = 0
    long_idle: int = 0


class DaySummaryOut(Model_):
    day: date
    distance_m: float
    driving_s: float
    stopped_s: float
    trips: int
    stops: int
    max_speed_kmh: float
    hours_on_duty: float = Field(description="Ended shifts (the app's start/end shift, a route's start and end) "
                                             "and the current one, split at local midnight")
    behaviour: BehaviourCounts


class DriverSummary(Model_):
    driver_id: str
    time_zone: str
    days: list[DaySummaryOut]


class ScorecardRow(Model_):
    driver_id: str
    name: str
    distance_km: float
    driving_hours: float
    hours_on_duty: float = Field(description="Ended shifts counted by the week they touched")
    trips: int
    stops: int
    behaviour: BehaviourCounts
    events_per_100km: float | None = Field(description="Weighted behaviour events per 100 km (long idle 0.5)")
    score: int | None = Field(description="100 minus 10 per weighted event per 100 km, floored at 0; null under "
                                          "10 km driven")


class Scorecard(Model_):
    week: str
    items: list[ScorecardRow]
    next_cursor: str | None = None


class ReportSettings(Strict_):
    """Thresholds of the driver reports (PUT replaces them all; absent fields take their defaults)."""

    speeding_kmh: Annotated[float, Field(ge=20, le=200, allow_inf_nan=False)] = 90.0
    speeding_seconds: Annotated[float, Field(ge=0, le=600, allow_inf_nan=False)] = 20.0
    harsh_braking_g: Annotated[float, Field(ge=0.1, le=1.0, allow_inf_nan=False)] = 0.45
    harsh_acceleration_g: Annotated[float, Field(ge=0.1, le=1.0, allow_inf_nan=False)] = 0.40
    long_idle_minutes: Annotated[float, Field(ge=1, le=480, allow_inf_nan=False)] = 15.0


def settings_dict(settings: ReportSettings) -> dict[str, Any]:
    return settings.model_dump()
