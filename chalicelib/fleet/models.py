"""Edge models of drivers, merchant settings, zones and positions."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import (
    ConfigDict,
    Field,
    Strict,
    model_validator,
)

from chalicelib.core.types import (
    ClockTime,
    E164Phone,
    Email,
    FenceRadius,
    HexColour,
    HttpsUrl,
    LocaleTag,
    Model_,
    QueryInt,
    ShortText,
    Strict_,
    TimeZoneName,
    blame,
    patch_model,
)
from chalicelib.custody.models import CompletionRequirements
from chalicelib.geo.cells import MAX_NEARBY_RADIUS_M


class DriverCreate(Strict_):
    name: ShortText
    phone: E164Phone | None = None
    external_ref: Annotated[str, Field(max_length=100)] | None = None


class DriverOut(Model_):
    id: str
    name: str
    phone: str | None = None
    external_ref: str | None = None
    created_at: datetime


class DriverWithToken(DriverOut):
    token: str = Field(description="The driver's bearer token. Shown once; only its hash is stored.")


class DriverToken(Model_):
    driver_id: str
    token: str = Field(description="The new bearer token; the previous one stops working at once.")


class DriverPage(Model_):
    items: list[DriverOut]
    next_cursor: str | None = None


class BrandingSettings(Strict_):
    """The merchant's look and support contact on the tracking page."""

    name: ShortText | None = Field(default=None, description="Shown on the page; defaults to the merchant's name")
    primary_colour: HexColour = "#1d4ed8"
    accent_colour: HexColour = "#0f766e"
    logo_url: HttpsUrl | None = Field(default=None, description="https only; its origin joins the page's CSP")
    support_email: Email | None = None
    support_phone: Annotated[str, Field(pattern=r"^\+?[0-9][0-9 ()./-]{2,30}$")] | None = Field(
        default=None, description="The merchant's support line (never a driver's number)")


class OfferedWindow(Strict_):
    id: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,15}$", description="e.g. morning")]
    start_time: ClockTime
    end_time: ClockTime

    @model_validator(mode="after")
    def _ordered(self) -> OfferedWindow:
        if self.end_time <= self.start_time:
            raise blame("end_time", "end_time must be after start_time")
        return self


def _default_windows() -> list[OfferedWindow]:
    return [OfferedWindow(id="morning", start_time="09:00", end_time="12:00"),
            OfferedWindow(id="afternoon", start_time="13:00", end_time="17:00")]


class RescheduleOptions(Strict_):
    """What a recipient may move the delivery to (before it is out for delivery): each window on each delivery
    day among the next `days_ahead` days, in the shipment's time zone."""

    days_ahead: Annotated[int, Strict(), Field(ge=0, le=14)] = Field(
        default=5, description="Calendar days after today to offer (0: recipients cannot reschedule)")
    weekdays: Annotated[list[Annotated[int, Strict(), Field(ge=1, le=7)]], Field(min_length=1, max_length=7)] = \
        Field(default_factory=lambda: [1, 2, 3, 4, 5, 6], description="Delivery days, ISO weekday numbers (1 = Mon)")
    windows: Annotated[list[OfferedWindow], Field(min_length=1, max_length=6)] = Field(
        default_factory=_default_windows, description="Daily windows offered on each delivery day")

    @model_validator(mode="after")
    def _unique(self) -> RescheduleOptions:
        if len(set(self.weekdays)) != len(self.weekdays):
            raise blame("weekdays", "weekdays must not repeat")
        if len({w.id for w in self.windows}) != len(self.windows):
            raise blame("windows", "window ids must not repeat")
        return self


class QuietHours(Strict_):
    """Local hours (the merchant's time zone) in which the dispatch contact is not messaged (the queue still fills)."""

    start_time: ClockTime
    end_time: ClockTime


ExceptionKindName = Literal["late", "failed_attempt", "driver_offline", "delivered_far", "long_stop", "route_behind",
                            "zone_rule"]


class DispatchContact(Strict_):
    """Who hears about new exceptions, by email and/or SMS, through the exactly-once notification ledger."""

    email: Email | None = None
    phone: E164Phone | None = None
    kinds: Annotated[list[ExceptionKindName], Field(min_length=1, max_length=7)] | None = Field(
        default=None, description="Exception kinds to message about; omitted or null: every kind")
    quiet_hours: QuietHours | None = None


class ZoneRule(Strict_):
    """A time-of-day rule on a merchant zone: any movement inside the zone between the local times opens a
    zone_rule exception (e.g. no movement in the depot after hours). A window may cross midnight."""

    zone_id: Annotated[str, Field(min_length=1, max_length=64)]
    rule: Literal["no_movement"] = "no_movement"
    start_time: ClockTime
    end_time: ClockTime


