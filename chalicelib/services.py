"""Application services: each use case reads the repository, applies domain rules, returns edge models.

Routes call these; these call the domain (pure) and the repository (adapter).
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, date, datetime
from typing import Any

import h3

from chalicelib import errors
from chalicelib.config import Settings
from chalicelib.domain import geo, proof
from chalicelib.domain.geofence import COARSE_INDEX_RES, PolygonFence, fence_cells
from chalicelib.domain.lifecycle import ALLOWED, CLOSED, ShipmentStatus, TransitionError, check_transition
from chalicelib.domain.pings import MAX_AGE_MS, MAX_FUTURE_MS, POSITION_MAX_ACCURACY_M, ScreenLimits, screen_batch
from chalicelib.domain.security import (
    CursorError,
    decode_cursor,
    encode_cursor,
    hash_secret,
    new_id,
    new_secret,
    tracking_token,
)
from chalicelib.models import (
    Address,
    DeliveryRating,
    DriverCreate,
    DriverOut,
    DriverPage,
    DriverStatusResult,
    DriverStatusUpdate,
    DriverToken,
    DriverWithToken,
    Location,
    MerchantSettings,
    NearbyDriver,
    NearbyDrivers,
    PingBatchResult,
    PingItemResult,
    Position,
    ProofImage,
    ProofSummary,
    ProofUpload,
    ProofUploadRequest,
    ProofView,
    Recipient,
    RecipientInstructions,
    RouteCreate,
    RouteOut,
    RouteStop,
    ShipmentCreate,
    ShipmentOut,
    ShipmentPage,
    Timeline,
    TimelineEvent,
    TimeWindow,
    TrackingLink,
    ZoneCreate,
    ZoneEvent,
    ZoneEvents,
    ZoneKind,
    ZoneOut,
    ZonePage,
    parse_ping,
)
from chalicelib.storage.repository import ConditionFailed, Repository, StatusChange, idempotency_expiry, now_utc
from chalicelib.storage.tables import (
    DriverItem,
    EventItem,
    IdempotencyItem,
    PositionItem,
    RouteItem,
    ShipmentItem,
    ZoneItem,
    as_dict,
    date_gsi_pk,
    driver_pk,
    driver_routes_pk,
    event_item,
    merchant_pk,
    status_gsi_pk,
)

S = ShipmentStatus


# --- authentication ------------------------------------------------------------


def bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise errors.unauthorized("The Authorization header is missing.")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise errors.unauthorized("The Authorization header must be 'Bearer <token>'.")
    return token.strip()


def authenticate_merchant(repo: Repository, authorization: str | None) -> str:
    token = bearer_token(authorization)
    merchant_id = repo.merchant_for_key(hash_secret(token)) if len(token) <= 200 else None
    if merchant_id is None:
        raise errors.unauthorized("The API key is not valid.")
    return merchant_id


def authenticate_driver(repo: Repository, authorization: str | None,
                        settings: Settings | None = None) -> tuple[str, str]:
    """(merchant id, driver id) for the driver's own token or a driver app link (the web app's credential)."""
    from chalicelib.domain.driver_app import looks_like_link

    token = bearer_token(authorization)
    if looks_like_link(token):
        from chalicelib.config import get_settings
        from chalicelib.driver_app import link_principal

        secret = (settings or get_settings()).token_secret
        driver = link_principal(repo, secret, token, datetime.now(UTC))
        found = (driver.merchant_id, driver.driver_id) if driver is not None else None
        if found is None:
            raise errors.unauthorized("The driver link is not valid (expired or revoked); ask for a new one.")
        return found
    found = repo.driver_for_token(hash_secret(token)) if len(token) <= 200 else None
    if found is None:
        raise errors.unauthorized("The driver token is not valid.")
    return found


def create_merchant(repo: Repository, name: str) -> tuple[str, str]:
    """Create a merchant; returns (merchant id, API key). The key is never stored."""
    merchant_id = new_id("mer")
    api_key = new_secret("dsk")
    repo.create_merchant(merchant_id, name, hash_secret(api_key), api_key[:8])
    return merchant_id, api_key


# --- cursors -----------------------------------------------------------------------


def _cursor_out(settings: Settings, scope: str, last_key: dict[str, Any] | None) -> str | None:
    return encode_cursor(settings.token_secret, scope, last_key) if last_key else None


def _cursor_in(settings: Settings, scope: str, cursor: str | None) -> dict[str, Any] | None:
    if cursor is None:
        return None
    try:
        return decode_cursor(settings.token_secret, scope, cursor)
    except CursorError as exc:
        raise errors.bad_request("The cursor is not valid for this listing.", "cursor", str(exc)) from None


# --- drivers -----------------------------------------------------------------------


def _driver_out(item: DriverItem) -> DriverOut:
    return DriverOut(id=item.driver_id, name=item.name, phone=item.phone, external_ref=item.external_ref,
                     created_at=item.created_at)


def create_driver(repo: Repository, merchant_id: str, body: DriverCreate) -> DriverWithToken:
    token = new_secret("dtk")
    driver_id = new_id("drv")
    item = DriverItem(merchant_pk(merchant_id), f"DRIVER#{driver_id}", merchant_id=merchant_id, driver_id=driver_id,
                      name=body.name, phone=body.phone, external_ref=body.external_ref,
                      token_hash=hash_secret(token), created_at=now_utc())
    repo.create_driver(item)
    return DriverWithToken(**_driver_out(item).model_dump(), token=token)


def _require_driver(repo: Repository, merchant_id: str, driver_id: str) -> DriverItem:
    item = repo.get_driver(merchant_id, driver_id)
    if item is None:
        raise errors.not_found("Driver")
    return item


def get_driver(repo: Repository, merchant_id: str, driver_id: str) -> DriverOut:
    return _driver_out(_require_driver(repo, merchant_id, driver_id))


def list_drivers(repo: Repository, settings: Settings, merchant_id: str, limit: int, cursor: str | None
                 ) -> DriverPage:
    scope = f"drivers:{merchant_id}"
    items, last = repo.list_drivers(merchant_id, limit, _cursor_in(settings, scope, cursor))
    return DriverPage(items=[_driver_out(i) for i in items], next_cursor=_cursor_out(settings, scope, last))


def rotate_driver_token(repo: Repository, merchant_id: str, driver_id: str) -> DriverToken:
    driver = _require_driver(repo, merchant_id, driver_id)
    token = new_secret("dtk")
    repo.replace_driver_token(driver, hash_secret(token))
    return DriverToken(driver_id=driver_id, token=token)


# --- shipments ---------------------------------------------------------------------


def tracking_url(settings: Settings, shipment_id: str, version: int) -> str:
    return f"{settings.public_base_url}/track/{tracking_token(settings.token_secret, shipment_id, version)}"


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
        proof=_proof_summary(item.proof),
        external_ref=item.external_ref, route_id=item.route_id,
        stop_index=int(item.stop_index) if item.stop_index is not None else None, driver_id=item.driver_id,
        geofence_radius_m=float(item.geofence_radius_m) if item.geofence_radius_m is not None else None,
        tracking_url=tracking_url(settings, item.shipment_id, int(item.token_version)),
        final_at=item.final_at, created_at=item.created_at, updated_at=item.updated_at,
    )


def _event(merchant_id: str, shipment_id: str, kind: str, source: str, occurred: datetime, recorded: datetime,
           from_status: str | None = None, to_status: str | None = None,
           data: dict[str, Any] | None = None) -> EventItem:
    return event_item(merchant_id, shipment_id, new_id("evt"), kind, source, occurred, recorded, from_status,
                      to_status, data)


def create_shipment(repo: Repository, settings: Settings, merchant_id: str, body: ShipmentCreate,
                    idempotency_key: str | None, request_bytes: bytes) -> tuple[ShipmentOut, bool]:
    """Create a shipment. With an Idempotency-Key, a retry returns the first result (created=False)."""
    now = now_utc()
    shipment_id = new_id("shp")
    day = body.delivery_date or (body.time_window.start.astimezone(UTC).date() if body.time_window else now.date())
    status = S.CREATED
    item = ShipmentItem(
        merchant_pk(merchant_id), f"SHIPMENT#{shipment_id}",
        GSI1PK=status_gsi_pk(merchant_id, status), GSI1SK=f"{day.isoformat()}#{shipment_id}",
        GSI2PK=date_gsi_pk(merchant_id, day.isoformat()), GSI2SK=f"{status}#{shipment_id}",
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
    event = _event(merchant_id, shipment_id, "created", "merchant", now, now, None, str(status))
    if repo.create_shipment(item, token_hash, event, idem):
        return _shipment_out(settings, item), True
    assert idempotency_key is not None
    previous = repo.get_idempotency(merchant_id, hash_secret(idempotency_key))
    if previous is None:  # expired between the two calls: extremely unlikely, safe to ask for a retry
        raise errors.service_unavailable("Please retry the request.")
    if previous.request_hash != hashlib.sha256(request_bytes).hexdigest():
        raise errors.ApiError(422, "idempotency_key_reused",
                              "This Idempotency-Key was used with a different request body.",
                              [errors.FieldProblem("Idempotency-Key", "already used with a different body")])
    return get_shipment(repo, settings, merchant_id, previous.shipment_id), False


def _require_shipment(repo: Repository, merchant_id: str, shipment_id: str) -> ShipmentItem:
    item = repo.get_shipment(merchant_id, shipment_id)
    if item is None:
        raise errors.not_found("Shipment")
    return item


def get_shipment(repo: Repository, settings: Settings, merchant_id: str, shipment_id: str) -> ShipmentOut:
    return _shipment_out(settings, _require_shipment(repo, merchant_id, shipment_id))


def list_shipments(repo: Repository, settings: Settings, merchant_id: str, *, status: ShipmentStatus | None,
                   date_from: date | None, date_to: date | None, limit: int, cursor: str | None) -> ShipmentPage:
    if date_from and date_to and date_to < date_from:
        raise errors.bad_request("date_to is before date_from.", "date_to", "must not be before date_from")
    scope = f"shipments:{merchant_id}:{status}:{date_from}:{date_to}"
    items, last = repo.list_shipments(
        merchant_id, status=str(status) if status else None,
        date_from=date_from.isoformat() if date_from else None, date_to=date_to.isoformat() if date_to else None,
        limit=limit, start=_cursor_in(settings, scope, cursor))
    return ShipmentPage(items=[_shipment_out(settings, i) for i in items],
                        next_cursor=_cursor_out(settings, scope, last))


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
    item = _require_shipment(repo, merchant_id, shipment_id)
    _transition(item, S.CANCELLED)
    now = now_utc()
    event = _event(merchant_id, shipment_id, "cancelled", "merchant", now, now, item.status, S.CANCELLED)
    try:
        repo.change_statuses([(item, S.CANCELLED, closing_actions(item, S.CANCELLED, now), event)])
    except ConditionFailed:
        raise errors.conflict("The shipment changed meanwhile; read it and retry.") from None
    return get_shipment(repo, settings, merchant_id, shipment_id)


def timeline(repo: Repository, merchant_id: str, shipment_id: str) -> Timeline:
    _require_shipment(repo, merchant_id, shipment_id)
    return Timeline(shipment_id=shipment_id, items=[
        TimelineEvent(id=e.event_id, type=e.type, from_status=_status(e.from_status), to_status=_status(e.to_status),
                      occurred_at=e.occurred_at, recorded_at=e.recorded_at, source=e.source)  # type: ignore[arg-type]
        for e in repo.timeline(shipment_id)
    ])


def revoke_tracking_link(repo: Repository, settings: Settings, merchant_id: str, shipment_id: str) -> TrackingLink:
    """Issue a new tracking link; the old one answers the same 404 as an unknown link from now on."""
    item = _require_shipment(repo, merchant_id, shipment_id)
    version = int(item.token_version)
    old_hash = hash_secret(tracking_token(settings.token_secret, shipment_id, version))
    new_hash = hash_secret(tracking_token(settings.token_secret, shipment_id, version + 1))
    now = now_utc()
    event = _event(merchant_id, shipment_id, "tracking_link_revoked", "merchant", now, now)
    try:
        repo.replace_tracking_token(item, old_hash, new_hash, event)
    except ConditionFailed:
        raise errors.conflict("The tracking link was revoked meanwhile; read the shipment and retry.") from None
    return TrackingLink(shipment_id=shipment_id, tracking_url=tracking_url(settings, shipment_id, version + 1))


# --- routes ------------------------------------------------------------------------


def _route_out(item: RouteItem) -> RouteOut:
    return RouteOut(id=item.route_id, driver_id=item.driver_id, day=date.fromisoformat(item.day),
                    planned_start=item.planned_start, status=item.status,  # type: ignore[arg-type]
                    stops=[RouteStop(sequence=i, shipment_id=str(s)) for i, s in enumerate(item.stops)],
                    started_at=item.started_at, created_at=item.created_at)


def create_route(repo: Repository, merchant_id: str, body: RouteCreate) -> RouteOut:
    _require_driver(repo, merchant_id, body.driver_id)
    shipments = repo.get_shipments(merchant_id, body.shipment_ids)
    problems = []
    for index, sid in enumerate(body.shipment_ids):
        found = shipments.get(sid)
        if found is None:
            problems.append(errors.FieldProblem(f"shipment_ids[{index}]", "shipment not found"))
        elif S.ASSIGNED not in ALLOWED[ShipmentStatus(found.status)]:
            problems.append(errors.FieldProblem(f"shipment_ids[{index}]",
                                                f"shipment is {found.status}, not created or rescheduled"))
    if problems:
        raise errors.ApiError(409 if all(p.reason != "shipment not found" for p in problems) else 404,
                              "shipments_not_assignable", "Some shipments cannot be put on this route.", problems)
    now = now_utc()
    route_id = new_id("rte")
    route = RouteItem(merchant_pk(merchant_id), f"ROUTE#{route_id}",
                      GSI1PK=driver_routes_pk(merchant_id, body.driver_id), GSI1SK=f"{body.day}#{route_id}",
                      merchant_id=merchant_id, route_id=route_id, driver_id=body.driver_id, day=body.day.isoformat(),
                      planned_start=body.planned_start, stops=list(body.shipment_ids), status="planned",
                      created_at=now)
    repo.put_route(route)
    changes: list[StatusChange] = []
    for index, sid in enumerate(body.shipment_ids):
        shipment = shipments[sid]
        extra = [ShipmentItem.route_id.set(route_id), ShipmentItem.stop_index.set(index),
                 ShipmentItem.driver_id.set(body.driver_id)]
        event = _event(merchant_id, sid, "assigned", "merchant", now, now, shipment.status, S.ASSIGNED)
        changes.append((shipment, S.ASSIGNED, extra, event))
    try:
        repo.change_statuses(changes)
    except ConditionFailed:
        # A shipment changed under us; undo so no shipment points at a half-made route.
        _release_shipments(repo, merchant_id, route_id, body.shipment_ids)
        repo.delete_route(route)
        raise errors.conflict("Some shipments changed meanwhile; read them and retry.") from None
    return _route_out(route)


def _release_shipments(repo: Repository, merchant_id: str, route_id: str, shipment_ids: list[str]) -> None:
    now = now_utc()
    current = repo.get_shipments(merchant_id, shipment_ids)
    changes: list[StatusChange] = [
        (s, S.CREATED, [ShipmentItem.route_id.remove(), ShipmentItem.stop_index.remove(),
                        ShipmentItem.driver_id.remove()],
         _event(merchant_id, s.shipment_id, "unassigned", "system", now, now, s.status, S.CREATED))
        for s in current.values() if s.route_id == route_id and s.status == S.ASSIGNED
    ]
    if changes:
        repo.change_statuses(changes)


def _require_route(repo: Repository, merchant_id: str, route_id: str) -> RouteItem:
    item = repo.get_route(merchant_id, route_id)
    if item is None:
        raise errors.not_found("Route")
    return item


def get_route(repo: Repository, merchant_id: str, route_id: str) -> RouteOut:
    return _route_out(_require_route(repo, merchant_id, route_id))


def start_route(repo: Repository, merchant_id: str, route_id: str) -> RouteOut:
    """Start a planned route: its assigned shipments go out for delivery."""
    route = _require_route(repo, merchant_id, route_id)
    if route.status != "planned":
        raise errors.conflict(f"The route is {route.status}; only a planned route can start.", "status",
                              f"current status is {route.status}")
    now = now_utc()
    try:
        repo.set_route_status(route, "active", "planned", now)
    except ConditionFailed:
        raise errors.conflict("The route was started meanwhile.", "status", "already started") from None
    shipments = repo.get_shipments(merchant_id, [str(s) for s in route.stops])
    changes: list[StatusChange] = [
        (s, S.OUT_FOR_DELIVERY, [],
         _event(merchant_id, s.shipment_id, "out_for_delivery", "merchant", now, now, s.status, S.OUT_FOR_DELIVERY))
        for s in shipments.values() if s.status == S.ASSIGNED and s.route_id == route_id
    ]
    repo.change_statuses(changes)
    route.status, route.started_at = "active", now
    return _route_out(route)


# --- positions -----------------------------------------------------------------------


def _ms_to_dt(ms: float) -> datetime:
    return datetime.fromtimestamp(int(ms) / 1000, UTC)


def _position_out(item: PositionItem) -> Position:
    def opt(value: Any) -> float | None:
        return float(value) if value is not None else None

    return Position(driver_id=item.driver_id, lat=float(item.lat), lng=float(item.lng),
                    fix_time=_ms_to_dt(item.fix_ms), accuracy=opt(item.accuracy), speed=opt(item.speed),
                    heading=opt(item.heading), altitude=opt(item.altitude), battery=opt(item.battery),
                    cell=item.cell, received_at=_ms_to_dt(item.received_ms))


def driver_position(repo: Repository, merchant_id: str, driver_id: str) -> Position:
    _require_driver(repo, merchant_id, driver_id)
    item = repo.get_position(driver_id)
    if item is None:
        raise errors.not_found("Position")
    return _position_out(item)


def nearby_drivers(repo: Repository, merchant_id: str, lat: float, lng: float, radius_m: float,
                   limit: int) -> NearbyDrivers:
    cells = geo.cells_within(lat, lng, radius_m)
    found = []
    for item in repo.positions_in_cells(merchant_id, cells):
        distance = geo.haversine_m(lat, lng, float(item.lat), float(item.lng))
        if distance <= radius_m:
            found.append(NearbyDriver(driver_id=item.driver_id, distance_m=round(distance, 1),
                                      position=_position_out(item)))
    found.sort(key=lambda d: d.distance_m)
    return NearbyDrivers(items=found[:limit])


# --- pings ---------------------------------------------------------------------------


def ingest_pings(repo: Repository, settings: Settings, merchant_id: str, driver_id: str, raw_items: list[Any],
                 now_ms: int) -> PingBatchResult:
    parsed = [parse_ping(i, raw) for i, raw in enumerate(raw_items)]
    screening = screen_batch(
        parsed, driver_id=driver_id, merchant_id=merchant_id, now_ms=now_ms,
        limits=ScreenLimits(settings.max_ping_accuracy_m, settings.max_speed_mps),
        last_fix=repo.last_fix(driver_id),
    )
    if screening.to_store:
        screening.mark_duplicates(repo.stored_fix_times(driver_id, (p.fix_ms for p in screening.to_store.values())))
    # Fixes of 100-500 m (Wi-Fi or cell positioning) are kept as history but never become the latest
    # position: the tracking map, nearby search and the next speed check all read it.
    newest = screening.newest(max_accuracy_m=POSITION_MAX_ACCURACY_M)
    if screening.to_store:
        repo.put_pings(list(screening.to_store.values()))
    if newest is not None:
        repo.advance_position(newest, geo.coarse_cell(newest.lat, newest.lng))
    results = screening.finalize()
    counts = {"accepted": 0, "duplicate": 0, "rejected": 0}
    for r in results:
        counts[r.status] += 1
    return PingBatchResult(
        accepted=counts["accepted"], duplicates=counts["duplicate"], rejected=counts["rejected"],
        items=[PingItemResult(index=r.index, status=r.status, field=r.field, reason=r.reason) for r in results],
    )


# --- driver status updates -------------------------------------------------------------


def driver_status_update(repo: Repository, merchant_id: str, driver_id: str, shipment_id: str,
                         body: DriverStatusUpdate, idempotency_key: str | None, request_bytes: bytes,
                         now: datetime) -> DriverStatusResult:
    """Apply arrived / delivered / failed from the driver's phone, at the time it happened.

    An Idempotency-Key makes a retried update harmless: the claim is written in
    the same transaction as the status change.
    """
    occurred_ms = body.occurred_at.timestamp() * 1000
    now_ms = now.timestamp() * 1000
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
            return _replayed(repo, merchant_id, shipment_id, previous, request_hash)
        claim = IdempotencyItem(driver_pk(driver_id), f"IDEMPOTENCY#{key_hash}", request_hash=request_hash,
                                shipment_id=shipment_id, expires_at=idempotency_expiry(now))
    wanted = ShipmentStatus(body.status)
    _transition(shipment, wanted)
    data = {k: v for k, v in {"reason": body.reason and str(body.reason), "note": body.note,
                              "lat": body.location and body.location.lat,
                              "lng": body.location and body.location.lng}.items() if v is not None}
    evidence = _checked_proof(repo, merchant_id, shipment, body) if wanted == S.DELIVERED else None
    if evidence is not None:
        data["far_from_stop"] = evidence["far_from_stop"]
        if evidence["distance_m"] is not None:
            data["distance_m"] = evidence["distance_m"]
    event = _event(merchant_id, shipment_id, str(wanted), "driver", body.occurred_at.astimezone(UTC), now,
                   shipment.status, str(wanted), data or None)
    extra = closing_actions(shipment, wanted, body.occurred_at.astimezone(UTC))
    if evidence is not None:
        extra.append(ShipmentItem.proof.set(evidence))
    try:
        claimed = repo.change_statuses([(shipment, wanted, extra, event)], claim=claim)
    except ConditionFailed:
        raise errors.conflict("The shipment changed meanwhile; read it and retry.") from None
    if not claimed and claim is not None:
        previous = repo.get_driver_idempotency(driver_id, claim.SK.removeprefix("IDEMPOTENCY#"))
        if previous is None:
            raise errors.service_unavailable("Please retry the request.")
        return _replayed(repo, merchant_id, shipment_id, previous, request_hash)
    return DriverStatusResult(shipment_id=shipment_id, status=wanted)


def _replayed(repo: Repository, merchant_id: str, shipment_id: str, previous: IdempotencyItem,
              request_hash: str) -> DriverStatusResult:
    if previous.request_hash != request_hash:
        raise errors.ApiError(422, "idempotency_key_reused",
                              "This Idempotency-Key was used with a different request body.",
                              [errors.FieldProblem("Idempotency-Key", "already used with a different body")])
    current = repo.get_shipment(merchant_id, shipment_id)
    assert current is not None
    return DriverStatusResult(shipment_id=shipment_id, status=ShipmentStatus(current.status), replayed=True)


# --- merchant settings -----------------------------------------------------------------


def merchant_settings(repo: Repository, merchant_id: str) -> MerchantSettings:
    raw = repo.merchant_settings(merchant_id)
    return MerchantSettings.model_validate_json(raw) if raw else MerchantSettings()


def replace_merchant_settings(repo: Repository, merchant_id: str, body: MerchantSettings) -> MerchantSettings:
    """Replace all settings (omitted fields take their defaults); the stream pipeline sees them within a minute."""
    repo.put_merchant_settings(merchant_id, body.model_dump_json())
    return body


# --- zones -------------------------------------------------------------------------

MAX_ZONE_POSITIONS = 2000
MAX_ZONE_INDEX_CELLS = 500


def _zone_out(item: ZoneItem) -> ZoneOut:
    fence = json.loads(item.fence)
    return ZoneOut(id=item.zone_id, name=item.name, kind=ZoneKind(item.kind), geometry=fence["geometry"],
                   exit_buffer_m=float(fence["buffer_m"]), cells=len(item.cells), created_at=item.created_at)


def create_zone(repo: Repository, merchant_id: str, body: ZoneCreate) -> ZoneOut:
    """A polygon zone, indexed under the res-7 cells that cover it out to its exit line."""
    geometry = body.geometry.model_dump()
    if _count_positions(geometry["coordinates"]) > MAX_ZONE_POSITIONS:
        raise errors.validation_failed([errors.FieldProblem("geometry.coordinates",
                                                            f"at most {MAX_ZONE_POSITIONS} positions")])
    zone_id = new_id("zon")
    try:
        fence = PolygonFence(zone_id, geometry, body.exit_buffer_m)
        cells = sorted({str(h3.cell_to_parent(c, COARSE_INDEX_RES)) if h3.get_resolution(c) > COARSE_INDEX_RES
                        else c for c in fence_cells(fence)})
    except (ValueError, TypeError) as exc:
        raise errors.validation_failed([errors.FieldProblem("geometry", str(exc))]) from exc
    if len(cells) > MAX_ZONE_INDEX_CELLS:
        raise errors.validation_failed([errors.FieldProblem("geometry", "zone too large: split it into smaller "
                                                                        "zones")])
    item = ZoneItem(merchant_pk(merchant_id), f"ZONE#{zone_id}", merchant_id=merchant_id, zone_id=zone_id,
                    name=body.name, kind=str(body.kind), fence=json.dumps(fence.to_dict()), cells=cells,
                    created_at=now_utc())
    repo.create_zone(item)
    return _zone_out(item)


def _count_positions(value: Any) -> int:
    if isinstance(value, list) and value and all(isinstance(v, int | float) for v in value):
        return 1
    return sum(_count_positions(v) for v in value) if isinstance(value, list) else 0


def _require_zone(repo: Repository, merchant_id: str, zone_id: str) -> ZoneItem:
    item = repo.get_zone(merchant_id, zone_id)
    if item is None:
        raise errors.not_found("Zone")
    return item


def get_zone(repo: Repository, merchant_id: str, zone_id: str) -> ZoneOut:
    return _zone_out(_require_zone(repo, merchant_id, zone_id))


def list_zones(repo: Repository, settings: Settings, merchant_id: str, limit: int, cursor: str | None) -> ZonePage:
    scope = f"zones:{merchant_id}"
    items, last = repo.list_zones(merchant_id, limit, _cursor_in(settings, scope, cursor))
    return ZonePage(items=[_zone_out(i) for i in items], next_cursor=_cursor_out(settings, scope, last))


def delete_zone(repo: Repository, merchant_id: str, zone_id: str) -> None:
    repo.delete_zone(_require_zone(repo, merchant_id, zone_id))


def driver_zone_events(repo: Repository, merchant_id: str, driver_id: str, limit: int) -> ZoneEvents:
    _require_driver(repo, merchant_id, driver_id)
    items = [ZoneEvent(id=e.event_id, type=e.type, zone_id=e.zone_id, zone_name=e.zone_name,  # type: ignore[arg-type]
                       occurred_at=e.occurred_at, lat=float(e.lat), lng=float(e.lng))
             for e in repo.zone_events(driver_id, limit) if e.merchant_id == merchant_id]
    return ZoneEvents(driver_id=driver_id, items=items)


# --- off-the-shelf tracker apps ----------------------------------------------------------


def driver_for_device(repo: Repository, device_id: str) -> tuple[str, str] | None:
    """The driver a tracker app's device id stands for: the driver's own token, or a device id the merchant
    registered for that driver. Both are credentials, stored only as hashes."""
    if not device_id or len(device_id) > 256:
        return None
    digest = hash_secret(device_id)
    return repo.driver_for_token(digest) or repo.driver_for_device(digest)


def register_device(repo: Repository, merchant_id: str, driver_id: str, device_id: str) -> None:
    _require_driver(repo, merchant_id, driver_id)
    if not repo.register_device(merchant_id, driver_id, hash_secret(device_id)):
        raise errors.conflict("This device id belongs to another driver.", "device_id", "already registered")


def record_driver_transition(repo: Repository, merchant_id: str, driver_id: str, event: str, region: str | None,
                             region_id: str | None, occurred_ms: int, lat: float | None, lng: float | None) -> None:
    """A region enter/leave the driver's own app reported (OwnTracks), kept with the zone events."""
    from chalicelib.domain.geofence import event_id
    from chalicelib.storage.tables import zone_event_item

    kind = "enter" if event == "enter" else "exit"
    zone_id = f"device:{region_id or region or 'region'}"[:200]
    repo.put_zone_event_once(zone_event_item(
        merchant_id, driver_id, event_id(driver_id, zone_id, kind, occurred_ms), kind, zone_id,
        (region or region_id or "device region")[:200], datetime.fromtimestamp(occurred_ms / 1000, UTC),
        lat or 0.0, lng or 0.0))


