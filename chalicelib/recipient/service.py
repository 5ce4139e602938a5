"""Recipient use cases behind a tracking link: resolve it, build what the page and its JSON show, and take the
recipient's delivery instructions, reschedule and rating.

The rules are pure (chalicelib.domain.tracking); this module reads and writes through the repository and
returns plain data: `chalicelib.web` dataclasses for the HTML page, edge models for the JSON view. HTTP and
HTML stay in app.py. Errors are `errors.DomainError`s whose code is a `chalicelib.web.MESSAGE_KINDS` kind
(`not_available`, `already_rated`) so the HTML routes can answer in the recipient's language.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from chalicelib.core import errors
from chalicelib.core.security import hash_secret, looks_like_tracking_token, new_id
from chalicelib.core.times import from_ms, to_ms
from chalicelib.core.types import Location
from chalicelib.fleet.models import MerchantSettings
from chalicelib.fleet.service import parse_merchant_settings
from chalicelib.geo.day_window import ShownWindow, before_window, shown_window
from chalicelib.recipient.models import DriverMarker, EtaWindow, TrackingEvent, TrackingShipment, TrackingView
from chalicelib.recipient.page import PageEvent, RescheduleOption, TrackingPage
from chalicelib.recipient.rules import (
    INSTRUCTABLE,
    LIVE,
    RECIPIENT_EVENTS,
    REDIRECTABLE,
    RESCHEDULABLE,
    Slot,
    WindowOffer,
    driver_visible,
    first_name,
    link_expired,
    reschedule_slots,
    stops_before,
)
from chalicelib.shipments.failures import failure_reason
from chalicelib.shipments.lifecycle import CLOSED, ShipmentStatus
from chalicelib.shipments.models import TimeWindow
from chalicelib.shipments.redelivery import NotReschedulable, move, redirect_record
from chalicelib.shipments.timeline_order import ordered_timeline
from chalicelib.storage.repository import ConditionFailed, Repository
from chalicelib.storage.tables import EventItem, PositionItem, ShipmentItem, as_dict, event_item
from chalicelib.web.branding import Branding
from chalicelib.web.i18n import negotiate

S = ShipmentStatus

# Never a merchant or shipment id (those look like mer_..., shp_...): a dead link reads keys that do not exist,
# so it does the same three reads as a live one.
_NOBODY = "-"
_ETA_STATUSES = frozenset({S.OUT_FOR_DELIVERY, S.APPROACHING})


@dataclass(frozen=True)
class Link:
    """A live tracking link: the token, its shipment and the merchant's settings."""

    token: str
    shipment: ShipmentItem
    merchant_name: str
    settings: MerchantSettings

    @property
    def status(self) -> ShipmentStatus:
        return ShipmentStatus(self.shipment.status)

    @property
    def recipient(self) -> dict[str, Any]:
        return as_dict(self.shipment.recipient)

    @property
    def time_zone(self) -> str:
        return str(self.recipient.get("time_zone") or self.settings.time_zone)


def link_gone() -> errors.DomainError:
    return errors.not_found("Tracking link")


def resolve(repo: Repository, token: str, now: datetime) -> Link:
    """The shipment behind a tracking token, or the one 404 for an unknown, malformed, revoked or expired link.

    Every case reads the token item, the shipment and the merchant (the last two under keys that do not exist
    when the token is unknown), so neither the answer nor its timing tells the cases apart.
    """
    digest = hash_secret(token if looks_like_tracking_token(token) else "not-a-token")
    target = repo.tracking_target(digest)
    merchant_id, shipment_id = (target.merchant_id, target.shipment_id) if target else (_NOBODY, _NOBODY)
    shipment = repo.get_shipment(merchant_id, shipment_id)
    merchant = repo.get_merchant(merchant_id)
    if target is None or shipment is None or merchant is None:
        raise link_gone()
    settings = parse_merchant_settings(merchant.settings)
    version = int(target.token_version) if target.token_version is not None else 1
    status = ShipmentStatus(shipment.status)
    # Shipments closed before final_at existed: their last update is when they closed.
    closed_at = shipment.final_at or (shipment.updated_at if status in CLOSED else None)
    if version != int(shipment.token_version) or link_expired(status, closed_at, settings.link_expiry_days, now):
        raise link_gone()
    return Link(token, shipment, merchant.name, settings)


def branding(link: Link) -> Branding:
    return Branding.of(link.settings.branding, link.merchant_name)


