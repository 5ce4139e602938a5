"""Edge models of shipments, routes, timelines, driver status and proof of delivery."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    Strict,
    model_validator,
)

from chalicelib.core.types import (
    Day,
    E164Phone,
    Email,
    FenceRadius,
    Instant,
    LocaleTag,
    Location,
    Model_,
    ShortText,
    Strict_,
    TimeZoneName,
    blame,
    patch_model,
)
from chalicelib.custody.models import ShipmentCustody
from chalicelib.http.paging import Paging
from chalicelib.shipments.failures import FAILURE_REASONS, FailureReason, failure_reason_label
from chalicelib.shipments.lifecycle import ShipmentStatus
from chalicelib.shipments.patching import READ_ONLY

REASON_CODES = ", ".join(f"{r.value} ({failure_reason_label(r, 'en')})" for r in FAILURE_REASONS)


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
    start: Instant
    end: Instant

    @model_validator(mode="after")
    def _ordered(self) -> TimeWindow:
        if self.end <= self.start:
            raise blame("end", "end must be after start")
        return self


class ShipmentCreate(Strict_):
    recipient: Recipient
    address: Address
    location: Location
    time_window: TimeWindow | None = None
    delivery_date: Day | None = Field(
        default=None, description="Defaults to the date of time_window.start (UTC), else today (UTC)."
    )
    instructions: Annotated[str, Field(max_length=1000)] | None = None
    external_ref: Annotated[str, Field(min_length=1, max_length=100)] | None = Field(
        default=None, description="The merchant's own reference (e.g. its order number): unique among the "
                                  "merchant's shipments, cancelled ones included (409 names the holder); exact, "
                                  "case-sensitive match; GET /v1/shipments?external_ref= finds it")
    geofence_radius_m: FenceRadius | None = Field(
        default=None, description="Arrival geofence radius for this stop; defaults to the merchant's stop_radius_m"
    )
    custody: ShipmentCustody | None = Field(
        default=None, description="Completion requirements (override the merchant's) and parcel barcodes")


class ShipmentEditable(Strict_):
    """The part of a shipment a merchant may change (PATCH), validated whole after the merge."""

    recipient: Recipient
    address: Address
    location: Location
    time_window: TimeWindow | None = None
    instructions: Annotated[str, Field(max_length=1000)] | None = None
    geofence_radius_m: FenceRadius | None = Field(
        default=None, description="Arrival geofence radius for this stop; null: the merchant's stop_radius_m")


# Built from ShipmentEditable: nested objects merge member by member, `time_window` is sent whole.
_ShipmentPatchFields: Any = patch_model(ShipmentEditable, "ShipmentPatchFields")


class ShipmentPatch(_ShipmentPatchFields):  # type: ignore[misc]  # a class built by patch_model
    """JSON merge patch (RFC 7396) of a shipment: fields left out are unchanged, nested objects (`recipient`,
    `address`, `location`) merge, `time_window` is replaced whole, null clears an optional field (a required
    one answers 422 naming it). `external_ref` and `delivery_date` cannot be changed (422 naming them)."""

    custody: ShipmentCustody | None = Field(
        default=None, description="Completion requirements (merged member by member; null clears one, which then "
                                  "inherits the merchant's) and parcels (replaced whole); null clears both")

    @model_validator(mode="before")
    @classmethod
    def _read_only(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name, reason in READ_ONLY.items():
                if name in data:
                    raise blame(name, reason)
        return data


class RecipientInstructions(Model_):
    """What the recipient told the driver on the tracking page (never shown on the page again)."""

    gate_code: str | None = None
    leave_at_door: bool = False
    note: str | None = None
    updated_at: datetime


class DeliveryRating(Model_):
    score: int = Field(ge=1, le=5)
    comment: str | None = None
    rated_at: datetime


class ProofSummary(Model_):
    keys: list[str]
    recipient_name: str | None = None
    contactless: bool = False
    distance_m: float | None = Field(default=None, description="From where it was marked delivered to the stop")
    far_from_stop: bool = Field(default=False, description="distance_m is over the merchant's far_from_stop_m")


class LastFailure(Model_):
    reason: FailureReason = Field(description="The driver's reason code: " + REASON_CODES)
    reason_text: str = Field(description="The reason in words (English), from the one reason table")
    note: str | None = Field(default=None, description="The driver's note")
    at: datetime = Field(description="When the attempt failed (the phone's time)")


class Redirect(Model_):
    kind: Literal["safe_place", "neighbour"]
    note: str | None = None
    neighbour_name: str | None = None
    source: Literal["merchant", "recipient"]
    at: datetime


class Depot(Model_):
    zone_id: str
    name: str
    location: Location | None = Field(default=None, description="The centre of the depot zone")


class ReturnLeg(Model_):
    """The way back once the attempt limit is reached: from the stop to the depot (when the merchant has a depot
    zone; else `depot` is null and the merchant decides)."""

    origin: Location = Field(description="The stop the parcel could not be delivered to")
    depot: Depot | None = None
    driver_id: str | None = None
    route_id: str | None = None
    started_at: datetime


class ShipmentReschedule(Strict_):
    """A new delivery day (and optionally a window) for a created, assigned, failed or rescheduled shipment; it
    leaves its route and is planned again for the new day."""

    delivery_date: Day = Field(description="YYYY-MM-DD, after today in the recipient's time zone")
    time_window: TimeWindow | None = Field(default=None, description="Within delivery_date, if given")


class ShipmentRedirect(Strict_):
    """Where to leave the parcel on the next attempt after a failed one: in a safe place (note says where) or
    with a neighbour (neighbour_name says who). The shipment becomes rescheduled for `delivery_date`."""

    kind: Literal["safe_place", "neighbour"]
    note: Annotated[str, Field(min_length=1, max_length=300)] | None = Field(
        default=None, description="Where the safe place is, or the neighbour's door (required for safe_place)")
    neighbour_name: Annotated[str, Field(min_length=1, max_length=80)] | None = Field(
        default=None, description="Required for neighbour")
    delivery_date: Day | None = Field(default=None, description="Defaults to the next delivery day offered to "
                                                                "recipients")

    @model_validator(mode="after")
    def _complete(self) -> ShipmentRedirect:
        if self.kind == "safe_place" and not self.note:
            raise blame("note", "note is required for a safe place: say where")
        if self.kind == "neighbour" and not self.neighbour_name:
            raise blame("neighbour_name", "neighbour_name is required for a neighbour")
        return self


class ShipmentEta(Model_):
    earliest: datetime
    expected: datetime
    latest: datetime
    computed_at: datetime = Field(description="The driver's fix time the estimate was computed from")


class ShipmentOut(Model_):
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
    eta: ShipmentEta | None = Field(
        default=None, description="Arrival window while out for delivery or approaching (GET of one shipment only; "
                                  "from the route's ETA item)")
    attempts: int = Field(default=0, description="Failed delivery attempts so far")
    last_failure: LastFailure | None = Field(default=None, description="The last failed attempt")
    redirect: Redirect | None = Field(default=None, description="Where to leave it next time, after a failure")
    return_leg: ReturnLeg | None = Field(default=None, description="Once returned: the way back to the depot")
    tracking_url: str
    final_at: datetime | None = Field(
        default=None, description="When it was delivered, failed, returned or cancelled; the tracking link expires "
                                  "link_expiry_days later")
    created_at: datetime
    updated_at: datetime


class TrackingLink(Model_):
    shipment_id: str
    tracking_url: str = Field(description="The new link; the previous one answers 404 from now on")


class ShipmentPage(Model_):
    items: list[ShipmentOut]
    next_cursor: str | None = None


class ShipmentSearchQuery(Strict_):
    q: Annotated[str, Field(min_length=1, max_length=300)] = Field(
        description="An external_ref, a shipment id, a tracking link (or its token), or a recipient's exact phone "
                    "(E.164) or email")


class ShipmentSearch(Model_):
    matched_by: Literal["shipment_id", "tracking_link", "phone", "email", "external_ref"] | None = Field(
        description="Which reading of q found the items (None: nothing found)")
    items: list[ShipmentOut] = Field(description="At most 20, newest first")


class TimelineEvent(Model_):
    id: str
    type: str
    from_status: ShipmentStatus | None = None
    to_status: ShipmentStatus | None = None
    occurred_at: datetime
    recorded_at: datetime
    source: Literal["merchant", "driver", "system", "recipient"]
    reason: FailureReason | None = Field(default=None, description="Why a failed attempt failed: " + REASON_CODES)
    reason_text: str | None = Field(default=None, description="The reason in English, as the driver chose it")
    note: str | None = Field(default=None, description="The driver's note of a failed attempt, or a redirect's")
    data: dict[str, object] | None = Field(
        default=None, description="Details of rescheduled (delivery_date, window), redirected and returned (attempts, "
                                  "return_leg) events")
    fields: list[str] | None = Field(default=None, description="`updated` events: the fields a PATCH changed "
                                                               "(names only, e.g. recipient.phone)")


class Timeline(Model_):
    shipment_id: str
    items: list[TimelineEvent]


class DriverStatusUpdate(Strict_):
    """A status change reported by the driver's phone, stamped with when it happened (it may arrive late)."""

    status: Literal["arrived", "delivered", "failed"]
    occurred_at: Instant = Field(description="When it happened on the phone; may be up to 7 days old")
    reason: FailureReason | None = Field(default=None, description="Required when status is failed: "
                                         + REASON_CODES)
    note: Annotated[str, Field(max_length=500)] | None = None
    location: Location | None = Field(default=None, description="Where the driver was when it happened")
    proof_keys: Annotated[list[Annotated[str, Field(max_length=300)]], Field(max_length=4)] | None = Field(
        default=None, description="Keys of photos / signatures uploaded through proof-uploads (delivered only)")
    recipient_name: Annotated[str, Field(min_length=1, max_length=100)] | None = Field(
        default=None, description="Who took the parcel (delivered only)")
    contactless: bool = Field(default=False, description="Left without contact (delivered only)")
    age_verified: bool = Field(default=False, description="The driver checked the recipient's age (delivered only; "
                                                          "required when the shipment has a min_age)")

    @model_validator(mode="after")
    def _reason_iff_failed(self) -> DriverStatusUpdate:
        if (self.status == "failed") != (self.reason is not None):
            raise blame("reason", "reason is required when status is failed, and only then")
        if self.status != "delivered":
            for name in ("proof_keys", "recipient_name", "contactless", "age_verified"):
                if getattr(self, name):
                    raise blame(name, "proof_keys, recipient_name and contactless belong to a delivered update only")
        return self


