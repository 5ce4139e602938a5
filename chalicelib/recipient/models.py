"""The recipient's tracking view (JSON)."""

from __future__ import annotations

from datetime import date, datetime

from pydantic import (
    Field,
)

from chalicelib.core.types import Location, Model_
from chalicelib.shipments.lifecycle import ShipmentStatus
from chalicelib.shipments.models import TimeWindow


class TrackingShipment(Model_):
    """What a recipient may see: no phone, email, street address or surname."""

    recipient_first_name: str
    city: str
    delivery_date: date
    time_window: TimeWindow | None = None
    location: Location


class DriverMarker(Model_):
    lat: float
    lng: float
    fix_time: datetime
    accuracy: float | None = None


class TrackingEvent(Model_):
    """In the one timeline order (docs/eta.md, "One clock"): created first, then by when it happened."""

    type: str
    status: ShipmentStatus | None = None
    occurred_at: datetime = Field(description="When it happened, never before the shipment's creation nor its "
                                              "delivery attempt's start")
    recorded_at: datetime | None = Field(default=None, description="When Doorstep recorded it")


class EtaWindow(Model_):
    """An estimate as people are shown it (docs/eta.md, "The window people see"): at most 2 h wide and within
    one local day; when the expected arrival left the day, `later_today` is true and the times are null."""

    expected: datetime | None
    earliest: datetime | None
    latest: datetime | None
    later_today: bool = Field(default=False, description="The estimate left the local day: say 'later today', "
                                                         "show no times")
    time_zone: str | None = Field(default=None, description="IANA zone the window is meant to be read in")
    zone_label: str | None = Field(default=None, description="The zone's abbreviation at the window, e.g. CST")
    early: bool = Field(default=False, description="The expected arrival is before the promised window opens "
                                                   "(the merchant's drivers deliver early)")


class TrackingView(Model_):
    status: ShipmentStatus
    eta: EtaWindow | None = Field(default=None, description="Present while the shipment is on its way")
    shipment: TrackingShipment
    stops_before: int | None = Field(default=None, description="Stops still to be served before this one (while "
                                                                "out for delivery)")
    driver: DriverMarker | None = Field(description="Present only while out for delivery and this stop is next "
                                                    "(or within the merchant's driver_visible_stops)")
    timeline: list[TrackingEvent]
