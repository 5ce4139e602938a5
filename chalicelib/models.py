"""Pydantic models at the HTTP edge; the OpenAPI document is generated from them."""

from __future__ import annotations

import math
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from chalicelib.domain.lifecycle import ShipmentStatus
from chalicelib.domain.pings import Fix, ItemResult

Latitude = Annotated[float, Strict(), Field(ge=-90, le=90, allow_inf_nan=False, description="WGS84 degrees")]
Longitude = Annotated[float, Strict(), Field(ge=-180, le=180, allow_inf_nan=False, description="WGS84 degrees")]
E164Phone = Annotated[str, Field(pattern=r"^\+[1-9]\d{6,14}$", description="E.164, e.g. +14155550100")]
Email = Annotated[str, Field(max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")]
ShortText = Annotated[str, Field(min_length=1, max_length=200)]
FenceRadius = Annotated[float, Strict(), Field(ge=20, le=1000, allow_inf_nan=False, description="metres")]
LocaleTag = Annotated[str, Field(pattern=r"^[a-z]{2}(-[A-Z]{2})?$", description="e.g. en, de, pt-BR")]


def _time_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError("not an IANA time zone name (e.g. Europe/Berlin)") from None
    return value


def _https_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme != "https" or not parts.hostname or "@" in parts.netloc:
        raise ValueError("must be an https:// URL without credentials")
    return value


TimeZoneName = Annotated[str, Field(min_length=1, max_length=64, description="IANA time zone, e.g. Europe/Berlin"),
                         AfterValidator(_time_zone)]
HttpsUrl = Annotated[str, Field(max_length=2048, pattern=r"^https://[^\s\"'<>\\`]+$"), AfterValidator(_https_url)]
HexColour = Annotated[str, Field(pattern=r"^#[0-9a-fA-F]{6}$", description="#RRGGBB")]
ClockTime = Annotated[str, Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$", description="HH:MM, 24-hour, local time")]


class Strict_(BaseModel):
    """Merchant requests refuse unknown fields, so a typo is an error, not silence."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class Location(Strict_):
    lat: Latitude
    lng: Longitude


# --- drivers -----------------------------------------------------------------


class DriverCreate(Strict_):
    name: ShortText
    phone: E164Phone | None = None
    external_ref: Annotated[str, Field(max_length=100)] | None = None


class DriverOut(BaseModel):
    id: str
    name: str
    phone: str | None = None
    external_ref: str | None = None
    created_at: datetime


class DriverWithToken(DriverOut):
    token: str = Field(description="The driver's bearer token. Shown once; only its hash is stored.")


class DriverToken(BaseModel):
    driver_id: str
    token: str = Field(description="The new bearer token; the previous one stops working at once.")


class DriverPage(BaseModel):
    items: list[DriverOut]
    next_cursor: str | None = None


# --- shipments ---------------------------------------------------------------


class Recipient(Strict_):
    name: ShortText
    phone: E164Phone | None = None
    email: Email | None = None
    locale: LocaleTag | None = Field(default=None, description="Tracking page language; defaults to the merchant's")
    time_zone: TimeZoneName | None = Field(default=None,
                                           description="Times on the tracking page; defaults to the merchant's")


class Address(Strict_):
    line1: ShortText
    line2: Annotated[str, Field(max_length=200)] | None = None
    city: ShortText
    postal_code: Annotated[str, Field(max_length=20)] | None = None
    region: Annotated[str, Field(max_length=100)] | None = None
    country: Annotated[str, Field(pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2")]


class TimeWindow(Strict_):
    start: AwareDatetime
    end: AwareDatetime

    @model_validator(mode="after")
    def _ordered(self) -> TimeWindow:
        if self.end <= self.start:
            raise ValueError("end must be after start")
        return self


class ShipmentCreate(Strict_):
    recipient: Recipient
    address: Address
    location: Location
    time_window: TimeWindow | None = None
    delivery_date: date | None = Field(
        default=None, description="Defaults to the date of time_window.start (UTC), else today (UTC)."
    )
    instructions: Annotated[str, Field(max_length=1000)] | None = None
    external_ref: Annotated[str, Field(max_length=100)] | None = None
    geofence_radius_m: FenceRadius | None = Field(
        default=None, description="Arrival geofence radius for this stop; defaults to the merchant's stop_radius_m"
    )


class RecipientInstructions(BaseModel):
    """What the recipient told the driver on the tracking page (never shown on the page again)."""

    gate_code: str | None = None
    leave_at_door: bool = False
    note: str | None = None
    updated_at: datetime


class DeliveryRating(BaseModel):
    score: int = Field(ge=1, le=5)
    comment: str | None = None
    rated_at: datetime


class ProofSummary(BaseModel):
    keys: list[str]
    recipient_name: str | None = None
    contactless: bool = False
    distance_m: float | None = Field(default=None, description="From where it was marked delivered to the stop")
    far_from_stop: bool = Field(default=False, description="distance_m is over the merchant's far_from_stop_m")


class ShipmentOut(BaseModel):
    id: str
    status: ShipmentStatus
    recipient: Recipient
    address: Address
    location: Location
    time_window: TimeWindow | None = None
    delivery_date: date
    instructions: str | None = None
    recipient_instructions: RecipientInstructions | None = Field(
        default=None, description="Delivery instructions the recipient gave on the tracking page (for the driver)")
    rating: DeliveryRating | None = Field(default=None, description="The recipient's rating, once delivered")
    proof: ProofSummary | None = Field(default=None, description="Proof of delivery, once delivered")
    external_ref: str | None = None
    route_id: str | None = None
    stop_index: int | None = None
    driver_id: str | None = None
    geofence_radius_m: float | None = None
    tracking_url: str
    final_at: datetime | None = Field(
        default=None, description="When it was delivered, failed, returned or cancelled; the tracking link expires "
                                  "link_expiry_days later")
    created_at: datetime
    updated_at: datetime


class TrackingLink(BaseModel):
    shipment_id: str
    tracking_url: str = Field(description="The new link; the previous one answers 404 from now on")


class ShipmentPage(BaseModel):
    items: list[ShipmentOut]
    next_cursor: str | None = None


class TimelineEvent(BaseModel):
    id: str
    type: str
    from_status: ShipmentStatus | None = None
    to_status: ShipmentStatus | None = None
    occurred_at: datetime
    recorded_at: datetime
    source: Literal["merchant", "driver", "system", "recipient"]


class Timeline(BaseModel):
    shipment_id: str
    items: list[TimelineEvent]


class FailureReason(StrEnum):
    NOT_HOME = "not_home"
    NO_ACCESS = "no_access"
    REFUSED = "refused"
    DAMAGED = "damaged"
    OTHER = "other"


class DriverStatusUpdate(Strict_):
    """A status change reported by the driver's phone, stamped with when it happened (it may arrive late)."""

    status: Literal["arrived", "delivered", "failed"]
    occurred_at: AwareDatetime = Field(description="When it happened on the phone; may be up to 7 days old")
    reason: FailureReason | None = Field(default=None, description="Required when status is failed")
    note: Annotated[str, Field(max_length=500)] | None = None
    location: Location | None = Field(default=None, description="Where the driver was when it happened")
    proof_keys: Annotated[list[Annotated[str, Field(max_length=300)]], Field(max_length=4)] | None = Field(
        default=None, description="Keys of photos / signatures uploaded through proof-uploads (delivered only)")
    recipient_name: Annotated[str, Field(min_length=1, max_length=100)] | None = Field(
        default=None, description="Who took the parcel (delivered only)")
    contactless: bool = Field(default=False, description="Left without contact (delivered only)")

    @model_validator(mode="after")
    def _reason_iff_failed(self) -> DriverStatusUpdate:
        if (self.status == "failed") != (self.reason is not None):
            raise ValueError("reason is required when status is failed, and only then")
        if self.status != "delivered" and (self.proof_keys or self.recipient_name or self.contactless):
            raise ValueError("proof_keys, recipient_name and contactless belong to a delivered update only")
        return self


class ProofUploadRequest(Strict_):
    kind: Literal["photo", "signature"]
    content_type: Literal["image/jpeg", "image/png", "image/webp"]
    size_bytes: Annotated[int, Strict(), Field(ge=100, le=10 * 1024 * 1024, description="at most 10 MB")]


class ProofUpload(BaseModel):
    key: str = Field(description="Attach it to the delivered update's proof_keys once uploaded")
    url: str = Field(description="POST the file here as multipart/form-data: the fields first, then `file`")
    fields: dict[str, str]
    expires_in_s: int
    max_bytes: int


class ProofImage(BaseModel):
    kind: Literal["photo", "signature"]
    url: str = Field(description="A short-lived presigned GET URL")
    expires_in_s: int


class ProofView(ProofSummary):
    shipment_id: str
    images: list[ProofImage]


class DriverStatusResult(BaseModel):
    shipment_id: str
    status: ShipmentStatus
    replayed: bool = False


# --- routes ------------------------------------------------------------------


class RouteCreate(Strict_):
    driver_id: str
    day: date
    planned_start: AwareDatetime
    shipment_ids: Annotated[list[str], Field(min_length=1, max_length=300)]

    @model_validator(mode="after")
    def _unique(self) -> RouteCreate:
        if len(set(self.shipment_ids)) != len(self.shipment_ids):
            raise ValueError("shipment_ids must not repeat")
        return self


class RouteStop(BaseModel):
    sequence: int
    shipment_id: str


class RouteOut(BaseModel):
    id: str
    driver_id: str
    day: date
    planned_start: datetime
    status: Literal["planned", "active", "completed"]
    stops: list[RouteStop]
    started_at: datetime | None = None
    created_at: datetime


# --- merchant settings ---------------------------------------------------------


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
            raise ValueError("end_time must be after start_time")
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
            raise ValueError("weekdays must not repeat")
        if len({w.id for w in self.windows}) != len(self.windows):
            raise ValueError("window ids must not repeat")
        return self


class MerchantSettings(Strict_):
    """How the pipeline treats this merchant's stops and what its tracking page shows and offers.

    Every field has a default; PUT replaces them all.
    """

    stop_radius_m: FenceRadius = Field(default=75.0, description="Default arrival geofence radius of a stop")
    dwell_after_s: Annotated[float, Strict(), Field(ge=10, le=3600, allow_inf_nan=False)] = Field(
        default=120.0, description="A dwell event fires once per stay after this many seconds inside a fence")
    approach_minutes: Annotated[float, Strict(), Field(ge=0, le=120, allow_inf_nan=False)] = Field(
        default=5.0, description="'approaching' fires when the stop's ETA is this close (0: never by time)")
    approach_metres: Annotated[float, Strict(), Field(ge=0, le=10_000, allow_inf_nan=False)] = Field(
        default=500.0, description="...or when the driver is this close in a straight line (0: never by distance)")
    branding: BrandingSettings = Field(default_factory=BrandingSettings)
    link_expiry_days: Annotated[int, Strict(), Field(ge=1, le=90)] = Field(
        default=7, description="Tracking links answer 404 this many days after delivered/failed/returned/cancelled")
    driver_visible_stops: Annotated[int, Strict(), Field(ge=0, le=50)] = Field(
        default=1, description="The tracking page shows the driver while at most this many stops minus one come "
                               "first (1: only when the recipient's stop is next; 0: never)")
    reschedule_options: RescheduleOptions = Field(default_factory=RescheduleOptions)
    far_from_stop_m: Annotated[float, Strict(), Field(ge=10, le=5000, allow_inf_nan=False)] = Field(
        default=150.0, description="A delivery marked further than this from its stop is flagged far_from_stop")
    time_zone: TimeZoneName = Field(default="UTC", description="Default time zone of tracking pages")
    locale: LocaleTag = Field(default="en", description="Default language of tracking pages")


# --- merchant webhooks ---------------------------------------------------------

# The timeline event types a webhook can carry (the `type` of /v1/shipments/{id}/timeline events).
WebhookEventType = Literal[
    "created", "assigned", "unassigned", "out_for_delivery", "approaching", "arrived", "dwell", "departed",
    "delayed", "delivered", "failed", "returned", "cancelled", "rescheduled", "instructions_updated", "rated",
    "tracking_link_revoked", "notification_failed",
]
WebhookDeliveryState = Literal["pending", "delivered", "failed", "held"]
MAX_WEBHOOK_REPLAY_DAYS = 7


class WebhookEndpointIn(Strict_):
    """The merchant's webhook endpoint (PUT replaces url, events and alert_email; the secret stays)."""

    url: Annotated[str, Field(min_length=1, max_length=2048)] = Field(
        description="https:// URL that receives the POSTs (public addresses only)")
    events: Annotated[list[WebhookEventType], Field(min_length=1, max_length=30)] | None = Field(
        default=None, description="Event types to send; omitted or null: every type")
    alert_email: Email | None = Field(
        default=None, description="Who is emailed when the endpoint is paused; default: branding.support_email")


class WebhookEndpointOut(BaseModel):
    id: str
    url: str
    events: list[str] | None = Field(description="null: every event type")
    alert_email: str | None
    alerts_to: str | None = Field(description="Who a pause is emailed to now: alert_email, else branding.support_email")
    secret_prefix: str = Field(description="The start of the current signing secret, to recognise it")
    secret: str | None = Field(default=None, description="The signing secret: only in the answer that created or "
                                                         "rotated it, never again")
    previous_secret_expires_at: datetime | None = Field(
        default=None, description="After a rotation the previous secret also signs until this time")
    paused: bool
    paused_at: datetime | None = None
    consecutive_failures: int
    failing_since: datetime | None = None
    created_at: datetime
    updated_at: datetime


class WebhookResumeResult(BaseModel):
    endpoint: WebhookEndpointOut
    requeued: int = Field(description="Held deliveries queued to be sent within a minute")
    more_held: bool = Field(description="More deliveries are still held: call resume again")


class WebhookAttempt(BaseModel):
    at: datetime
    status_code: int | None = Field(description="null: no HTTP answer (timeout, refused, address not allowed)")
    latency_ms: int
    error: str | None = None


class WebhookDeliveryOut(BaseModel):
    id: str
    event_id: str = Field(description="Sent as Doorstep-Event-Id; the same on every retry and replay")
    event_type: str
    shipment_id: str
    state: WebhookDeliveryState
    created_at: datetime
    attempts: int = Field(description="Attempts since it was created or last replayed")
    last_status_code: int | None = None
    last_error: str | None = None
    last_attempt_at: datetime | None = None
    next_attempt_at: datetime | None = Field(default=None, description="While pending")
    delivered_at: datetime | None = None
    replays: int = 0


class WebhookDeliveryDetail(WebhookDeliveryOut):
    attempt_log: list[WebhookAttempt] = Field(description="The latest attempts, oldest first")
    payload: dict[str, Any] = Field(description="The JSON body every attempt sends")


class WebhookDeliveryPage(BaseModel):
    items: list[WebhookDeliveryOut]
    next_cursor: str | None = None


def _after_from(value: datetime | None, info: ValidationInfo) -> datetime | None:
    start = info.data.get("from_")
    if value is not None and start is not None and value < start:
        raise ValueError("must not be before from")
    return value


class WebhookDeliveryQuery(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    from_: AwareDatetime | None = Field(default=None, alias="from", description="Created at or after (RFC 3339)")
    to: AwareDatetime | None = Field(default=None, description="Created at or before (RFC 3339)")
    state: WebhookDeliveryState | None = None
    limit: Annotated[int, Field(ge=1, le=100)] = 50
    cursor: Annotated[str, Field(max_length=2000)] | None = None

    _to_after_from = field_validator("to")(_after_from)


class WebhookReplayRange(Strict_):
    """Send again every delivery created in [from, to] (at most 7 days and 1000 deliveries)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    from_: AwareDatetime = Field(alias="from")
    to: AwareDatetime

    @field_validator("to")
    @classmethod
    def _bounded(cls, value: datetime, info: ValidationInfo) -> datetime:
        start = info.data.get("from_")
        if start is not None and not start <= value <= start + timedelta(days=MAX_WEBHOOK_REPLAY_DAYS):
            raise ValueError(f"must be after from and at most {MAX_WEBHOOK_REPLAY_DAYS} days later")
        return value


class WebhookReplayResult(BaseModel):
    replayed: int = Field(description="Deliveries queued to be sent again within a minute")


# --- zones -------------------------------------------------------------------


class ZoneKind(StrEnum):
    DEPOT = "depot"
    RESTRICTED = "restricted"
    OTHER = "other"


class GeoJsonPolygon(Strict_):
    """A GeoJSON Polygon or MultiPolygon: positions are [lng, lat]; rings are closed or closed for you."""

    type: Literal["Polygon", "MultiPolygon"]
    coordinates: Annotated[list[object], Field(min_length=1, max_length=50)]


class ZoneCreate(Strict_):
    name: ShortText
    kind: ZoneKind = ZoneKind.OTHER
    geometry: GeoJsonPolygon
    exit_buffer_m: Annotated[float, Strict(), Field(ge=10, le=1000, allow_inf_nan=False)] = Field(
        default=50.0, description="Hysteresis: leaving needs the driver this far outside the polygon")


class ZoneOut(BaseModel):
    id: str
    name: str
    kind: ZoneKind
    geometry: dict[str, object]
    exit_buffer_m: float
    cells: int = Field(description="H3 cells (res 7) under which the zone is indexed")
    created_at: datetime


class ZonePage(BaseModel):
    items: list[ZoneOut]
    next_cursor: str | None = None


class ZoneEvent(BaseModel):
    id: str
    type: Literal["enter", "exit", "dwell"]
    zone_id: str
    zone_name: str
    occurred_at: datetime
    lat: float
    lng: float


class ZoneEvents(BaseModel):
    driver_id: str
    items: list[ZoneEvent]


# --- positions ---------------------------------------------------------------


class Position(BaseModel):
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


class NearbyDriver(BaseModel):
    driver_id: str
    distance_m: float
    position: Position


class NearbyDrivers(BaseModel):
    items: list[NearbyDriver]


# --- pings -------------------------------------------------------------------


class PingIn(BaseModel):
    """One fix from a driver's phone. Unknown fields are ignored for forward compatibility."""

    model_config = ConfigDict(extra="ignore")

    lat: Latitude
    lng: Longitude
    fix_time: AwareDatetime = Field(description="When the fix was taken: RFC 3339 with offset, or epoch s/ms")
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
    """Validate one item of a batch; a bad item becomes a per-item rejection naming the field."""
    try:
        ping = PingIn.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "item"
        return ItemResult(index, "rejected", None, where, first["msg"])
    return Fix(ping.lat, ping.lng, math.floor(ping.fix_time.timestamp() * 1000), ping.accuracy, ping.speed,
               ping.heading, ping.altitude, ping.battery)


class PingBatch(BaseModel):
    pings: Annotated[list[PingIn], Field(min_length=1, max_length=500)]


class PingItemResult(BaseModel):
    index: int
    status: Literal["accepted", "duplicate", "rejected"]
    field: str | None = None
    reason: str | None = None


class PingBatchResult(BaseModel):
    accepted: int
    duplicates: int
    rejected: int
    items: list[PingItemResult]


# --- tracking ----------------------------------------------------------------


class TrackingShipment(BaseModel):
    """What a recipient may see: no phone, email, street address or surname."""

    recipient_first_name: str
    city: str
    delivery_date: date
    time_window: TimeWindow | None = None
    location: Location


class DriverMarker(BaseModel):
    lat: float
    lng: float
    fix_time: datetime
    accuracy: float | None = None


class TrackingEvent(BaseModel):
    type: str
    status: ShipmentStatus | None = None
    occurred_at: datetime


class EtaWindow(BaseModel):
    expected: datetime
    earliest: datetime
    latest: datetime


class TrackingView(BaseModel):
    status: ShipmentStatus
    eta: EtaWindow | None = Field(default=None, description="Present while the shipment is on its way")
    shipment: TrackingShipment
    stops_before: int | None = Field(default=None, description="Stops still to be served before this one (while "
                                                                "out for delivery)")
    driver: DriverMarker | None = Field(description="Present only while out for delivery and this stop is next "
                                                    "(or within the merchant's driver_visible_stops)")
    timeline: list[TrackingEvent]


# --- driver web app --------------------------------------------------------------


class DriverAppLinkCreate(Strict_):
    expires_in_hours: Annotated[int, Strict(), Field(ge=1, le=72)] = Field(
        default=16, description="How long the link works (1 to 72 hours)")


class DriverAppLink(BaseModel):
    driver_id: str
    url: str = Field(description="The driver's web app; send it to the driver's phone. Shown once, never stored")
    expires_at: datetime


class StopInstructions(BaseModel):
    """What the recipient asked for on the tracking page."""

    gate_code: str | None = None
    leave_at_door: bool = False
    note: str | None = None


class DriverStop(BaseModel):
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


class DriverRouteInfo(BaseModel):
    id: str
    status: Literal["planned", "active", "completed"]
    planned_start: datetime
    started_at: datetime | None = None


class DriverRouteView(BaseModel):
    """The driver's route of today (in the merchant's time zone) with its stops in order."""

    day: date
    time_zone: str
    driver_id: str
    route: DriverRouteInfo | None = Field(description="None when the driver has no route today")
    next_shipment_id: str | None = None
    stops: list[DriverStop]


class ErrorDetail(BaseModel):
    field: str
    reason: str


class ErrorInfo(BaseModel):
    code: str
    message: str
    details: list[ErrorDetail]


class ErrorResponse(BaseModel):
    error: ErrorInfo
