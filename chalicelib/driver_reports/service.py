"""Driver reports' use cases: the stream pipeline's step (`on_fixes`), shifts from presence (`shift_ended`),
and the merchant API's reads (trips, stops, behaviour events, day summaries, the weekly scorecard, settings).

Cost in the pipeline: the running state rides on the pipeline's driver state item (about 0.4 KB more, still one
write unit for a short route), so a ping that closes nothing costs no extra request. A batch that closes a trip,
a stop or a behaviour event makes one BatchWriteItem (the closed items and the day item, ~0.3 KB each: one write
unit each) and one UpdateItem of the week's scorecard row. The thresholds are read once a minute per warm
container and merchant (one GetItem).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from cachetools import TTLCache

from chalicelib.core import errors
from chalicelib.core.config import Settings
from chalicelib.core.cursors import cursor_in, cursor_out
from chalicelib.core.observability import MetricUnit, metrics
from chalicelib.driver_reports import rules
from chalicelib.driver_reports.store import ReportStore

if TYPE_CHECKING:
    from chalicelib.driver_reports.models import (
        BehaviourEventPage,
        BehaviourQuery,
        DriverSummary,
        ReportQuery,
        ReportSettings,
        Scorecard,
        ScorecardQuery,
        StopPage,
        SummaryQuery,
        TripPage,
    )
    from chalicelib.geo.geofence import GeoFix
    from chalicelib.storage.repository import Repository


def store(repo: Repository) -> ReportStore:
    return ReportStore(repo.client)


# --- thresholds ----------------------------------------------------------------------------

SETTINGS_CACHE_S = 60.0
_thresholds: TTLCache[str, rules.Thresholds] = TTLCache(maxsize=1024, ttl=SETTINGS_CACHE_S)
_thresholds_lock = threading.Lock()  # the pipeline runs drivers on worker threads


def thresholds_of(raw: dict[str, Any] | None) -> rules.Thresholds:
    from chalicelib.driver_reports.models import ReportSettings

    s = ReportSettings.model_validate(raw or {})
    return rules.Thresholds(speeding_kmh=s.speeding_kmh, speeding_s=s.speeding_seconds,
                            harsh_braking_g=s.harsh_braking_g, harsh_acceleration_g=s.harsh_acceleration_g,
                            long_idle_min=s.long_idle_minutes)


def cached_thresholds(repo: Repository, merchant_id: str) -> rules.Thresholds:
    with _thresholds_lock:
        cached = _thresholds.get(merchant_id)
    if cached is not None:
        return cached
    found = thresholds_of(store(repo).settings(merchant_id))
    with _thresholds_lock:
        _thresholds[merchant_id] = found
    return found


def forget_cached_thresholds() -> None:
    with _thresholds_lock:
        _thresholds.clear()


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (KeyError, ValueError):
        return ZoneInfo("UTC")


# --- the stream pipeline's step ----------------------------------------------------------------


def on_fixes(repo: Repository, merchant_id: str, driver_id: str, running: dict[str, Any] | None,
             news: Sequence[GeoFix], route_stops: list[tuple[float, float]], time_zone: str) -> dict[str, Any] | None:
    """Fold a batch's new fixes (fix-time order, none seen before: the pipeline's `news_in_order`) into the
    driver's running report state and write what closed. Returns the new state for the pipeline's state item.
    Exactly once: the pipeline drops fixes at or before its last processed fix, and every write is keyed by
    fix times and days and written whole, so a rerun (a lost state race, a redelivered batch) writes the same
    items again."""
    if not news:
        return running
    state = rules.from_json(running)
    fixes = [rules.Fix(f.fix_ms, f.lat, f.lng, f.accuracy, f.speed) for f in news]
    zone = _zone(time_zone)
    outcome = rules.step(state, fixes, cached_thresholds(repo, merchant_id), zone, route_stops)
    if outcome.closed or outcome.days:
        store(repo).write(merchant_id, driver_id, outcome.closed, list(outcome.days.values()), int(time.time()))
        events = sum(1 for c in outcome.closed if isinstance(c, rules.BehaviourEvent))
        if events:
            metrics.add_metric(name="DriverBehaviourEvents", unit=MetricUnit.Count, value=events)
    return rules.to_json(state)


# --- shifts --------------------------------------------------------------------------------------


def shift_ended(repo: Repository, merchant_id: str, driver_id: str, start_ms: int, end_ms: int) -> bool:
    """A shift ended (fleet.presence.end_duty): keep it for the hours on duty, once."""
    if end_ms <= start_ms:
        return False
    from chalicelib.fleet.service import cached_merchant_profile

    zone = _zone(cached_merchant_profile(repo, merchant_id).settings.time_zone)
    by_week: dict[str, int] = {}
    for day, ms in rules.on_duty_ms_by_day([(start_ms, end_ms)], zone).items():
        week = rules.iso_week(date.fromisoformat(day))
        by_week[week] = by_week.get(week, 0) + ms
    return store(repo).record_shift(merchant_id, driver_id, start_ms, end_ms, by_week)


# --- the API -------------------------------------------------------------------------------------


def _driver_zone(repo: Repository, merchant_id: str, driver_id: str) -> ZoneInfo:
    """The merchant's zone; the driver must be the merchant's (another merchant's id is not found)."""
    if repo.get_driver(merchant_id, driver_id) is None:
        raise errors.not_found("Driver")
    from chalicelib.fleet.service import merchant_profile

    profile = merchant_profile(repo, merchant_id)
    return _zone(profile.settings.time_zone if profile is not None else "UTC")


def _local_ms(day: date, zone: ZoneInfo) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=zone).timestamp() * 1000)