class ProofUploadRequest(Strict_):
    kind: Literal["photo", "signature"]
    content_type: Literal["image/jpeg", "image/png", "image/webp"]
    size_bytes: Annotated[int, Strict(), Field(ge=100, le=10 * 1024 * 1024, description="at most 10 MB")]


class ProofUpload(Model_):
    key: str = Field(description="Attach it to the delivered update's proof_keys once uploaded")
    url: str = Field(description="POST the file here as multipart/form-data: the fields first, then `file`")
    fields: dict[str, str]
    expires_in_s: int
    max_bytes: int


class ProofImage(Model_):
    kind: Literal["photo", "signature"]
    url: str = Field(description="A short-lived presigned GET URL")
    expires_in_s: int


class ProofView(ProofSummary):
    shipment_id: str
    images: list[ProofImage]


class DriverStatusResult(Model_):
    shipment_id: str
    status: ShipmentStatus
    replayed: bool = False


class RouteCreate(Strict_):
    driver_id: str
    day: Day
    planned_start: Instant
    shipment_ids: Annotated[list[str], Field(min_length=1, max_length=300)]
    optimize: bool = Field(default=False, description="Put the stops in the order of least travel time within "
                                                      "their windows (as POST /v1/routes/{id}/optimize: from the "
                                                      "depot zone, else the first stop); with fewer than 2 stops "
                                                      "the order stays as given")

    @model_validator(mode="after")
    def _unique(self) -> RouteCreate:
        if len(set(self.shipment_ids)) != len(self.shipment_ids):
            raise blame("shipment_ids", "shipment_ids must not repeat")
        return self


