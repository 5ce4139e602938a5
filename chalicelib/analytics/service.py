"""Delivery analytics' use cases: count each lifecycle event and each ended shift once (from the stream pipeline and
presence), and answer the merchant's figures per day, driver or zone (JSON or CSV)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

from chalicelib.analytics import rules
from chalicelib.analytics.rules import EventFacts
from chalicelib.analytics.store import AnalyticsStore, Count, CounterRow, CounterTarget, Stop
from chalicelib.core.cursors import cursor_in, cursor_out
from chalicelib.core.observability import MetricUnit, metrics

if TYPE_CHECKING:
    from chalicelib.analytics.models import DeliveriesPage, DeliveriesQuery, EtaHonesty
    from chalicelib.core.config import Settings
    from chalicelib.storage.repository import Repository

COUNTED_TYPES = frozenset({"delivered", "failed", "returned", "rated"})
ZoneFinder = Callable[["Repository", str, float, float], str]


def store(repo: Repository) -> AnalyticsStore:
    """The counters through the repository's hot client (no parameter validation, a fixed User-Agent: half the
    CPU of a small request, see Repository.hot_client); guarded as every client."""
    return AnalyticsStore(repo.hot_client)


def _time_zone(repo: Repository, merchant_id: str) -> str:
    from chalicelib.fleet.service import cached_merchant_profile

    return str(cached_merchant_profile(repo, merchant_id).settings.time_zone)


def zone_of_stop(repo: Repository, merchant_id: str, lat: float, lng: float) -> str:
    """The merchant's zone holding the stop (the pipeline's cached zone index near it), else "none"; the
    smallest id when zones overlap, so a stop always counts under the same one."""
    import h3

    from chalicelib.pipeline.service import zones_near

    found = zones_near(repo, merchant_id, str(h3.latlng_to_cell(lat, lng, 10))).index.containing(lat, lng)
    return min((f.id for f in found), default=rules.NO_ZONE)


def _time(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def event_facts(image: dict[str, Any], stop: Stop) -> EventFacts | None:
    """The counters' view of a lifecycle event (its stream image) and its shipment; None if not counted."""
    event_type = str(image.get("type") or "")
    if event_type not in COUNTED_TYPES:
        return None
    if event_type == "delivered" and str(image.get("to_status") or "") != "delivered":
        return None
    data = image.get("data") if isinstance(image.get("data"), dict) else {}
    assert isinstance(data, dict)
    attempt = data.get("attempt")
    return EventFacts(
        event_type=event_type, occurred_at=_time(image.get("occurred_at")), window_start=stop.window_start,
        window_end=stop.window_end,
        failed_before=stop.attempts if event_type == "delivered" else max(stop.attempts - 1, 0),
        attempt=int(attempt) if attempt is not None else None,
        reason=str(data.get("reason")) if data.get("reason") else None, has_proof=stop.has_proof,
        far_from_stop=bool(data.get("far_from_stop")), rating_score=stop.rating_score,
        has_comment=stop.has_comment)


def _count(repo: Repository, merchant_id: str, image: dict[str, Any], stop: Stop,
           zone_finder: ZoneFinder) -> Count | None:
    facts = event_facts(image, stop)
    added = rules.contributions(facts) if facts is not None else {}
    if facts is None or not added:
        return None
    # A rating counts on the day (and for the driver) of the delivery it rates, so the day's average is that day's.
    counted_at = stop.final_at if facts.event_type == "rated" and stop.final_at else facts.occurred_at
    day = rules.local_day(counted_at, _time_zone(repo, merchant_id))
    shard = rules.shard_of(stop.shipment_id)
    zone = zone_finder(repo, merchant_id, stop.lat, stop.lng)
    targets = [CounterTarget("DAY", f"{day}#{shard}", day), CounterTarget("ZONE", f"{day}#{zone}#{shard}", zone)]
    if stop.driver_id:
        week = rules.week_of(day)
        targets += [CounterTarget("DRIVER", f"{day}#{stop.driver_id}", stop.driver_id),
                    CounterTarget("DRIVERWEEK", f"{week}#{stop.driver_id}", stop.driver_id, week)]
    return Count(str(image["event_id"]), day, targets, added)