# --- proof of delivery -------------------------------------------------------------------

_blobs: Any = None


def blob_store() -> Any:
    global _blobs
    if _blobs is None:
        from chalicelib.storage.blobs import BlobStore

        _blobs = BlobStore()
    return _blobs


def proof_upload(repo: Repository, merchant_id: str, driver_id: str, shipment_id: str,
                 body: ProofUploadRequest) -> ProofUpload:
    """A presigned POST for one photo or signature of a shipment on the driver's route."""
    shipment = repo.get_shipment(merchant_id, shipment_id)
    if shipment is None or shipment.driver_id != driver_id:
        raise errors.not_found("Shipment")
    if shipment.status in (S.DELIVERED, S.FAILED, S.CANCELLED, S.RETURNED):
        raise errors.conflict(f"The shipment is {shipment.status}.", "status", shipment.status)
    key = proof.new_proof_key(merchant_id, shipment_id, body.kind, body.content_type)
    upload = blob_store().presigned_upload(key.key, body.content_type, proof.MAX_BYTES, proof.UPLOAD_TTL_S)
    return ProofUpload(key=key.key, url=upload.url, fields=upload.fields, expires_in_s=upload.expires_in_s,
                       max_bytes=proof.MAX_BYTES)


def _checked_proof(repo: Repository, merchant_id: str, shipment: ShipmentItem,
                   body: DriverStatusUpdate) -> dict[str, Any]:
    """Every attached key must be this shipment's, uploaded, and a real image within the limits
    (checked here: the local emulator enforces no presigned conditions, and a phone may upload
    something else than it announced). Also measures how far from the stop it was marked delivered."""
    keys = body.proof_keys or []
    problems = []
    for i, key in enumerate(keys):
        reason = proof.key_problem(key, merchant_id, shipment.shipment_id)
        if reason is None:
            stored = blob_store().stored(key)
            reason = proof.uploaded_object_problem(key, stored.size if stored else None,
                                                   stored.content_type if stored else None,
                                                   stored.head if stored else b"")
        if reason is not None:
            problems.append(errors.FieldProblem(f"proof_keys.{i}", reason))
    if len(set(keys)) != len(keys):
        problems.append(errors.FieldProblem("proof_keys", "must not repeat"))
    if problems:
        raise errors.validation_failed(problems)
    distance = None
    if body.location is not None:
        distance = round(geo.haversine_m(body.location.lat, body.location.lng, float(shipment.lat),
                                         float(shipment.lng)), 1)
    threshold = merchant_settings(repo, merchant_id).far_from_stop_m
    return {"keys": keys, "recipient_name": body.recipient_name, "contactless": body.contactless,
            "distance_m": distance, "far_from_stop": proof.far_from_stop(distance, threshold)}