class ExceptionSettings(Strict_):
    """The thresholds of the exception queue and who is told."""

    long_stop_minutes: Annotated[int, Strict(), Field(ge=2, le=240)] = Field(
        default=15, description="A driver stopped this long away from every stop opens long_stop")
    route_behind_minutes: Annotated[int, Strict(), Field(ge=5, le=600)] = Field(
        default=30, description="A route whose projected end is this much past its planned end opens route_behind")
    dispatch_contact: DispatchContact | None = None
    zone_rules: Annotated[list[ZoneRule], Field(max_length=20)] = Field(default_factory=list)


class MerchantSettings(Strict_):
    """How the pipeline treats this merchant's stops and what its tracking page shows and offers.

    Every field has a default; PUT replaces them all, PATCH changes only the fields it sends (`chalicelib.core.patch`).
    """

    stop_radius_m: FenceRadius = Field(default=75.0, description="Default arrival geofence radius of a stop")
    dwell_after_s: Annotated[float, Strict(), Field(ge=10, le=3600, allow_inf_nan=False)] = Field(
        default=120.0, description="A dwell event fires once per stay after this many seconds inside a fence")
    approach_minutes: Annotated[float, Strict(), Field(ge=0, le=120, allow_inf_nan=False)] = Field(
        default=5.0, description="'approaching' fires when the stop's ETA is this close (0: never by time)")
    approach_metres: Annotated[float, Strict(), Field(ge=0, le=10_000, allow_inf_nan=False)] = Field(
        default=500.0, description="...or when the driver is this close in a straight line (0: never by distance)")
    approach_next_stops: Annotated[int, Strict(), Field(ge=1, le=50)] = Field(
        default=1, description="'approaching' is announced only for the next this many stops still to be served, "
                               "in route (ETA) order: never for a stop the driver merely passes on the way")
    early_arrival: Literal["deliver", "wait"] = Field(
        default="deliver", description="A driver who reaches a stop before its promised window opens: 'deliver' "
                                       "(the ETA is the drive's) or 'wait' for the window (that stop's ETA is the "
                                       "window's start, and every later stop's includes the wait)")
    branding: BrandingSettings = Field(default_factory=BrandingSettings)
    link_expiry_days: Annotated[int, Strict(), Field(ge=1, le=90)] = Field(
        default=7, description="Tracking links answer 404 this many days after delivered/failed/returned/cancelled")
    driver_visible_stops: Annotated[int, Strict(), Field(ge=0, le=50)] = Field(
        default=1, description="The tracking page shows the driver while at most this many stops minus one come "
                               "first (1: only when the recipient's stop is next; 0: never)")
    reschedule_options: RescheduleOptions = Field(default_factory=RescheduleOptions)
    max_delivery_attempts: Annotated[int, Strict(), Field(ge=1, le=10)] = Field(
        default=3, description="Failed attempts after which the shipment is returned to the depot instead of "
                               "offered for rescheduling")
    far_from_stop_m: Annotated[float, Strict(), Field(ge=10, le=5000, allow_inf_nan=False)] = Field(
        default=150.0, description="A delivery marked further than this from its stop is flagged far_from_stop")
    completion_requirements: CompletionRequirements = Field(
        default_factory=CompletionRequirements, description="What every delivery of this merchant requires (a "
                                                            "shipment's own requirements override field by field)")
    offline_after_minutes: Annotated[float, Strict(), Field(ge=1, le=1440, allow_inf_nan=False)] = Field(
        default=5.0, description="A driver on duty without a fix for this long is offline (driver_offline, once "
                                 "per episode)")
    time_zone: TimeZoneName = Field(default="UTC", description="Default time zone of tracking pages")
    locale: LocaleTag = Field(default="en", description="Default language of tracking pages")
    exceptions: ExceptionSettings = Field(default_factory=ExceptionSettings)
    publish_eta_accuracy: Annotated[bool, Strict()] = Field(
        default=False, description="The tracking page tells how often this merchant's ETA windows held over the "
                                   "last 30 days, once at least 50 arrivals were measured")


# PATCH /v1/settings: every field optional; null restores a field's default (clears one whose default is null).
MerchantSettingsPatch = patch_model(MerchantSettings, "MerchantSettingsPatch")


class ZoneKind(StrEnum):
    DEPOT = "depot"
    RESTRICTED = "restricted"
    OTHER = "other"


