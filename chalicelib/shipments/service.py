"""Shipment use cases: create, read, list, cancel, timeline, tracking links, driver status."""

from __future__ import annotations

import hashlib
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from chalicelib.core import errors
from chalicelib.core.config import Settings
from chalicelib.core.cursors import cursor_in, cursor_out
from chalicelib.core.links import tracking_url
from chalicelib.core.security import (
    hash_secret,
    new_id,
    tracking_token,
)
from chalicelib.core.times import to_ms
from chalicelib.core.types import Location
from chalicelib.ingest.rules import MAX_AGE_MS, MAX_FUTURE_MS
from chalicelib.shipments.attempts import after_failed_attempt
from chalicelib.shipments.failures import failure_reason, failure_reason_label
from chalicelib.shipments.lifecycle import CLOSED, ShipmentStatus, TransitionError, check_transition
from chalicelib.shipments.models import (
    Address,
    DeliveryRating,
    Depot,
    DriverStatusResult,
    DriverStatusUpdate,
    LastFailure,
    Recipient,
    RecipientInstructions,
    Redirect,
    ReturnLeg,
    ShipmentCreate,
    ShipmentEta,
    ShipmentOut,
    ShipmentPage,
    ShipmentSearch,
    Timeline,
    TimelineEvent,
    TimeWindow,
    TrackingLink,
)
from chalicelib.shipments.proof import checked_proof, proof_summary
from chalicelib.shipments.store import require_shipment, timeline_event
from chalicelib.shipments.timeline_order import ordered_timeline
from chalicelib.storage.repository import (
    ConditionFailed,
    ExternalRefTaken,
    Repository,
    idempotency_expiry,
    now_utc,
)
from chalicelib.storage.tables import (
    EventItem,
    IdempotencyItem,
    ShipmentItem,
    as_dict,
    date_gsi_pk,
    driver_pk,
    merchant_pk,
    status_gsi_pk,
)

S = ShipmentStatus


def _shipment_out(settings: Settings, item: ShipmentItem) -> ShipmentOut:
    window = None
    if item.window_start is not None and item.window_end is not None:
        window = TimeWindow(start=item.window_start, end=item.window_end)
    given = as_dict(item.recipient_instructions) if item.recipient_instructions is not None else None
    rating = as_dict(item.rating) if item.rating is not None else None
    return ShipmentOut(
        id=item.shipment_id, status=ShipmentStatus(item.status), recipient=Recipient(**as_dict(item.recipient)),
        address=Address(**as_dict(item.address)), location=Location(lat=float(item.lat), lng=float(item.lng)),
        time_window=window, delivery_date=date.fromisoformat(item.delivery_date), instructions=item.instructions,
        recipient_instructions=RecipientInstructions(
            gate_code=given.get("gate_code"), leave_at_door=bool(given.get("leave_at_door")), note=given.get("note"),
            updated_at=datetime.fromisoformat(str(given["updated_at"]))) if given else None,
        rating=DeliveryRating(score=int(rating["score"]), comment=rating.get("comment"),
                              rated_at=datetime.fromisoformat(str(rating["rated_at"]))) if rating else None,
        proof=proof_summary(item.proof),
        external_ref=item.external_ref, route_id=item.route_id,
        stop_index=int(item.stop_index) if item.stop_index is not None else None, driver_id=item.driver_id,
        geofence_radius_m=float(item.geofence_radius_m) if item.geofence_radius_m is not None else None,
        attempts=int(item.attempts or 0), last_failure=_last_failure(item), redirect=_redirect(item),
        return_leg=_return_leg(item),
        tracking_url=tracking_url(settings, item.shipment_id, int(item.token_version)),
        final_at=item.final_at, created_at=item.created_at, updated_at=item.updated_at,
    )


def _last_failure(item: ShipmentItem) -> LastFailure | None:
    failure = as_dict(item.last_failure) if item.last_failure is not None else None
    if not failure:
        return None
    reason = failure_reason(failure.get("reason"))
    return LastFailure(reason=reason, reason_text=failure_reason_label(reason, "en"), note=failure.get("note"),
                       at=datetime.fromisoformat(str(failure["at"])))


