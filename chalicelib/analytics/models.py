"""Edge models of delivery analytics."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, model_validator

from chalicelib.core.types import Day, Model_, QueryInt, blame

GroupBy = Literal["day", "driver", "zone"]


class DeliveriesQuery(Model_):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, defer_build=True)
    from_: Day = Field(alias="from", description="First day (YYYY-MM-DD, the merchant's time zone)")
    to: Day = Field(description="Last day, inclusive (at most 92 days after `from`)")
    group_by: GroupBy = Field(default="day", description="One row per day, per driver or per zone")
    driver_id: Annotated[str, Field(min_length=1, max_length=64)] | None = Field(
        default=None, description="Only this driver's deliveries (per day or in total)")
    limit: Annotated[QueryInt, Field(ge=1, le=500)] = 100
    cursor: Annotated[str, Field(max_length=2000)] | None = None

    @model_validator(mode="after")
    def _range(self) -> DeliveriesQuery:
        from chalicelib.analytics.rules import range_problem

        problem = range_problem(self.from_, self.to)
        if problem is not None:
            raise blame(problem[0], problem[1])
        if self.group_by == "zone" and self.driver_id is not None:
            raise blame("driver_id", "zone rows are not kept per driver: leave it out, or group by day or driver")
        return self


class FailedByReason(Model_):
    not_home: int = 0
    no_access: int = 0
    refused: int = 0
    damaged: int = 0
    other: int = 0


class EtaHonesty(Model_):
    """How the ETA shown some minutes before arrival held (from the ETA-honesty recorder)."""

    n: int
    median_abs_error_min: float | None = None
    p90_abs_error_min: float | None = None
    inside_window_share: float | None = None


class DeliveryFigures(Model_):
    group: str = Field(description="The day (YYYY-MM-DD), driver id or zone id (`none`: no zone holds the stop)")
    delivered: int
    failed: int
    failed_by_reason: FailedByReason
    returned: int
    on_time: int = Field(description="Delivered inside the promised window")
    on_time_rate: float | None = Field(description="on_time / deliveries that had a promised window")
    delivered_early: int = Field(default=0, description="Delivered before the promised window opened")
    delivered_late: int = Field(default=0, description="Delivered after the promised window closed")
    first_attempts: int = Field(description="Shipments whose first attempt falls here")
    first_attempt_success_rate: float | None
    with_proof: int
    proof_compliance_rate: float | None = Field(description="Delivered with proof / delivered")
    far_from_stop: int
    far_from_stop_rate: float | None
    hours_on_duty: float = Field(description="Shift hours (split at the merchant's midnights; an open shift's so far)")
    stops_per_hour_on_duty: float | None = Field(description="(delivered + failed) / hours_on_duty")
    ratings_count: int
    rating_average: float | None
    rating_distribution: dict[str, int] = Field(description='{"1": n, ..., "5": n}')
    comments_count: int
    eta_honesty: dict[str, EtaHonesty] | None = Field(
        default=None, description='By minutes before arrival ("30", "15", "5"), when recorded')


class DeliveriesPage(Model_):
    group_by: GroupBy
    date_from: date
    date_to: date
    time_zone: str
    items: list[DeliveryFigures]
    next_cursor: str | None = None
