"""The exception queue's use cases: open one exception per (kind, subject) from the stream pipeline and presence,
list the queue, acknowledge and resolve it; each change is a webhook event, each opening may message the
merchant's dispatch contact (notifications' exactly-once ledger)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from chalicelib.core import errors
from chalicelib.core.config import Settings
from chalicelib.core.cursors import cursor_in, cursor_out
from chalicelib.core.observability import MetricUnit, logger, metrics
from chalicelib.core.security import new_id
from chalicelib.exceptions.rules import (
    STATE_EVENTS,
    ExceptionKind,
    ExceptionState,
    allowed,
    dedupe_key,
    exception_id,
    summary,
    within_local_hours,
)
from chalicelib.exceptions.store import ExceptionRecord, ExceptionStore, StateEvent

if TYPE_CHECKING:
    from chalicelib.exceptions.models import ExceptionAction, ExceptionOut, ExceptionPage, ExceptionQuery
    from chalicelib.fleet.models import ExceptionSettings
    from chalicelib.storage.repository import Repository

K = ExceptionKind
SYSTEM = "system"


def store(repo: Repository) -> ExceptionStore:
    return ExceptionStore(repo.client)


@dataclass(frozen=True)
class Opening:
    """An exception to open: what the pipeline found, in the terms of the queue."""

    kind: ExceptionKind
    subject: str  # what it is about: a shipment, a driver or a route id
    episode: str  # what makes this occurrence new: the triggering event's id, or when it began
    at: datetime
    details: dict[str, Any] = field(default_factory=dict)
    driver_id: str | None = None
    shipment_id: str | None = None
    route_id: str | None = None


def _exception_settings(repo: Repository, merchant_id: str) -> tuple[ExceptionSettings, str]:
    """The merchant's exception settings and time zone (the profile is cached a minute in stream functions)."""
    from chalicelib.fleet.service import cached_merchant_profile

    profile = cached_merchant_profile(repo, merchant_id)
    return profile.settings.exceptions, profile.settings.time_zone


def open_exception(repo: Repository, merchant_id: str, opening: Opening) -> ExceptionRecord | None:
    """Open it once: None when this occurrence was opened before (a redelivered record) or another exception
    of its kind and subject is still open. The dispatch contact is told through the ledger (once)."""
    details = {k: _plain(v) for k, v in opening.details.items() if v is not None}
    record = ExceptionRecord(
        merchant_id=merchant_id, exception_id=exception_id(merchant_id, opening.kind, opening.subject, opening.episode),
        kind=opening.kind, state=ExceptionState.OPEN, dedupe=dedupe_key(opening.kind, opening.subject),
        opened_at=opening.at, summary=summary(opening.kind, details), details=details, driver_id=opening.driver_id,
        shipment_id=opening.shipment_id, route_id=opening.route_id)
    s = store(repo)
    # Read before the transaction: a redelivered record, or a (kind, subject) already open, is the common case
    # for a detector that fires again, and answering it from two reads costs less than a cancelled transaction.
    found = s.get(merchant_id, record.exception_id)
    if found is not None:
        if found.state is not ExceptionState.OPEN:
            return None  # this occurrence is handled already
        record = found  # redelivered: its message may not have gone out yet (the ledger sends it once)
    elif s.open_for(merchant_id, record.dedupe) is not None:
        return None  # another of its kind and subject is still open: one per (kind, subject)
    elif s.open(record, _state_event(record, ExceptionState.OPEN, SYSTEM, opening.at, None)):
        metrics.add_metric(name="ExceptionsOpened", unit=MetricUnit.Count, value=1)
        logger.info("exception opened", extra={"kind": record.kind.value, "exception_id": record.exception_id})
    else:
        return None  # a concurrent worker opened it (or another of its kind) between the reads and the write
    tell_dispatch(repo, record)
    return record


def resolve_automatically(repo: Repository, merchant_id: str, kind: ExceptionKind, subject: str, at: datetime,
                          reason: str) -> ExceptionRecord | None:
    """The situation ended by itself (the driver is back, the stop was delivered): resolve the open one, if any."""
    s = store(repo)
    open_id = s.open_for(merchant_id, dedupe_key(kind, subject))
    record = s.get(merchant_id, open_id) if open_id else None
    if record is None or record.state is ExceptionState.RESOLVED:
        return None
    if not s.transition(record, ExceptionState.RESOLVED, SYSTEM, at, reason,
                        _state_event(record, ExceptionState.RESOLVED, SYSTEM, at, reason)):
        return None  # a dispatcher resolved it meanwhile
    metrics.add_metric(name="ExceptionsResolved", unit=MetricUnit.Count, value=1)
    return record