def locale(link: Link, accept_language: str | None) -> str:
    """Among the catalogues: the recipient's language when the merchant gave one, else the browser's, else the
    merchant's default, else English."""
    given = link.recipient.get("locale")
    if given:
        return negotiate(str(given), accept_language)
    fallback = f"{link.settings.locale};q=0.001"  # below anything the browser asks for
    return negotiate(None, f"{accept_language},{fallback}" if accept_language else fallback)


# --- what the recipient sees ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Live:
    stops_before: int | None = None
    driver_first_name: str | None = None
    position: PositionItem | None = None


def _live(repo: Repository, link: Link) -> _Live:
    """Stops before this one, the driver's first name, and the driver's position when the rules allow it."""
    shipment = link.shipment
    if link.status not in LIVE or not shipment.route_id:
        return _Live()
    route = repo.get_route(shipment.merchant_id, shipment.route_id)
    stops = [str(s) for s in route.stops] if route is not None else []
    ahead = None
    if shipment.shipment_id in stops:
        earlier = stops[:stops.index(shipment.shipment_id)]
        others = repo.get_shipments(shipment.merchant_id, earlier) if earlier else {}
        ahead = stops_before(stops, shipment.shipment_id,
                             {sid: ShipmentStatus(item.status) for sid, item in others.items()})
    if not shipment.driver_id:
        return _Live(ahead)
    driver = repo.get_driver(shipment.merchant_id, shipment.driver_id)
    position = None
    if driver_visible(link.status, ahead, link.settings.driver_visible_stops):
        position = repo.get_position(shipment.driver_id)
    return _Live(ahead, (first_name(driver.name) or None) if driver is not None else None, position)


def _eta(repo: Repository, link: Link, now: datetime) -> ShownWindow | None:
    """The stop's estimate as people are shown it (geo/day_window.py: bounded, same local day or "later today",
    zone-labelled), from its route's ETA item (the pipeline writes one item per route); None when there is no
    estimate (before the route starts, or a driver too far away): the page then shows the promised window."""
    s = link.shipment
    if link.status not in _ETA_STATUSES or not s.route_id or s.stop_index is None:
        return None
    item = repo.route_eta(s.route_id)
    window = item.window(int(s.stop_index)) if item is not None else None
    if item is None or window is None:
        return None
    shown = shown_window(window, int(item.at_ms), (None, None), _zone(link.time_zone), to_ms(now))
    return shown if shown is not None and shown.kind != "promised" else None


def _zone(name: str) -> tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


def _driver_departed(link: Link, timeline: Sequence[EventItem]) -> bool:
    """Arrived, then the stop's fence was left (a `departed` after the last `arrived`) with no result yet."""
    if link.status != S.ARRIVED:
        return False
    last = {e.type: e.occurred_at for e in timeline if e.type in ("arrived", "departed")}
    return "departed" in last and ("arrived" not in last or last["departed"] >= last["arrived"])


def _events(timeline: Sequence[EventItem]) -> list[tuple[EventItem, datetime]]:
    """What the recipient sees, in the one timeline order, each at its effective time (timeline_order.py)."""
    return [(e, at) for e, at in ordered_timeline(timeline) if e.type in RECIPIENT_EVENTS]


def _page_event(e: EventItem, at: datetime) -> PageEvent:
    reason = (as_dict(e.data) if e.data is not None else {}).get("reason") if e.type == "failed" else None
    return PageEvent(e.type, at, reason=str(reason) if reason else None)


