"""Screening a batch of location pings: what is stored, what is a duplicate, what is refused.

Parsing (types, ranges) happens at the edge with pydantic; this module applies
the rules that need context: the server clock, the batch itself and the
driver's last known fix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from chalicelib.geo.cells import fine_cell, haversine_m

MAX_FUTURE_MS = 2 * 60 * 1000
MAX_AGE_MS = 7 * 24 * 3600 * 1000
# A fix vaguer than this is history, never the latest position (the geofences ignore it too).
POSITION_MAX_ACCURACY_M = 100.0
# Below this gap two fixes are compared for an impossible implied speed;
# above it the phone may have been off in a moving vehicle, so we trust the fix.
SPEED_CHECK_WINDOW_MS = 5 * 60 * 1000

Outcome = Literal["accepted", "duplicate", "rejected"]


@dataclass(slots=True)
class Fix:
    """A parsed fix as it arrived; optional fields are None when the phone did not say.

    Not frozen: frozen dataclasses pay for object.__setattr__ per field, measurable on the ingest path.
    """

    lat: float
    lng: float
    fix_ms: int
    accuracy: float | None = None
    speed: float | None = None
    heading: float | None = None
    altitude: float | None = None
    battery: float | None = None


@dataclass(slots=True)
class Ping:
    """A fix accepted for storage, H3-indexed."""

    driver_id: str
    merchant_id: str
    fix_ms: int
    lat: float
    lng: float
    cell: str
    received_ms: int
    accuracy: float | None = None
    speed: float | None = None
    heading: float | None = None
    altitude: float | None = None
    battery: float | None = None


@dataclass(slots=True)
class ItemResult:
    index: int
    status: Outcome
    fix_ms: int | None = None
    field: str | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class ScreenLimits:
    max_accuracy_m: float
    max_speed_mps: float


@dataclass
class Screening:
    """Per-item outcomes in request order, and the pings to store."""

    results: list[ItemResult | None]
    to_store: dict[int, Ping] = field(default_factory=dict)  # request index -> ping

    def mark_duplicates(self, stored_fix_ms: set[int]) -> None:
        """Turn pings already in storage into duplicates (a retried batch)."""
        for index, ping in list(self.to_store.items()):
            if ping.fix_ms in stored_fix_ms:
                del self.to_store[index]
                self.results[index] = ItemResult(index, "duplicate", ping.fix_ms)

    def finalize(self) -> list[ItemResult]:
        for index, ping in self.to_store.items():
            self.results[index] = ItemResult(index, "accepted", ping.fix_ms)
        return [r for r in self.results if r is not None]

    def newest(self, max_accuracy_m: float | None = None) -> Ping | None:
        """The newest fix to store; with `max_accuracy_m`, the newest precise enough to be a position."""
        pings = [p for p in self.to_store.values()
                 if max_accuracy_m is None or p.accuracy is None or p.accuracy <= max_accuracy_m]
        return max(pings, key=lambda p: p.fix_ms, default=None)


@dataclass(slots=True)
class LastFix:
    fix_ms: int
    lat: float
    lng: float


def screen_batch(
    parsed: list[Fix | ItemResult],
    *,
    driver_id: str,
    merchant_id: str,
    now_ms: int,
    limits: ScreenLimits,
    last_fix: LastFix | None,
) -> Screening:
    """Apply clock, accuracy, duplicate and speed rules to a parsed batch.

    `parsed` holds, per request item, either a parsed Fix or the rejection the
    parser already decided. Duplicates inside the batch keep the first copy.
    """
    results: list[ItemResult | None] = [None] * len(parsed)
    candidates: list[tuple[int, Fix]] = []
    seen_ms: set[int] = set()
    for index, item in enumerate(parsed):
        if isinstance(item, ItemResult):
            results[index] = item
            continue
        reason = _clock_or_accuracy_problem(item, now_ms, limits)
        if reason is not None:
            results[index] = ItemResult(index, "rejected", item.fix_ms, reason[0], reason[1])
        elif item.fix_ms in seen_ms:
            results[index] = ItemResult(index, "duplicate", item.fix_ms)
        else:
            seen_ms.add(item.fix_ms)
            candidates.append((index, item))

    screening = Screening(results)
    candidates.sort(key=lambda pair: pair[1].fix_ms)
    previous = last_fix
    # The last fix refused for speed: if the next fix agrees with it rather than with `previous`,
    # `previous` was the outlier (e.g. a glitch stored after a long gap) and both are accepted,
    # so one bad stored fix cannot lock a driver out.
    refused: tuple[int, Fix] | None = None
    for index, fix in candidates:
        implied = _implied_speed(previous, fix)
        if implied is not None and implied > limits.max_speed_mps:
            if refused is not None and (_implied_speed(_as_last(refused[1]), fix) or 0.0) <= limits.max_speed_mps:
                for keep_index, keep in (refused, (index, fix)):
                    screening.to_store[keep_index] = _ping(keep, driver_id, merchant_id, now_ms)
                previous, refused = _as_last(fix), None
                continue
            results[index] = ItemResult(
                index, "rejected", fix.fix_ms, "lat",
                f"implied speed {implied:.0f} m/s from the previous fix exceeds {limits.max_speed_mps:.0f} m/s",
            )
            refused = (index, fix)
            continue
        screening.to_store[index] = _ping(fix, driver_id, merchant_id, now_ms)
        refused = None
        if previous is None or fix.fix_ms > previous.fix_ms:
            previous = _as_last(fix)
    return screening


def _as_last(fix: Fix) -> LastFix:
    return LastFix(fix.fix_ms, fix.lat, fix.lng)


def _implied_speed(previous: LastFix | None, fix: Fix) -> float | None:
    """m/s between two fixes close enough in time to judge; None when there is nothing to compare."""
    if previous is None or not 0 < fix.fix_ms - previous.fix_ms <= SPEED_CHECK_WINDOW_MS:
        return None
    return haversine_m(previous.lat, previous.lng, fix.lat, fix.lng) / ((fix.fix_ms - previous.fix_ms) / 1000)


def _ping(fix: Fix, driver_id: str, merchant_id: str, now_ms: int) -> Ping:
    return Ping(driver_id=driver_id, merchant_id=merchant_id, fix_ms=fix.fix_ms, lat=fix.lat, lng=fix.lng,
                cell=fine_cell(fix.lat, fix.lng), received_ms=now_ms, accuracy=fix.accuracy, speed=fix.speed,
                heading=fix.heading, altitude=fix.altitude, battery=fix.battery)


def _clock_or_accuracy_problem(fix: Fix, now_ms: int, limits: ScreenLimits) -> tuple[str, str] | None:
    if fix.fix_ms > now_ms + MAX_FUTURE_MS:
        return "fix_time", "more than 2 minutes ahead of server time"
    if fix.fix_ms < now_ms - MAX_AGE_MS:
        return "fix_time", "older than 7 days"
    if fix.accuracy is not None and fix.accuracy > limits.max_accuracy_m:
        return "accuracy", f"worse than {limits.max_accuracy_m:.0f} m"
    return None