def _state_event(record: ExceptionRecord, state: ExceptionState, who: str, at: datetime,
                 note: str | None) -> StateEvent:
    # The opened event's id is the exception's own: a redelivered opening cannot post it twice.
    event_id = f"{record.exception_id}-{state.value}" if state is ExceptionState.OPEN else new_id("xev")
    data: dict[str, Any] = {"exception_id": record.exception_id, "kind": record.kind.value, "state": state.value,
                            "summary": record.summary, "driver_id": record.driver_id,
                            "shipment_id": record.shipment_id, "route_id": record.route_id,
                            "details": record.details, "by": who, "note": note}
    return StateEvent(event_id, STATE_EVENTS[state], at, SYSTEM if who == SYSTEM else "merchant", data)


# --- what the stream pipeline and presence report ---------------------------------------------------------------


def on_driver_event(repo: Repository, merchant_id: str, driver_id: str, event_type: str, occurred_at: datetime,
                    reason: str | None) -> None:
    """Presence's `driver_offline` opens a driver_offline exception (one per episode: the episode is when it
    went offline); `driver_online` resolves it, and so does `driver_off_duty` (the shift ended while offline)."""
    if event_type == "driver_offline":
        open_exception(repo, merchant_id, Opening(
            K.DRIVER_OFFLINE, driver_id, _iso(occurred_at), occurred_at,
            {"driver_id": driver_id, "reason": reason}, driver_id=driver_id))
    elif event_type == "driver_online":
        resolve_automatically(repo, merchant_id, K.DRIVER_OFFLINE, driver_id, occurred_at, "driver back online")
    elif event_type == "driver_off_duty":
        resolve_automatically(repo, merchant_id, K.DRIVER_OFFLINE, driver_id, occurred_at,
                              "shift ended while offline")


def on_lifecycle(repo: Repository, image: dict[str, Any]) -> None:
    """A shipment's timeline event from the stream: late (`delayed`), a failed attempt, delivered far from the
    stop; a delivery resolves the stop's open late and failed-attempt exceptions."""
    event_type, to_status = str(image.get("type") or ""), str(image.get("to_status") or "")
    merchant_id, shipment_id = str(image.get("merchant_id") or ""), str(image.get("shipment_id") or "")
    if not (merchant_id and shipment_id):
        return
    data = image.get("data") if isinstance(image.get("data"), dict) else {}
    assert isinstance(data, dict)
    at = _time(image.get("occurred_at"))
    event_id = str(image.get("event_id") or image.get("SK") or "")
    kind: ExceptionKind | None = None
    details: dict[str, Any] = {}
    if event_type == "delayed":
        kind = K.LATE
    elif to_status == "failed" and event_type == "failed":
        kind, details = K.FAILED_ATTEMPT, {"reason": data.get("reason"), "attempt": data.get("attempt")}
    elif to_status == "delivered" and data.get("far_from_stop"):
        kind, details = K.DELIVERED_FAR, {"distance_m": data.get("distance_m")}
    if to_status == "delivered":
        for done in (K.LATE, K.FAILED_ATTEMPT):
            resolve_automatically(repo, merchant_id, done, shipment_id, at, "delivered")
    if kind is None:
        return
    shipment = repo.get_shipment(merchant_id, shipment_id)  # who and which route: only when opening one
    details = {"shipment_id": shipment_id, "external_ref": shipment.external_ref if shipment else None,
               "driver_id": shipment.driver_id if shipment else None, **details}
    open_exception(repo, merchant_id, Opening(
        kind, shipment_id, event_id, at, details, driver_id=shipment.driver_id if shipment else None,
        shipment_id=shipment_id, route_id=shipment.route_id if shipment else None))


def on_driver_findings(repo: Repository, merchant_id: str, openings: Sequence[Opening]) -> None:
    """What the per-driver path found in memory (long stops, a route behind plan). It writes only when it found
    something, so a ping costs nothing more."""
    for opening in openings:
        open_exception(repo, merchant_id, opening)


def on_zone_event(repo: Repository, merchant_id: str, driver_id: str, zone_id: str, zone_name: str, kind: str,
                  at: datetime, event_id: str) -> None:
    """A zone event inside a zone rule's hours is movement the merchant did not expect (e.g. in the depot after
    hours): a zone_rule exception, one per driver and zone while open. The rules come from the cached profile."""
    settings, zone = _exception_settings(repo, merchant_id)
    for rule in settings.zone_rules:
        if rule.zone_id == zone_id and within_local_hours(at, rule.start_time, rule.end_time, zone):
            open_exception(repo, merchant_id, Opening(
                K.ZONE_RULE, f"{driver_id}#{zone_id}", event_id, at,
                {"driver_id": driver_id, "zone_id": zone_id, "zone_name": zone_name, "zone_event": kind,
                 "rule": rule.rule, "hours": f"{rule.start_time}-{rule.end_time}"}, driver_id=driver_id))
            return