def _proof_summary(raw: Any) -> ProofSummary | None:
    if raw is None:
        return None
    data = as_dict(raw)
    return ProofSummary(keys=list(data.get("keys") or []), recipient_name=data.get("recipient_name"),
                        contactless=bool(data.get("contactless")),
                        distance_m=float(data["distance_m"]) if data.get("distance_m") is not None else None,
                        far_from_stop=bool(data.get("far_from_stop")))


def shipment_proof(repo: Repository, merchant_id: str, shipment_id: str) -> ProofView:
    """The proof of delivery with short-lived links to its images (the objects are never public)."""
    shipment = _require_shipment(repo, merchant_id, shipment_id)
    summary = _proof_summary(shipment.proof)
    if summary is None:
        raise errors.not_found("Proof of delivery")
    images = []
    for key in summary.keys:
        parsed = proof.parse_proof_key(key)
        if parsed is not None:
            images.append(ProofImage(kind=parsed.kind, url=blob_store().presigned_read(key, proof.READ_TTL_S),
                                     expires_in_s=proof.READ_TTL_S))
    return ProofView(shipment_id=shipment_id, images=images, **summary.model_dump())


# --- notification settings -----------------------------------------------------------------


def _problems_422(exc: Any) -> errors.ApiError:
    return errors.validation_failed([errors.FieldProblem(p.field, p.message + (
        f" (at {p.position})" if p.position is not None else "")) for p in exc.problems])


