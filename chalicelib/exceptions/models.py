"""Edge models of the exception queue."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field

from chalicelib.core.types import Model_, QueryInt, Strict_

ExceptionKindName = Literal["late", "failed_attempt", "driver_offline", "delivered_far", "long_stop", "route_behind",
                            "zone_rule", "parcel_mismatch"]
ExceptionStateName = Literal["open", "acknowledged", "resolved"]


class ExceptionQuery(Model_):
    model_config = ConfigDict(extra="forbid")
    state: ExceptionStateName = Field(default="open", description="The queue to list (default: open)")
    kind: ExceptionKindName | None = Field(default=None, description="Only this kind")
    limit: Annotated[QueryInt, Field(ge=1, le=100)] = 50
    cursor: Annotated[str, Field(max_length=2000)] | None = None


class ExceptionAction(Strict_):
    """Acknowledge or resolve, with an optional note kept on the exception."""

    note: Annotated[str, Field(max_length=500)] | None = None


class ExceptionOut(Model_):
    id: str
    kind: ExceptionKindName
    state: ExceptionStateName
    driver_id: str | None = None
    shipment_id: str | None = None
    route_id: str | None = None
    opened_at: datetime
    acknowledged_at: datetime | None = None
    acknowledged_by: str | None = Field(default=None, description="api_key:<prefix>, console:<user> or system")
    resolved_at: datetime | None = None
    resolved_by: str | None = None
    summary: str
    details: dict[str, Any] = Field(default_factory=dict)
    note: str | None = None


class ExceptionPage(Model_):
    items: list[ExceptionOut]
    next_cursor: str | None = None