def on_lifecycle_batch(repo: Repository, images: list[dict[str, Any]],
                       zone_finder: ZoneFinder = zone_of_stop) -> int:
    """Count a stream batch's delivered / failed / returned / rated events, each once: per merchant one
    BatchGetItem of their shipments and as few transactions as fit (a marker per event id with the merged
    ADDs; `AnalyticsStore.add_many`). Returns how many were counted now (0 for a batch counted before)."""
    by_merchant: dict[str, dict[str, dict[str, Any]]] = {}
    for image in images:
        merchant_id, shipment_id = str(image.get("merchant_id") or ""), str(image.get("shipment_id") or "")
        event_id = str(image.get("event_id") or "")
        if str(image.get("type") or "") in COUNTED_TYPES and merchant_id and shipment_id and event_id:
            by_merchant.setdefault(merchant_id, {})[event_id] = image  # a duplicated record once
    s = store(repo)
    counted = 0
    for merchant_id, events in by_merchant.items():
        stops = s.stops(merchant_id, [str(i["shipment_id"]) for i in events.values()])
        counts = [c for image in events.values() if (stop := stops.get(str(image["shipment_id"]))) is not None
                  and (c := _count(repo, merchant_id, image, stop, zone_finder)) is not None]
        counted += s.add_many(merchant_id, counts)
    if counted:
        metrics.add_metric(name="AnalyticsEventsCounted", unit=MetricUnit.Count, value=counted)
    return counted


def on_lifecycle(repo: Repository, image: dict[str, Any], zone_finder: ZoneFinder = zone_of_stop) -> bool:
    """One event (as `on_lifecycle_batch`): True when it was counted now."""
    return on_lifecycle_batch(repo, [image], zone_finder) == 1


def on_shift_ended(repo: Repository, merchant_id: str, driver_id: str, started_ms: int, ended_ms: int) -> int:
    """Add an ended shift's time on duty to its driver's days (split at the merchant's midnights), once per shift
    (the marker is the shift's start). Returns how many days were counted now."""
    if ended_ms <= started_ms:
        return 0
    counted = 0
    s = store(repo)
    for day, duty_ms in rules.split_by_day(started_ms, ended_ms, _time_zone(repo, merchant_id)):
        targets = [CounterTarget("DAY", f"{day}#{rules.shard_of(driver_id)}", day),
                   CounterTarget("DRIVER", f"{day}#{driver_id}", driver_id),
                   CounterTarget("DRIVERWEEK", f"{rules.week_of(day)}#{driver_id}", driver_id, rules.week_of(day))]
        counted += s.add_once(merchant_id, f"shift-{driver_id}-{started_ms}-{day}", day, targets,
                              {"duty_ms": duty_ms})
    return counted


# --- the merchant API -----------------------------------------------------------------------------------------


def _eta_honesty(repo: Repository, merchant_id: str, day_from: date, day_to: date,
                 group_by: str) -> dict[str, dict[str, dict[str, Any]]]:
    """The ETA-honesty figures per group, as the stream pipeline records them at each arrival (zones: none)."""
    from chalicelib.pipeline import service as pipeline_service

    found = pipeline_service.eta_honesty(repo, merchant_id, day_from, day_to, group_by)
    return found if isinstance(found, dict) else {}


def _honesty_of(found: Any) -> dict[str, EtaHonesty] | None:
    """One group's ETA-honesty figures as the answer's model; a malformed entry is left out, never a 500."""
    from pydantic import ValidationError

    from chalicelib.analytics.models import EtaHonesty

    if not isinstance(found, dict):
        return None
    out: dict[str, EtaHonesty] = {}
    for minutes, figures in found.items():
        try:
            out[str(minutes)] = EtaHonesty.model_validate(figures)
        except ValidationError:
            continue
    return out or None