def _redirect(item: ShipmentItem) -> Redirect | None:
    given = as_dict(item.redirect) if item.redirect is not None else None
    if not given:
        return None
    return Redirect(kind=given["kind"], note=given.get("note"), neighbour_name=given.get("neighbour_name"),
                    source=given["source"], at=datetime.fromisoformat(str(given["at"])))


def _return_leg(item: ShipmentItem) -> ReturnLeg | None:
    leg = as_dict(item.return_leg) if item.return_leg is not None else None
    if not leg:
        return None
    depot = None
    if leg.get("depot_zone_id"):
        where = Location(lat=float(leg["depot_lat"]), lng=float(leg["depot_lng"])) \
            if leg.get("depot_lat") is not None else None
        depot = Depot(zone_id=str(leg["depot_zone_id"]), name=str(leg.get("depot_name") or ""), location=where)
    return ReturnLeg(origin=Location(lat=float(leg["from_lat"]), lng=float(leg["from_lng"])), depot=depot,
                     driver_id=leg.get("driver_id"), route_id=leg.get("route_id"),
                     started_at=datetime.fromisoformat(str(leg["started_at"])))


def create_shipment(repo: Repository, settings: Settings, merchant_id: str, body: ShipmentCreate,
                    idempotency_key: str | None, request_bytes: bytes) -> tuple[ShipmentOut, bool]:
    """Create a shipment. With an Idempotency-Key, a retry returns the first result (created=False)."""
    now = now_utc()
    shipment_id = new_id("shp")
    day = body.delivery_date or (body.time_window.start.astimezone(UTC).date() if body.time_window else now.date())
    status = S.CREATED
    item = ShipmentItem(
        merchant_pk(merchant_id), f"SHIPMENT#{shipment_id}",
        GSI1PK=status_gsi_pk(merchant_id, status, shipment_id), GSI1SK=f"{day.isoformat()}#{shipment_id}",
        GSI2PK=date_gsi_pk(merchant_id, day.isoformat(), shipment_id), GSI2SK=f"{status}#{shipment_id}",
        merchant_id=merchant_id, shipment_id=shipment_id, status=str(status),
        recipient=body.recipient.model_dump(exclude_none=True), address=body.address.model_dump(exclude_none=True),
        lat=body.location.lat, lng=body.location.lng,
        window_start=body.time_window.start if body.time_window else None,
        window_end=body.time_window.end if body.time_window else None,
        delivery_date=day.isoformat(), instructions=body.instructions, external_ref=body.external_ref,
        geofence_radius_m=body.geofence_radius_m, token_version=1, created_at=now, updated_at=now,
    )
    idem = None
    if idempotency_key is not None:
        idem = IdempotencyItem(merchant_pk(merchant_id), f"IDEMPOTENCY#{hash_secret(idempotency_key)}",
                               request_hash=hashlib.sha256(request_bytes).hexdigest(), shipment_id=shipment_id,
                               expires_at=idempotency_expiry(now))
    token_hash = hash_secret(tracking_token(settings.token_secret, shipment_id, 1))
    event = timeline_event(merchant_id, shipment_id, "created", "merchant", now, now, None, str(status))
    try:
        stored = repo.create_shipment(item, token_hash, event, idem)
    except ExternalRefTaken as taken:
        raise errors.conflict(f"Shipment {taken.shipment_id} already has this external_ref.", "external_ref",
                              f"already used by shipment {taken.shipment_id}", code="external_ref_taken") from None
    if stored:
        _custody_created(repo, merchant_id, shipment_id, body, now)
        return _shipment_out(settings, item), True
    assert idempotency_key is not None
    previous = repo.get_idempotency(merchant_id, hash_secret(idempotency_key))
    if previous is None:  # expired between the two calls: extremely unlikely, safe to ask for a retry
        raise errors.service_unavailable("Please retry the request.")
    if previous.request_hash != hashlib.sha256(request_bytes).hexdigest():
        raise errors.invalid("idempotency_key_reused",
                             "This Idempotency-Key was used with a different request body.",
                             [errors.FieldProblem("Idempotency-Key", "already used with a different body")])
    replayed = get_shipment(repo, settings, merchant_id, previous.shipment_id)
    _custody_created(repo, merchant_id, previous.shipment_id, body, replayed.created_at)
    return replayed, False