DEFAULT_DAYS = 7


def _days(query: ReportQuery | SummaryQuery, zone: ZoneInfo) -> tuple[date, date]:
    """The query's local days: `from`..`to`; `from` and the 6 days after; or the 7 days up to today."""
    if query.from_ is not None:
        return query.from_, query.to or query.from_ + timedelta(days=DEFAULT_DAYS - 1)
    last = query.to or datetime.now(zone).date()
    return last - timedelta(days=DEFAULT_DAYS - 1), last


def _bounds(first: date, last: date, zone: ZoneInfo) -> tuple[int, int]:
    return _local_ms(first, zone), _local_ms(last + timedelta(days=1), zone)


def _at(ms: float) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _num(item: dict[str, Any], name: str) -> float:
    return float(item[name]["N"])


def _page(repo: Repository, settings: Settings, merchant_id: str, driver_id: str, query: ReportQuery,
          prefix: str) -> tuple[list[dict[str, Any]], str | None]:
    zone = _driver_zone(repo, merchant_id, driver_id)
    lo, hi = _bounds(*_days(query, zone), zone)
    scope = f"reports:{merchant_id}:{driver_id}:{prefix}:{lo}:{hi}"
    items, last = store(repo).page(merchant_id, driver_id, prefix, f"{lo:013d}", f"{hi:013d}", query.limit,
                                   cursor_in(settings, scope, query.cursor))
    return items, cursor_out(settings, scope, last)


def trips(repo: Repository, settings: Settings, merchant_id: str, driver_id: str, query: ReportQuery) -> TripPage:
    from chalicelib.driver_reports.models import TripOut, TripPage

    items, cursor = _page(repo, settings, merchant_id, driver_id, query, "TRIP#")
    return TripPage(items=[TripOut(
        start_at=_at(_num(i, "start_ms")), end_at=_at(_num(i, "end_ms")), start_lat=_num(i, "start_lat"),
        start_lng=_num(i, "start_lng"), end_lat=_num(i, "end_lat"), end_lng=_num(i, "end_lng"),
        distance_m=_num(i, "distance_m"), driving_s=_num(i, "driving_s"), max_speed_kmh=_num(i, "max_kmh"),
        average_speed_kmh=_num(i, "avg_kmh")) for i in items], next_cursor=cursor)


def stops(repo: Repository, settings: Settings, merchant_id: str, driver_id: str, query: ReportQuery) -> StopPage:
    from chalicelib.driver_reports.models import StopOut, StopPage

    items, cursor = _page(repo, settings, merchant_id, driver_id, query, "STOP#")
    return StopPage(items=[StopOut(
        start_at=_at(_num(i, "start_ms")), end_at=_at(_num(i, "end_ms")), lat=_num(i, "lat"), lng=_num(i, "lng"),
        duration_s=_num(i, "duration_s")) for i in items], next_cursor=cursor)


def behaviour_events(repo: Repository, settings: Settings, merchant_id: str, driver_id: str,
                     query: BehaviourQuery) -> BehaviourEventPage:
    from chalicelib.driver_reports.models import BehaviourEventOut, BehaviourEventPage

    items, cursor = _page(repo, settings, merchant_id, driver_id, query, "BEHAVIOUR#")
    # `kind` filters the page after the read: every kind is in one sort-key range by time
    return BehaviourEventPage(items=[BehaviourEventOut(
        kind=i["kind"]["S"], at=_at(_num(i, "at_ms")), lat=_num(i, "lat"), lng=_num(i, "lng"),
        value=_num(i, "value"), threshold=_num(i, "threshold"))
        for i in items if query.kind is None or i["kind"]["S"] == query.kind], next_cursor=cursor)