def tracking_page(repo: Repository, link: Link, now: datetime, accept_language: str | None) -> TrackingPage:
    """Everything the page and its polled JSON show: first name and city only, the driver only by the rules."""
    s = link.shipment
    status = link.status
    live = _live(repo, link)
    eta = _eta(repo, link, now)
    timeline = repo.timeline(s.shipment_id)
    events = _events(timeline)
    slots = offered_slots(link, now)
    delivered_at = None
    if status == S.DELIVERED:
        delivered_at = next((at for e, at in reversed(events) if e.type == "delivered"), s.final_at)
    rating = as_dict(s.rating) or None
    return TrackingPage(
        token=link.token, status=str(status), time_zone=link.time_zone, locale=locale(link, accept_language),
        first_name=first_name(link.recipient.get("name")) or None,
        city=str(as_dict(s.address).get("city") or "") or None,
        eta_low=eta.earliest if eta else None, eta_high=eta.latest if eta else None,
        eta_later_today=eta is not None and eta.kind == "later_today",
        eta_early=before_window(eta, s.window_start),
        driver_departed=_driver_departed(link, timeline),
        promised_start=s.window_start, promised_end=s.window_end,
        stops_before=live.stops_before, driver_first_name=live.driver_first_name,
        driver_position=(float(live.position.lat), float(live.position.lng)) if live.position else None,
        destination=(float(s.lat), float(s.lng)),
        timeline=tuple(_page_event(e, at) for e, at in events),
        can_give_instructions=status in INSTRUCTABLE, instructions_saved=s.recipient_instructions is not None,
        can_reschedule=bool(slots), reschedule_options=tuple(RescheduleOption(x.id, x.start, x.end) for x in slots),
        can_redirect=bool(slots) and status in REDIRECTABLE, failure_reason=_failure_code(s),
        attempts=int(s.attempts or 0), max_attempts=link.settings.max_delivery_attempts,
        can_rate=status == S.DELIVERED and rating is None, rating=int(rating["score"]) if rating else None,
        proof_photo_url=_proof_photo_url(s) if status == S.DELIVERED else None, delivered_at=delivered_at,
        eta_accuracy=_eta_accuracy(repo, link, now),
        receipt_jws=_receipt(repo, s.shipment_id) if status == S.DELIVERED else None,
    )


def _eta_accuracy(repo: Repository, link: Link, now: datetime) -> tuple[int, int] | None:
    """The merchant's measured ETA accuracy, when it publishes it and it is meaningful (issue 16)."""
    if not link.settings.publish_eta_accuracy or link.status in CLOSED:
        return None
    from chalicelib.pipeline.honesty import cached_published_accuracy  # only pages that publish it pay the import

    return cached_published_accuracy(repo, link.shipment.merchant_id, now.date())


def _receipt(repo: Repository, shipment_id: str) -> str | None:
    """The signed delivery receipt (chain of custody), for the recipient to keep and anyone to verify."""
    from chalicelib.custody.service import receipt_of

    return receipt_of(repo, shipment_id)


def _failure_code(s: ShipmentItem) -> str | None:
    failure = as_dict(s.last_failure) if s.last_failure is not None else {}
    return str(failure_reason(failure.get("reason"))) if failure else None


def tracking_view(repo: Repository, link: Link) -> TrackingView:
    """The same recipient-safe facts as JSON (GET /v1/track/{token})."""
    s = link.shipment
    live = _live(repo, link)
    eta = _eta(repo, link, datetime.now(UTC))
    marker = None
    if live.position is not None:
        p = live.position
        marker = DriverMarker(lat=float(p.lat), lng=float(p.lng), fix_time=from_ms(p.fix_ms),
                              accuracy=float(p.accuracy) if p.accuracy is not None else None)
    window = TimeWindow(start=s.window_start, end=s.window_end) \
        if s.window_start is not None and s.window_end is not None else None
    return TrackingView(
        status=link.status,
        eta=EtaWindow(earliest=eta.earliest, expected=eta.expected, latest=eta.latest, later_today=eta.kind ==
                      "later_today", time_zone=link.time_zone, zone_label=eta.zone_label,
                      early=before_window(eta, s.window_start)) if eta else None,
        shipment=TrackingShipment(
            recipient_first_name=first_name(link.recipient.get("name")),
            city=str(as_dict(s.address).get("city", "")),
            delivery_date=date.fromisoformat(s.delivery_date), time_window=window,
            location=Location(lat=float(s.lat), lng=float(s.lng)),
        ),
        stops_before=live.stops_before,
        driver=marker,
        timeline=[TrackingEvent(type=e.type, status=ShipmentStatus(e.to_status) if e.to_status else None,
                                occurred_at=at, recorded_at=e.recorded_at)
                  for e, at in _events(repo.timeline(s.shipment_id))],
    )


# --- what the recipient does ---------------------------------------------------------------------


def _not_available(message: str) -> errors.DomainError:
    return errors.conflict(message, code="not_available")


def _event(link: Link, kind: str, now: datetime, from_status: str | None = None, to_status: str | None = None,
           data: dict[str, Any] | None = None) -> EventItem:
    s = link.shipment
    return event_item(s.merchant_id, s.shipment_id, new_id("evt"), kind, "recipient", now, now, from_status,
                      to_status, data)