class GeoJsonPolygon(Strict_):
    """A GeoJSON Polygon or MultiPolygon (RFC 7946): positions are [lng, lat]; every ring is closed (its last
    position repeats its first), has at least 3 distinct corners and some area, and neither crosses nor touches
    itself or another ring of its polygon; holes lie inside their exterior. Rings the other way round are
    reversed to the right-hand rule (exterior counterclockwise, holes clockwise): the zone answers the geometry
    as stored. A refusal (422) names the ring or position, e.g. `geometry.coordinates.0`."""

    type: Literal["Polygon", "MultiPolygon"]
    coordinates: Annotated[list[object], Field(min_length=1, max_length=50)]


class ZoneCreate(Strict_):
    name: ShortText
    kind: ZoneKind = ZoneKind.OTHER
    geometry: GeoJsonPolygon
    exit_buffer_m: Annotated[float, Strict(), Field(ge=10, le=1000, allow_inf_nan=False)] = Field(
        default=50.0, description="Hysteresis: leaving needs the driver this far outside the polygon")


class ZoneOut(Model_):
    id: str
    name: str
    kind: ZoneKind
    geometry: dict[str, object]
    exit_buffer_m: float
    cells: int = Field(description="H3 cells (res 7) under which the zone is indexed")
    created_at: datetime


class ZonePage(Model_):
    items: list[ZoneOut]
    next_cursor: str | None = None


class ZoneEvent(Model_):
    id: str
    type: Literal["enter", "exit", "dwell"]
    zone_id: str
    zone_name: str
    occurred_at: datetime
    lat: float
    lng: float


class ZoneEvents(Model_):
    driver_id: str
    items: list[ZoneEvent]


class Position(Model_):
    driver_id: str
    lat: float
    lng: float
    fix_time: datetime
    accuracy: float | None = None
    speed: float | None = None
    heading: float | None = None
    altitude: float | None = None
    battery: float | None = None
    cell: str = Field(description="H3 cell (resolution 10) of the fix")
    received_at: datetime


class NearbyDriver(Model_):
    driver_id: str
    distance_m: float
    position: Position


class NearbyDrivers(Model_):
    items: list[NearbyDriver]


class DeviceRegistration(Model_):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    device_id: Annotated[str, Field(min_length=4, max_length=256, pattern=r"^[\x21-\x7e]+$",
                                    description="At least 96 bits random (16+ random letters and digits); "
                                                "POST /v1/drivers/{id}/device-id generates one.")]


class GeneratedDeviceId(Model_):
    driver_id: str
    device_id: str = Field(description="Type it into the tracker app (OsmAnd / Traccar Client) as its device "
                                       "identifier, exactly; it is shown only this once (stored as a hash).")


class EventsQuery(Model_):
    model_config = ConfigDict(extra="forbid")
    limit: Annotated[QueryInt, Field(ge=1, le=500)] = 100


class NearbyQuery(Model_):
    model_config = ConfigDict(extra="forbid")
    lat: Annotated[float, Field(ge=-90, le=90, allow_inf_nan=False)]
    lng: Annotated[float, Field(ge=-180, le=180, allow_inf_nan=False)]
    radius_m: Annotated[float, Field(gt=0, le=MAX_NEARBY_RADIUS_M, allow_inf_nan=False)] = 1000
    limit: Annotated[QueryInt, Field(ge=1, le=100)] = 20


# --- presence: the fleet view and the driver app's shift and phone status ---------------------------------


class FleetPosition(Model_):
    lat: float
    lng: float
    accuracy_m: float | None = None
    fix_time: datetime


class FleetRoute(Model_):
    id: str
    status: str
    done: int = Field(description="Stops delivered, failed, returned or cancelled")
    remaining: int = Field(description="Stops still to serve")
    late: int = Field(description="Remaining stops whose ETA is beyond their promised window")


class FleetDriver(Model_):
    driver_id: str
    name: str
    state: Literal["moving", "stopped", "offline", "off_duty"]
    on_duty: bool
    last_seen_at: datetime | None = None
    position: FleetPosition | None = None
    battery: int | None = None
    reason: Literal["location_off", "app_background", "low_battery", "lwt", "no_fixes"] | None = Field(
        default=None, description="Why the driver is (about to be) offline, where known")
    route: FleetRoute | None = None


class FleetView(Model_):
    as_of: datetime
    drivers: list[FleetDriver]


class ShiftAction(Strict_):
    action: Literal["start", "end"]


class AppStatusReport(Strict_):
    """What the driver app knows of the phone; every field optional (unknown)."""

    battery: Annotated[int, Strict(), Field(ge=0, le=100)] | None = None
    location_permission: Literal["granted", "prompt", "denied"] | None = None
    app_state: Literal["foreground", "background"] | None = None


class DriverPresenceOut(Model_):
    driver_id: str
    on_duty: bool
    state: Literal["moving", "stopped", "offline", "off_duty"]
    last_seen_at: datetime | None = None