def _custody_created(repo: Repository, merchant_id: str, shipment_id: str, body: ShipmentCreate,
                     at: datetime) -> None:
    """The chain of custody's first event and the shipment's requirements and parcels (idempotent: a replay
    whose first request wrote them adds nothing)."""
    from chalicelib.custody.service import on_shipment_created

    on_shipment_created(repo, merchant_id, shipment_id, body.custody, at)



def _by_external_ref(repo: Repository, settings: Settings, merchant_id: str, external_ref: str,
                     status: ShipmentStatus | None, date_from: date | None, date_to: date | None) -> ShipmentPage:
    """The listing's page shape with the one shipment holding the ref (if it also matches the other filters)."""
    item = repo.shipment_by_external_ref(merchant_id, external_ref)
    if item is None or (status is not None and item.status != status) \
            or (date_from is not None and item.delivery_date < date_from.isoformat()) \
            or (date_to is not None and item.delivery_date > date_to.isoformat()):
        return ShipmentPage(items=[])
    return ShipmentPage(items=[_shipment_out(settings, item)])


_ETA_STATUSES = frozenset({ShipmentStatus.OUT_FOR_DELIVERY, ShipmentStatus.APPROACHING})


def get_shipment(repo: Repository, settings: Settings, merchant_id: str, shipment_id: str, *,
                 consistent: bool = False) -> ShipmentOut:
    item = require_shipment(repo, merchant_id, shipment_id, consistent=consistent)
    out = _shipment_out(settings, item)
    if item.status in _ETA_STATUSES and item.route_id:
        eta = repo.route_eta(item.route_id)
        window = eta.window(int(item.stop_index) if item.stop_index is not None else None) if eta is not None else None
        if eta is not None and window is not None:
            out.eta = ShipmentEta(earliest=_ms(window[0]), expected=_ms(window[1]), latest=_ms(window[2]),
                                  computed_at=_ms(int(eta.at_ms)))
    return out


def _ms(value: int) -> datetime:
    return datetime.fromtimestamp(value / 1000, UTC)


def list_shipments(repo: Repository, settings: Settings, merchant_id: str, *, status: ShipmentStatus | None,
                   date_from: date | None, date_to: date | None, limit: int, cursor: str | None,
                   external_ref: str | None = None) -> ShipmentPage:
    if date_from and date_to and date_to < date_from:
        raise errors.bad_request("date_to is before date_from.", "date_to", "must not be before date_from")
    if external_ref is not None:
        return _by_external_ref(repo, settings, merchant_id, external_ref, status, date_from, date_to)
    scope = f"shipments:{merchant_id}:{status}:{date_from}:{date_to}"
    items, last = repo.list_shipments(
        merchant_id, status=str(status) if status else None,
        date_from=date_from.isoformat() if date_from else None, date_to=date_to.isoformat() if date_to else None,
        limit=limit, start=cursor_in(settings, scope, cursor))
    return ShipmentPage(items=[_shipment_out(settings, i) for i in items],
                        next_cursor=cursor_out(settings, scope, last))


def _status(value: str | None) -> ShipmentStatus | None:
    return ShipmentStatus(value) if value else None


def _transition(item: ShipmentItem, wanted: ShipmentStatus) -> None:
    try:
        check_transition(ShipmentStatus(item.status), wanted)
    except TransitionError as exc:
        raise errors.conflict(f"The shipment is {exc.current}; it cannot become {wanted}.", "status",
                              f"current status is {exc.current}") from None


def closing_actions(item: ShipmentItem, wanted: ShipmentStatus, at: datetime) -> list[Any]:
    """Start the tracking link's expiry clock when a shipment reaches a closing status; stop it if one leaves."""
    if wanted in CLOSED:
        return [ShipmentItem.final_at.set(at)]
    return [ShipmentItem.final_at.remove()] if item.final_at is not None else []