def _open_shifts(repo: Repository, merchant_id: str, day_from: date, day_to: date,
                 driver_id: str | None) -> list[CounterRow]:
    """The time on duty of shifts still open (counted for good when they end), so today's stops per hour are
    known during the day: one Query of the merchant's presence items, only when the range reaches today."""
    from chalicelib.fleet.presence import list_presence

    now = datetime.now(UTC)
    zone = _time_zone(repo, merchant_id)
    if rules.local_day(now, zone) < day_from.isoformat():
        return []
    now_ms = int(now.timestamp() * 1000)
    rows: list[CounterRow] = []
    for stored in list_presence(repo, merchant_id):
        since = stored.on_duty_since_ms
        if not stored.presence.on_duty or since is None or (driver_id is not None and stored.driver_id != driver_id):
            continue
        rows += [CounterRow(day, stored.driver_id, {"duty_ms": ms})
                 for day, ms in rules.split_by_day(since, now_ms, zone)
                 if day_from.isoformat() <= day <= day_to.isoformat()]
    return rows


def group_rows(rows: list[CounterRow], group_by: str, day_from: date, day_to: date) -> dict[str, dict[str, int]]:
    """Counter items summed per group; per day, every day of the range (an empty day is a row of zeros)."""
    grouped: dict[str, tuple[list[dict[str, int]], list[dict[str, int]]]] = {}
    if group_by == "day":
        grouped = {d: ([], []) for d in rules.days(day_from, day_to)}
    for row in rows:
        plus, minus = grouped.setdefault(row.day if group_by == "day" else row.group, ([], []))
        (minus if row.minus else plus).append(row.counters)
    return {key: rules.sum_counters(plus, minus) for key, (plus, minus) in grouped.items()}


def deliveries(repo: Repository, settings: Settings, merchant_id: str, query: DeliveriesQuery) -> DeliveriesPage:
    """The merchant's figures over a range of its days: one Query of its counter items (per day: the day shards,
    or with `driver_id` the driver's items; per driver: the driver items; per zone: the zone items), summed."""
    from chalicelib.analytics.models import DeliveriesPage, DeliveryFigures

    group_by, driver_id = query.group_by, query.driver_id
    kind = {"day": "DRIVER" if driver_id else "DAY", "driver": "DRIVER", "zone": "ZONE"}[group_by]
    if group_by == "driver":  # whole weeks from the week rollups, the edges from the day items
        plan = rules.driver_read_plan(query.from_, query.to)
        ranges = [("DRIVER", a, b, False) for a, b in plan.days] + [("DRIVER", a, b, True) for a, b in plan.minus_days]
        if plan.weeks is not None:
            ranges.append(("DRIVERWEEK", *plan.weeks, False))
        rows = store(repo).read(merchant_id, ranges, driver_id)
    else:
        rows = store(repo).rows(merchant_id, kind, query.from_.isoformat(), query.to.isoformat(),
                                driver_id if kind == "DRIVER" else None)
    if group_by != "zone":
        rows += _open_shifts(repo, merchant_id, query.from_, query.to, driver_id)
    grouped = group_rows(rows, group_by, query.from_, query.to)
    scope = f"analytics:{merchant_id}:{query.from_}:{query.to}:{group_by}:{driver_id or '*'}"
    start = cursor_in(settings, scope, query.cursor)
    after = str(start.get("after", "")) if start else ""
    keys = [k for k in sorted(grouped) if k > after]
    page, more = keys[:query.limit], len(keys) > query.limit
    honesty = _eta_honesty(repo, merchant_id, query.from_, query.to, group_by) if page else {}
    items = [DeliveryFigures(group=key, **rules.figures(grouped[key]), eta_honesty=_honesty_of(honesty.get(key)))
             for key in page]
    return DeliveriesPage(group_by=group_by, date_from=query.from_, date_to=query.to,
                          time_zone=_time_zone(repo, merchant_id), items=items,
                          next_cursor=cursor_out(settings, scope, {"after": page[-1]}) if more else None)


def deliveries_csv(page: DeliveriesPage) -> str:
    return rules.csv_text(page.group_by, [item.model_dump() for item in page.items])