# --- the dispatch contact ------------------------------------------------------------------------------------


def tell_dispatch(repo: Repository, record: ExceptionRecord) -> None:
    """Email and/or SMS the merchant's dispatch contact about a new exception, per its kinds and quiet hours."""
    from chalicelib.notifications.service import notify_dispatch

    settings, zone = _exception_settings(repo, record.merchant_id)
    contact = settings.dispatch_contact
    if contact is None or (contact.kinds is not None and record.kind.value not in contact.kinds):
        return
    quiet = contact.quiet_hours is not None and within_local_hours(
        datetime.now(UTC), contact.quiet_hours.start_time, contact.quiet_hours.end_time, zone)
    subject = f"[{record.kind.value}] {record.summary}"
    text = f"{record.summary}\nOpened {_iso(record.opened_at)}. Exception {record.exception_id}."
    notify_dispatch(repo, record.merchant_id, record.exception_id, STATE_EVENTS[ExceptionState.OPEN],
                    email=contact.email, phone=contact.phone, subject=subject, text=text, quiet=quiet)


# --- the merchant API ----------------------------------------------------------------------------------------


def list_exceptions(repo: Repository, settings: Settings, merchant_id: str, query: ExceptionQuery) -> ExceptionPage:
    from chalicelib.exceptions.models import ExceptionPage

    state, kind = ExceptionState(query.state), ExceptionKind(query.kind) if query.kind else None
    scope = f"exceptions:{merchant_id}:{state.value}:{kind.value if kind else '*'}"
    records, last = store(repo).page(merchant_id, state, kind, query.limit, cursor_in(settings, scope, query.cursor))
    return ExceptionPage(items=[exception_out(r) for r in records], next_cursor=cursor_out(settings, scope, last))


def acknowledge(repo: Repository, merchant_id: str, exception_id_: str, who: str,
                body: ExceptionAction) -> ExceptionOut:
    return _move(repo, merchant_id, exception_id_, ExceptionState.ACKNOWLEDGED, who, body.note)


def resolve(repo: Repository, merchant_id: str, exception_id_: str, who: str, body: ExceptionAction) -> ExceptionOut:
    return _move(repo, merchant_id, exception_id_, ExceptionState.RESOLVED, who, body.note)


def _move(repo: Repository, merchant_id: str, exception_id_: str, wanted: ExceptionState, who: str,
          note: str | None) -> ExceptionOut:
    s = store(repo)
    record = s.get(merchant_id, exception_id_)  # under the caller's merchant: another merchant's id is not found
    if record is None:
        raise errors.not_found("Exception")
    for _ in range(2):  # one re-read if it moved between the read and the write
        if not allowed(record.state, wanted):
            raise errors.conflict(f"The exception is {record.state.value}; it cannot be {wanted.value} now.",
                                  "state", record.state.value)
        now = datetime.now(UTC)
        if s.transition(record, wanted, who, now, note, _state_event(record, wanted, who, now, note)):
            if wanted is ExceptionState.RESOLVED:  # literal names: the dashboard's test finds them in the code
                metrics.add_metric(name="ExceptionsResolved", unit=MetricUnit.Count, value=1)
            else:
                metrics.add_metric(name="ExceptionsAcknowledged", unit=MetricUnit.Count, value=1)
            moved = s.get(merchant_id, exception_id_)
            assert moved is not None
            return exception_out(moved)
        found = s.get(merchant_id, exception_id_)
        if found is None:
            raise errors.not_found("Exception")
        record = found
    raise errors.conflict("The exception changed concurrently; read it again.", "state", record.state.value)


def exception_out(record: ExceptionRecord) -> ExceptionOut:
    from chalicelib.exceptions.models import ExceptionOut

    return ExceptionOut(id=record.exception_id, kind=record.kind.value, state=record.state.value,
                        driver_id=record.driver_id, shipment_id=record.shipment_id, route_id=record.route_id,
                        opened_at=record.opened_at, acknowledged_at=record.acknowledged_at,
                        acknowledged_by=record.acknowledged_by, resolved_at=record.resolved_at,
                        resolved_by=record.resolved_by, summary=record.summary, details=record.details,
                        note=record.note)


def _plain(value: Any) -> Any:
    """A stream image's number (Decimal) as JSON's."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _time(value: Any) -> datetime:
    if not value:
        return datetime.now(UTC)
    moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