def _counts(events: dict[str, int]) -> dict[str, int]:
    return {k: events.get(k, 0) for k in rules.EVENT_KINDS}


def summary(repo: Repository, merchant_id: str, driver_id: str, query: SummaryQuery) -> DriverSummary:
    """One row per local day in [from, to] (days without a report item are zeros): 2 Queries, 1 GetItem."""
    from chalicelib.driver_reports.models import BehaviourCounts, DaySummaryOut, DriverSummary
    from chalicelib.fleet.presence import get_presence

    zone = _driver_zone(repo, merchant_id, driver_id)
    first, last = _days(query, zone)
    lo, hi = _bounds(first, last, zone)
    s = store(repo)
    found = {row.day: row.totals for row in s.days(merchant_id, driver_id, first.isoformat(), last.isoformat())}
    shifts = s.shifts(merchant_id, driver_id, lo, hi)
    presence = get_presence(repo, merchant_id, driver_id)
    if presence is not None and presence.presence.on_duty and presence.on_duty_since_ms is not None:
        shifts.append((presence.on_duty_since_ms, int(time.time() * 1000)))  # the shift under way
    on_duty = rules.on_duty_ms_by_day(shifts, zone)
    days = []
    day = first
    while day <= last:
        key = day.isoformat()
        t = found.get(key, rules.Totals(key))
        days.append(DaySummaryOut(
            day=day, distance_m=round(t.distance_m, 1), driving_s=round(t.driving_s, 1),
            stopped_s=round(t.stopped_s, 1), trips=t.trips, stops=t.stops, max_speed_kmh=round(t.max_speed_kmh, 1),
            hours_on_duty=round(on_duty.get(key, 0) / 3_600_000, 2), behaviour=BehaviourCounts(**_counts(t.events))))
        day += timedelta(days=1)
    return DriverSummary(driver_id=driver_id, time_zone=str(zone.key), days=days)


def scorecard(repo: Repository, settings: Settings, merchant_id: str, query: ScorecardQuery) -> Scorecard:
    """Every driver of the merchant, a page at a time: the drivers (one Query of the merchant's partition), then
    their rows of the week (one BatchGetItem); a driver without a row that week scores zeros."""
    from chalicelib.driver_reports.models import BehaviourCounts, Scorecard, ScorecardRow

    week = query.week
    if week is None:
        from chalicelib.fleet.service import merchant_profile

        profile = merchant_profile(repo, merchant_id)
        week = rules.iso_week(datetime.now(_zone(profile.settings.time_zone if profile else "UTC")).date())
    scope = f"scorecard:{merchant_id}:{week}"
    drivers, last = repo.list_drivers(merchant_id, query.limit, cursor_in(settings, scope, query.cursor))
    rows = store(repo).week_rows(merchant_id, week, [d.driver_id for d in drivers])
    items = []
    for driver in drivers:
        row = rows.get(driver.driver_id)
        t = row.totals if row is not None else rules.Totals(week)
        rate = rules.events_per_100km(t.events, t.distance_m)
        items.append(ScorecardRow(
            driver_id=driver.driver_id, name=driver.name, distance_km=round(t.distance_m / 1000, 2),
            driving_hours=round(t.driving_s / 3600, 2),
            hours_on_duty=round((row.on_duty_ms if row is not None else 0) / 3_600_000, 2), trips=t.trips,
            stops=t.stops, behaviour=BehaviourCounts(**_counts(t.events)),
            events_per_100km=None if rate is None else round(rate, 2), score=rules.score(t.events, t.distance_m)))
    return Scorecard(week=week, items=items, next_cursor=cursor_out(settings, scope, last))


def get_settings_(repo: Repository, merchant_id: str) -> ReportSettings:
    from chalicelib.driver_reports.models import ReportSettings

    return ReportSettings.model_validate(store(repo).settings(merchant_id) or {})


def put_settings(repo: Repository, merchant_id: str, body: ReportSettings) -> ReportSettings:
    store(repo).put_settings(merchant_id, body.model_dump())
    forget_cached_thresholds()  # this container sees it at once; others within a minute
    return body