def save_instructions(repo: Repository, link: Link, *, gate_code: str | None, leave_at_door: bool,
                      note: str | None, now: datetime) -> None:
    """Replace the recipient's instructions for the driver (until delivered, returned or cancelled)."""
    if link.status not in INSTRUCTABLE:
        raise _not_available(f"The shipment is {link.status}; instructions are closed.")
    given: dict[str, Any] = {"leave_at_door": leave_at_door, "updated_at": now.astimezone(UTC).isoformat()}
    if gate_code:
        given["gate_code"] = gate_code
    if note:
        given["note"] = note
    try:
        repo.save_recipient_instructions(link.shipment, given, sorted(str(s) for s in INSTRUCTABLE),
                                         _event(link, "instructions_updated", now))
    except ConditionFailed:
        raise _not_available("The shipment changed meanwhile; instructions are closed.") from None


def offered_slots(link: Link, now: datetime) -> list[Slot]:
    """What the recipient may reschedule to now: nothing once the parcel is out for delivery."""
    options = link.settings.reschedule_options
    if link.status not in RESCHEDULABLE or options.days_ahead == 0:
        return []
    windows = [WindowOffer(w.id, time.fromisoformat(w.start_time), time.fromisoformat(w.end_time))
               for w in options.windows]
    return reschedule_slots(now, ZoneInfo(link.time_zone), days_ahead=options.days_ahead, weekdays=options.weekdays,
                            windows=windows, current=(link.shipment.window_start, link.shipment.window_end))


def offered_ids(link: Link, now: datetime) -> frozenset[str]:
    return frozenset(slot.id for slot in offered_slots(link, now))


def _slot(link: Link, option_id: str, now: datetime) -> Slot:
    slot = next((x for x in offered_slots(link, now) if x.id == option_id), None)
    if slot is None:
        raise _not_available("This delivery time is not offered (any more).")
    return slot


def reschedule(repo: Repository, link: Link, option_id: str, now: datetime) -> None:
    """Move the delivery to an offered day and window: status rescheduled, the date indexes follow, and a
    shipment planned on a route leaves it (the merchant plans it again for the new day)."""
    slot = _slot(link, option_id, now)
    try:
        move(repo, link.shipment, day=slot.day, start=slot.start, end=slot.end, source="recipient", now=now)
    except NotReschedulable:
        raise _not_available(f"The shipment is {link.status}; it cannot be rescheduled now.") from None


def redirect(repo: Repository, link: Link, *, kind: str, note: str | None, neighbour_name: str | None,
             option_id: str, now: datetime) -> None:
    """After a failed attempt: try again at an offered time and leave it in a safe place or with a neighbour."""
    if link.status not in REDIRECTABLE:
        raise _not_available(f"The shipment is {link.status}; it cannot be redirected.")
    slot = _slot(link, option_id, now)
    record = redirect_record(kind, note, neighbour_name, "recipient", now)
    try:
        move(repo, link.shipment, day=slot.day, start=slot.start, end=slot.end, source="recipient", now=now,
             redirect=record)
    except NotReschedulable:
        raise _not_available(f"The shipment is {link.status}; it cannot be redirected now.") from None


def rate(repo: Repository, link: Link, *, score: int, comment: str | None, now: datetime) -> None:
    """The recipient's 1-5 rating, once per shipment, only once it is delivered."""
    s = link.shipment
    if s.rating is not None:
        raise errors.conflict("This delivery has already been rated.", code="already_rated")
    if link.status != S.DELIVERED:
        raise _not_available("Only a delivered shipment can be rated.")
    rating: dict[str, Any] = {"score": score, "rated_at": now.astimezone(UTC).isoformat()}
    if comment:
        rating["comment"] = comment
    if not repo.rate_once(s, rating, _event(link, "rated", now)):
        current = repo.get_shipment(s.merchant_id, s.shipment_id)
        if current is not None and current.rating is not None:
            raise errors.conflict("This delivery has already been rated.", code="already_rated")
        raise _not_available("Only a delivered shipment can be rated.")


def _proof_photo_url(s: ShipmentItem) -> str | None:
    """A short-lived link to the delivery photo (the bucket is private; its origin joins the page's CSP)."""
    from chalicelib.shipments.proof import blob_store
    from chalicelib.shipments.rules import READ_TTL_S, parse_proof_key

    keys = as_dict(s.proof).get("keys")
    photo = next((k for k in keys or [] if (parsed := parse_proof_key(str(k))) and parsed.kind == "photo"), None)
    return str(blob_store().presigned_read(photo, READ_TTL_S)) if photo else None
