"""What arrival window a person is shown for a stop: pure rules over the engine's estimate (docs/eta.md, "The
window people see").

The engine's window (`geo.eta.estimate_route`) is statistics: wide at long horizons, and with a driver hundreds
of kilometres from the route it spans days. A recipient, a driver or a text message must never read that. So:

* Before the route starts (no estimate), or when the driver is absurdly far from the route
  (`MAX_ESTIMATE_DISTANCE_M`: the pipeline then writes no estimate), the promised window is shown.
* An estimate is at most `max_width_s(horizon)` wide: max(30 min, a quarter of the time to the expected
  arrival), never more than 2 h; a wider one is shrunk around the expected arrival, keeping its skew.
* It is same-day in the recipient's zone: "today" is the local day the estimate was computed on. An estimate
  whose expected arrival is past that day's end shows "Delayed: later today" wording and no times; one whose
  edges spill over the day's midnight is clipped to the day. Read on another day, it is stale (the promise);
  read after its whole window has passed (a silent phone), it says "later today" too.
* Every window carries its zone's abbreviation ("CST", "CET"; "UTC" for UTC), so times are never bare.
* An estimate expected before the promised window opens says so (`before_window`): the merchant's drivers
  deliver early (`early_arrival` "deliver"), and a recipient reading only the window would not be home yet.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, tzinfo
from typing import Literal

from chalicelib.core.times import from_ms, to_ms

MIN_WIDTH_S = 30 * 60.0
WIDTH_FRACTION = 0.25
MAX_WIDTH_S = 2 * 3600.0
MAX_ESTIMATE_DISTANCE_M = 300_000.0  # a driver this far from the next stop is not on this route's day yet

WindowKind = Literal["estimate", "later_today", "promised"]


@dataclass(frozen=True, slots=True)
class ShownWindow:
    """The window to show: `estimate` (earliest <= expected <= latest, same local day), `later_today` (no times:
    the estimate left the day) or `promised` (the merchant's window, expected None). `zone_label` names the zone."""

    kind: WindowKind
    earliest: datetime | None
    expected: datetime | None
    latest: datetime | None
    zone_label: str


def max_width_s(horizon_s: float) -> float:
    """The widest estimate shown for an arrival `horizon_s` seconds ahead: max(30 min, horizon / 4), capped at 2 h."""
    return min(MAX_WIDTH_S, max(MIN_WIDTH_S, WIDTH_FRACTION * max(0.0, horizon_s)))


def bounded_estimate(low_ms: int, expected_ms: int, high_ms: int, computed_at_ms: int) -> tuple[int, int, int]:
    """(low, expected, high) with low <= expected <= high and high - low <= max_width_s(horizon): a wider window is
    shrunk toward the expected arrival in proportion, so a window skewed late stays skewed late."""
    low, high = min(low_ms, expected_ms), max(high_ms, expected_ms)
    cap_ms = max_width_s((expected_ms - computed_at_ms) / 1000) * 1000
    width = high - low
    if width > cap_ms:
        scale = cap_ms / width
        low = expected_ms - int((expected_ms - low) * scale)
        high = expected_ms + int((high - expected_ms) * scale)
    return low, expected_ms, high


def zone_label(moment: datetime, zone: tzinfo) -> str:
    """The zone's abbreviation at `moment` ("CST", "CDT", "CET"); zones without one give their offset ("+0530")."""
    local = moment.astimezone(zone)
    return local.tzname() or local.strftime("%z") or "UTC"


def local_day_bounds(day: date, zone: tzinfo) -> tuple[datetime, datetime]:
    """The local day's first instant and the next day's (aware; a DST day is 23 or 25 hours long)."""
    return (datetime.combine(day, time(0), tzinfo=zone),
            datetime.combine(day + timedelta(days=1), time(0), tzinfo=zone))


def shown_window(estimate: tuple[int, int, int] | None, computed_at_ms: int | None,
                 promised: tuple[datetime | None, datetime | None], zone: tzinfo,
                 now_ms: int | None = None) -> ShownWindow | None:
    """The window for one stop (see the module's rules); None when there is neither an estimate nor a promise.

    With `now_ms`, an estimate computed on another local day than today's is stale (the promise is shown), and
    one whose whole window is already past says "later today": the driver has not come yet, and a window in
    the past would read as a broken promise with no news.
    """
    if estimate is not None and computed_at_ms is not None:
        low, expected, high = bounded_estimate(*estimate, computed_at_ms)
        computed = from_ms(computed_at_ms)
        day = computed.astimezone(zone).date()
        start, end = local_day_bounds(day, zone)
        start_ms, end_ms = to_ms(start), to_ms(end)
        stale = now_ms is not None and from_ms(now_ms).astimezone(zone).date() != day
        if not stale and (expected >= end_ms or (now_ms is not None and high < now_ms)):
            return ShownWindow("later_today", None, None, None, zone_label(computed, zone))
        if expected >= start_ms and not stale:  # (an estimate for a day already over: the promise is shown)
            low, high = max(low, start_ms), min(high, max(expected, end_ms - 60_000))  # 23:59, not 00:00
            return ShownWindow("estimate", from_ms(low), from_ms(expected), from_ms(high),
                               zone_label(from_ms(expected), zone))
    first, last = promised
    if first is None or last is None:
        return None
    return ShownWindow("promised", first, None, last, zone_label(first, zone))


def before_window(shown: ShownWindow | None, promised_start: datetime | None) -> bool:
    """The estimate shown expects the driver before the promised window opens (say so next to it)."""
    return shown is not None and shown.kind == "estimate" and shown.expected is not None \
        and promised_start is not None and shown.expected < promised_start