def notification_settings(repo: Repository, merchant_id: str) -> dict[str, Any]:
    """The merchant's notification policy (every kind's channels, quiet hours, freshness) and template overrides."""
    from chalicelib.notifications import load_settings

    merchant = repo.get_merchant(merchant_id)
    policy, templates = load_settings(merchant.notifications if merchant else None)
    return {"policy": policy.to_dict(), "templates": templates.to_dict()}


def replace_notification_settings(repo: Repository, merchant_id: str, body: Any) -> dict[str, Any]:
    """Validate everything before storing anything: a template with a syntax error or an unknown placeholder
    is refused here, naming the template and the position, never at send time."""
    from chalicelib.domain.notify import NotificationPolicy
    from chalicelib.domain.problems import ProblemsError
    from chalicelib.domain.templates import TemplateSet

    if not isinstance(body, dict) or set(body) - {"policy", "templates"}:
        raise errors.validation_failed([errors.FieldProblem("body", "an object with policy and/or templates")])
    try:
        policy = NotificationPolicy.from_dict(body.get("policy") or {}, "policy")
        templates = TemplateSet.from_dict(body.get("templates") or {}, "templates")
    except ProblemsError as exc:
        raise _problems_422(exc) from None
    stored = {"policy": policy.to_dict(), "templates": templates.to_dict()}
    repo.put_notification_settings(merchant_id, json.dumps(stored))
    return stored
