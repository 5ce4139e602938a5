"""Edge models of the driver web app: links and today's route."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import (
    Field,
    Strict,
)

from chalicelib.core.types import Location, Model_, Strict_
from chalicelib.driver_app.rules import DEFAULT_EXPIRES_HOURS, MAX_EXPIRES_HOURS
from chalicelib.recipient.models import EtaWindow
from chalicelib.shipments.lifecycle import ShipmentStatus
from chalicelib.shipments.models import Address, TimeWindow


class DriverAppLinkCreate(Strict_):
    expires_in_hours: Annotated[int, Strict(), Field(ge=1, le=MAX_EXPIRES_HOURS)] = Field(
        default=DEFAULT_EXPIRES_HOURS, description=f"How long the link works (1 to {MAX_EXPIRES_HOURS} hours)")


class DriverAppLink(Model_):
    driver_id: str
    url: str = Field(description="The driver's web app; send it to the driver's phone. Shown once, never stored")
    expires_at: datetime


class StopInstructions(Model_):
    """What the recipient asked for on the tracking page."""

    gate_code: str | None = None
    leave_at_door: bool = False
    note: str | None = None


class DriverStop(Model_):
    sequence: int
    shipment_id: str
    status: ShipmentStatus
    is_next: bool = Field(description="The first stop in route order still to be served")
    recipient_first_name: str
    address: Address
    location: Location
    time_window: TimeWindow | None = None
    eta: EtaWindow | None = Field(default=None, description="While out for delivery or approaching")
    instructions: str | None = Field(default=None, description="The merchant's instructions")
    recipient_instructions: StopInstructions | None = None
    requirements: list[str] = Field(default_factory=list, description="What a delivery needs: photo, signature, "
                                    "recipient_name, pin, parcel_scan, age_verified (the app asks before it finishes)")
    parcels: list[str] = Field(default_factory=list, description="The barcodes to scan (parcel_scan)")


class DriverRouteInfo(Model_):
    id: str
    status: Literal["planned", "active", "completed"]
    planned_start: datetime
    started_at: datetime | None = None


class DriverRouteView(Model_):
    """The driver's route of today (in the merchant's time zone) with its stops in order."""

    day: date
    time_zone: str
    driver_id: str
    route: DriverRouteInfo | None = Field(description="None when the driver has no route today")
    next_shipment_id: str | None = None
    stops: list[DriverStop]