class RouteStop(Model_):
    sequence: int
    shipment_id: str


class RouteOut(Model_):
    id: str
    driver_id: str
    day: date
    planned_start: datetime
    status: Literal["planned", "active", "completed"]
    stops: list[RouteStop]
    started_at: datetime | None = None
    completed_at: datetime | None = None
    created_at: datetime
    version: int = Field(description="Send it back with PATCH: an edit made since answers 409")


RouteStatus = Literal["planned", "active", "completed"]


class RouteQuery(Paging):
    date: Day | None = Field(default=None, description="YYYY-MM-DD: the routes of this day")
    driver_id: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    status: RouteStatus | None = None


class RoutePage(Model_):
    items: list[RouteOut]
    next_cursor: str | None = None


class RoutePatch(Strict_):
    """The route's stops in their new order: ids not listed leave it, new ids join it."""

    version: Annotated[int, Field(ge=0)] = Field(description="The version the change is based on (from GET)")
    shipment_ids: Annotated[list[str], Field(min_length=1, max_length=300)]

    @model_validator(mode="after")
    def _unique(self) -> RoutePatch:
        if len(set(self.shipment_ids)) != len(self.shipment_ids):
            raise blame("shipment_ids", "shipment_ids must not repeat")
        return self


class RouteReassign(Strict_):
    driver_id: Annotated[str, Field(min_length=1, max_length=64)]
    version: Annotated[int, Field(ge=0)] | None = Field(
        default=None, description="If given, the version the change is based on (409 if the route changed since)")


class StopMove(Strict_):
    route_id: Annotated[str, Field(min_length=1, max_length=64)] = Field(
        description="The planned or active route that takes the stop (its last stop)")


class ShipmentQuery(Paging):
    external_ref: Annotated[str, Field(min_length=1, max_length=100)] | None = Field(
        default=None, description="The shipment with this external_ref (a page of at most one item; the other "
                                  "filters, if given, must match it too)")
    status: ShipmentStatus | None = None
    date_from: Day | None = Field(default=None, description="YYYY-MM-DD")
    date_to: Day | None = Field(default=None, description="YYYY-MM-DD")