def cancel_shipment(repo: Repository, settings: Settings, merchant_id: str, shipment_id: str) -> ShipmentOut:
    item = require_shipment(repo, merchant_id, shipment_id)
    _transition(item, S.CANCELLED)
    now = now_utc()
    event = timeline_event(merchant_id, shipment_id, "cancelled", "merchant", now, now, item.status, S.CANCELLED)
    try:
        repo.change_statuses([(item, S.CANCELLED, closing_actions(item, S.CANCELLED, now), event)])
    except ConditionFailed:
        raise errors.conflict("The shipment changed meanwhile; read it and retry.") from None
    return get_shipment(repo, settings, merchant_id, shipment_id)


def timeline(repo: Repository, merchant_id: str, shipment_id: str) -> Timeline:
    require_shipment(repo, merchant_id, shipment_id)
    # Ordered by the one timeline rule (shipments/timeline_order.py): created first, then effective time.
    return Timeline(shipment_id=shipment_id,
                    items=[_timeline_event(e) for e, _ in ordered_timeline(repo.timeline(shipment_id))])


def _plain(value: Any) -> Any:
    """Stored numbers come back as Decimal: JSON numbers again."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


_TIMELINE_DATA = {"rescheduled": ("delivery_date", "window_start", "window_end", "redirect"),
                  "returned": ("attempts", "return_leg")}


def _timeline_event(e: EventItem) -> TimelineEvent:
    data = as_dict(e.data) if e.data is not None else {}
    reason = failure_reason(data.get("reason")) if e.type == "failed" else None
    shown = {k: _plain(data[k]) for k in _TIMELINE_DATA.get(e.type, ()) if k in data}
    fields = [str(f) for f in data.get("fields") or []] if e.type == "updated" else None
    return TimelineEvent(id=e.event_id, type=e.type, from_status=_status(e.from_status), to_status=_status(e.to_status),
                         occurred_at=e.occurred_at, recorded_at=e.recorded_at, source=e.source,  # type: ignore[arg-type]
                         reason=reason, reason_text=failure_reason_label(reason, "en") if reason else None,
                         note=data.get("note") if e.type == "failed" else None, data=shown or None, fields=fields)


def revoke_tracking_link(repo: Repository, settings: Settings, merchant_id: str, shipment_id: str) -> TrackingLink:
    """Issue a new tracking link; the old one answers the same 404 as an unknown link from now on."""
    item = require_shipment(repo, merchant_id, shipment_id)
    version = int(item.token_version)
    old_hash = hash_secret(tracking_token(settings.token_secret, shipment_id, version))
    new_hash = hash_secret(tracking_token(settings.token_secret, shipment_id, version + 1))
    now = now_utc()
    event = timeline_event(merchant_id, shipment_id, "tracking_link_revoked", "merchant", now, now)
    try:
        repo.replace_tracking_token(item, old_hash, new_hash, event)
    except ConditionFailed:
        raise errors.conflict("The tracking link was revoked meanwhile; read the shipment and retry.") from None
    return TrackingLink(shipment_id=shipment_id, tracking_url=tracking_url(settings, shipment_id, version + 1))


def driver_status_update(repo: Repository, merchant_id: str, driver_id: str, shipment_id: str,
                         body: DriverStatusUpdate, idempotency_key: str | None, request_bytes: bytes,
                         now: datetime) -> DriverStatusResult:
    """Apply arrived / delivered / failed from the driver's phone, at the time it happened.

    An Idempotency-Key makes a retried update harmless: the claim is written in
    the same transaction as the status change.
    """
    occurred_ms = to_ms(body.occurred_at)
    now_ms = to_ms(now)
    if occurred_ms > now_ms + MAX_FUTURE_MS or occurred_ms < now_ms - MAX_AGE_MS:
        raise errors.validation_failed([errors.FieldProblem(
            "occurred_at", "must be at most 2 minutes ahead of server time and at most 7 days old")])
    shipment = repo.get_shipment(merchant_id, shipment_id)
    if shipment is None or shipment.driver_id != driver_id:
        raise errors.not_found("Shipment")
    request_hash = hashlib.sha256(request_bytes).hexdigest()
    claim = None
    if idempotency_key is not None:
        key_hash = hash_secret(f"status:{shipment_id}:{idempotency_key}")
        previous = repo.get_driver_idempotency(driver_id, key_hash)
        if previous is not None:
            return _custody_replayed(repo, merchant_id, driver_id, body,
                                     _replayed(repo, merchant_id, shipment_id, previous, request_hash))
        claim = IdempotencyItem(driver_pk(driver_id), f"IDEMPOTENCY#{key_hash}", request_hash=request_hash,
                                shipment_id=shipment_id, expires_at=idempotency_expiry(now))
    wanted = ShipmentStatus(body.status)
    _transition(shipment, wanted)
    occurred = body.occurred_at.astimezone(UTC)
    data = {k: v for k, v in {"reason": body.reason and str(body.reason), "note": body.note,
                              "lat": body.location and body.location.lat,
                              "lng": body.location and body.location.lng}.items() if v is not None}
    if wanted == S.FAILED:  # which attempt this was (the transaction is conditional on the status read)
        data["attempt"] = int(shipment.attempts or 0) + 1
    if wanted == S.DELIVERED:
        from chalicelib.custody.service import check_completion

        check_completion(repo, merchant_id, shipment_id, body.proof_keys or [], body.recipient_name,
                         body.age_verified)
    evidence = checked_proof(repo, merchant_id, shipment, body) if wanted == S.DELIVERED else None
    if evidence is not None:
        data["far_from_stop"] = evidence["far_from_stop"]
        if evidence["distance_m"] is not None:
            data["distance_m"] = evidence["distance_m"]
    event = timeline_event(merchant_id, shipment_id, str(wanted), "driver", occurred, now,
                           shipment.status, str(wanted), data or None)
    extra = closing_actions(shipment, wanted, occurred)
    if evidence is not None:
        extra.append(ShipmentItem.proof.set(evidence))
    written, also = wanted, list[EventItem]()
    if wanted == S.FAILED:
        written, more, also = _failed_attempt(repo, shipment, body, occurred, now)
        extra += more
    try:
        claimed = repo.change_statuses([(shipment, written, extra, event)], claim=claim, also=also)
    except ConditionFailed:
        raise errors.conflict("The shipment changed meanwhile; read it and retry.") from None
    if not claimed and claim is not None:
        previous = repo.get_driver_idempotency(driver_id, claim.SK.removeprefix("IDEMPOTENCY#"))
        if previous is None:
            raise errors.service_unavailable("Please retry the request.")
        return _custody_replayed(repo, merchant_id, driver_id, body,
                                 _replayed(repo, merchant_id, shipment_id, previous, request_hash))
    _custody_after_status(repo, shipment, driver_id, body, written, evidence, occurred)
    return DriverStatusResult(shipment_id=shipment_id, status=written)


def _custody_replayed(repo: Repository, merchant_id: str, driver_id: str, body: DriverStatusUpdate,
                      result: DriverStatusResult) -> DriverStatusResult:
    """A replayed delivery finishes its custody part if the first request did not (the receipt is signed once)."""
    if body.status == "delivered" and result.status == S.DELIVERED:
        current = repo.get_shipment(merchant_id, result.shipment_id)
        if current is not None and current.proof is not None:
            _custody_after_status(repo, current, driver_id, body, S.DELIVERED, as_dict(current.proof),
                                  body.occurred_at.astimezone(UTC))
    return result


def _custody_after_status(repo: Repository, shipment: ShipmentItem, driver_id: str, body: DriverStatusUpdate,
                          written: ShipmentStatus, evidence: dict[str, Any] | None, occurred: datetime) -> None:
    """The status change into the chain of custody (delivered: with the proof's hashes and a signed receipt)."""
    from chalicelib.custody import service as custody

    location = (body.location.lat, body.location.lng) if body.location else None
    if written == S.DELIVERED and evidence is not None:
        custody.on_delivered(repo, shipment, driver_id, evidence, occurred, location)
    elif written in (S.FAILED, S.RETURNED):
        data: dict[str, Any] = {"reason": str(body.reason)} if body.reason else {}
        if location:
            data["lat"], data["lng"] = location
        custody.on_closed(repo, shipment.merchant_id, shipment.shipment_id, str(written), occurred,
                          f"driver:{driver_id}", data)


def _failed_attempt(repo: Repository, shipment: ShipmentItem, body: DriverStatusUpdate, occurred: datetime,
                    now: datetime) -> tuple[ShipmentStatus, list[Any], list[EventItem]]:
    """Count the attempt; at the merchant's limit the parcel goes back: `returned` (with the `returned` event and
    a return-to-depot leg) is written in the same transaction as the `failed` event."""
    from chalicelib.fleet.service import merchant_settings
    from chalicelib.shipments.redelivery import depot_of, returned_event

    limit = merchant_settings(repo, shipment.merchant_id).max_delivery_attempts
    outcome = after_failed_attempt(int(shipment.attempts or 0), limit)
    failure: dict[str, Any] = {"reason": str(failure_reason(body.reason)), "at": occurred.isoformat()}
    if body.note:
        failure["note"] = body.note
    actions: list[Any] = [ShipmentItem.attempts.set(outcome.attempts), ShipmentItem.last_failure.set(failure)]
    if not outcome.returned:
        return S.FAILED, actions, []
    leg: dict[str, Any] = {"from_lat": float(shipment.lat), "from_lng": float(shipment.lng),
                           "started_at": now.isoformat(), **depot_of(repo, shipment.merchant_id)}
    if shipment.driver_id:
        leg["driver_id"] = shipment.driver_id
    if shipment.route_id:
        leg["route_id"] = shipment.route_id
    actions.append(ShipmentItem.return_leg.set(leg))
    return S.RETURNED, actions, [returned_event(shipment, occurred, now, outcome.attempts, leg)]


def _replayed(repo: Repository, merchant_id: str, shipment_id: str, previous: IdempotencyItem,
              request_hash: str) -> DriverStatusResult:
    if previous.request_hash != request_hash:
        raise errors.invalid("idempotency_key_reused",
                             "This Idempotency-Key was used with a different request body.",
                             [errors.FieldProblem("Idempotency-Key", "already used with a different body")])
    current = repo.get_shipment(merchant_id, shipment_id)
    assert current is not None
    return DriverStatusResult(shipment_id=shipment_id, status=ShipmentStatus(current.status), replayed=True)


def search_shipments(repo: Repository, settings: Settings, merchant_id: str, text: str) -> ShipmentSearch:
    """The console's search: each reading of `text` (`shipments.search.search_keys`) is one key lookup, in
    order, until one finds something; only the merchant's own shipments are ever answered."""
    from chalicelib.shipments.search import SEARCH_LIMIT, MatchedBy, search_keys

    for key in search_keys(text):
        items: list[ShipmentItem] = []
        if key.by is MatchedBy.SHIPMENT_ID:
            found = repo.get_shipment(merchant_id, key.value)
            items = [found] if found is not None else []
        elif key.by is MatchedBy.TRACKING_LINK:
            target = repo.tracking_target(hash_secret(key.value))
            found = repo.get_shipment(merchant_id, target.shipment_id) \
                if target is not None and target.merchant_id == merchant_id else None
            items = [found] if found is not None else []
        elif key.by is MatchedBy.EXTERNAL_REF:
            found = repo.shipment_by_external_ref(merchant_id, key.value)
            items = [found] if found is not None else []
        else:  # an exact phone or email
            ids = repo.shipment_ids_of_contact(merchant_id, key.value, SEARCH_LIMIT)
            by_id = repo.get_shipments(merchant_id, ids) if ids else {}
            items = [by_id[sid] for sid in ids if sid in by_id]
        if items:
            return ShipmentSearch(matched_by=key.by.value, items=[_shipment_out(settings, i) for i in items])
    return ShipmentSearch(matched_by=None, items=[])
