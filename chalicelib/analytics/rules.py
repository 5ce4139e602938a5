"""Delivery analytics, the pure part: what one lifecycle event adds to the counters, the day it counts on, the
shard it lands on, the figures (counts and rates) a set of counter items sums to, and the CSV of them.
No storage, no AWS: tested without either."""

from __future__ import annotations

import csv
import io
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

MAX_RANGE_DAYS = 92  # a quarter: a query reads at most this many days of counter items
DAY_SHARDS = 4  # merchant-day and zone-day counters are spread over this many items (docs/data-model.md #118)
NO_ZONE = "none"  # the zone of a stop no zone of the merchant holds
GROUPINGS = ("day", "driver", "zone")

FAILURE_REASONS = ("not_home", "no_access", "refused", "damaged", "other")

# Every counter an item may hold (a DynamoDB number attribute each, added with ADD). Short names: they are
# written on every counted event, and an item's size is what its writes cost.
COUNTERS = ("delivered", "failed", "returned", "windowed", "on_time", "early", "late", "first_attempts",
            "first_attempt_ok", "proof", "far", "rating_sum", "rating_n", "rating_1", "rating_2", "rating_3",
            "rating_4", "rating_5", "comments", "duty_ms", *(f"failed_{r}" for r in FAILURE_REASONS))


@dataclass(frozen=True, slots=True)
class EventFacts:
    """What the counters need of a lifecycle event and its shipment (read once by the service)."""

    event_type: str  # delivered, failed, returned, rated
    occurred_at: datetime
    window_start: datetime | None = None
    window_end: datetime | None = None
    failed_before: int = 0  # failed attempts before this event (for a delivery: the shipment's `attempts`)
    attempt: int | None = None  # a failed event's attempt number (1 = the first)
    reason: str | None = None
    has_proof: bool = False
    far_from_stop: bool = False
    rating_score: int | None = None
    has_comment: bool = False


def contributions(facts: EventFacts) -> dict[str, int]:
    """What one event adds ({} for an event the figures ignore)."""
    added: dict[str, int] = {}
    if facts.event_type == "delivered":
        added["delivered"] = 1
        if facts.window_start is not None and facts.window_end is not None:
            added["windowed"] = 1
            if facts.occurred_at < facts.window_start:  # (a merchant whose drivers deliver early: how often)
                added["early"] = 1
            elif facts.occurred_at > facts.window_end:
                added["late"] = 1
            else:
                added["on_time"] = 1
        if facts.failed_before == 0:  # delivered at its first attempt
            added["first_attempts"] = 1
            added["first_attempt_ok"] = 1
        if facts.has_proof:
            added["proof"] = 1
        if facts.far_from_stop:
            added["far"] = 1
    elif facts.event_type == "failed":
        added["failed"] = 1
        reason = facts.reason if facts.reason in FAILURE_REASONS else "other"
        added[f"failed_{reason}"] = 1
        if (facts.attempt if facts.attempt is not None else facts.failed_before + 1) == 1:
            added["first_attempts"] = 1
    elif facts.event_type == "returned":
        added["returned"] = 1
    elif facts.event_type == "rated" and facts.rating_score is not None and 1 <= facts.rating_score <= 5:
        added.update({"rating_sum": facts.rating_score, "rating_n": 1, f"rating_{facts.rating_score}": 1})
        if facts.has_comment:
            added["comments"] = 1
    return added


def local_day(moment: datetime, time_zone: str) -> str:
    """The merchant's calendar day of a moment (what "per day" means to the merchant)."""
    return moment.astimezone(_zone(time_zone)).date().isoformat()


def _zone(time_zone: str) -> ZoneInfo:
    try:
        return ZoneInfo(time_zone)
    except (KeyError, ValueError):
        return ZoneInfo("UTC")


def split_by_day(start_ms: int, end_ms: int, time_zone: str) -> list[tuple[str, int]]:
    """A span of time (a shift) as (local day, milliseconds on that day), cut at the merchant's midnights."""
    zone = _zone(time_zone)
    out: list[tuple[str, int]] = []
    cursor = start_ms
    while cursor < end_ms:
        local = datetime.fromtimestamp(cursor / 1000, zone)
        next_midnight = datetime.combine(local.date() + timedelta(days=1), datetime.min.time(), zone)
        cut = min(end_ms, int(next_midnight.timestamp() * 1000))
        out.append((local.date().isoformat(), cut - cursor))
        cursor = cut
    return out


def shard_of(key: str) -> int:
    """A stable shard for an event's subject (its shipment): a shipment's events always land on one shard."""
    return zlib.crc32(key.encode()) % DAY_SHARDS


def range_problem(day_from: date, day_to: date) -> tuple[str, str] | None:
    """(field, reason) when the range cannot be answered, else None."""
    if day_to < day_from:
        return "to", "must not be before from"
    if (day_to - day_from).days + 1 > MAX_RANGE_DAYS:
        return "to", f"the range must span at most {MAX_RANGE_DAYS} days"
    return None


def week_of(day: str) -> str:
    """The Monday that starts a day's week: the key of the driver-week rollup (docs/data-model.md #120)."""
    d = date.fromisoformat(day)
    return (d - timedelta(days=d.weekday())).isoformat()


@dataclass(frozen=True, slots=True)
class DriverReadPlan:
    """How to read drivers' counters over a range with the fewest items. Per week the range touches: all 7
    days, or 5-6 of them, come from the week's rollup (minus its 1-2 days outside the range: fewer items than
    the days inside); 1-4 days from the day items."""

    weeks: tuple[str, str] | None  # first and last Monday of the weeks taken whole
    days: tuple[tuple[str, str], ...]  # day runs (inclusive) added
    minus_days: tuple[tuple[str, str], ...] = ()  # day runs (inclusive) subtracted from the weeks taken


WHOLE_WEEK_FROM_DAYS = 5  # a week with this many of its days in the range is read as its rollup


def driver_read_plan(day_from: date, day_to: date) -> DriverReadPlan:
    weeks: list[date] = []
    plus: list[tuple[str, str]] = []
    minus: list[tuple[str, str]] = []
    monday = day_from - timedelta(days=day_from.weekday())
    while monday <= day_to:
        sunday = monday + timedelta(days=6)
        inside_from, inside_to = max(monday, day_from), min(sunday, day_to)
        inside = (inside_to - inside_from).days + 1
        if inside >= WHOLE_WEEK_FROM_DAYS:
            weeks.append(monday)
            if inside_from > monday:
                minus.append((monday.isoformat(), (inside_from - timedelta(days=1)).isoformat()))
            if inside_to < sunday:
                minus.append(((inside_to + timedelta(days=1)).isoformat(), sunday.isoformat()))
        else:
            plus.append((inside_from.isoformat(), inside_to.isoformat()))
        monday += timedelta(days=7)
    return DriverReadPlan((weeks[0].isoformat(), weeks[-1].isoformat()) if weeks else None, tuple(plus),
                          tuple(minus))


def days(day_from: date, day_to: date) -> list[str]:
    return [(day_from + timedelta(days=i)).isoformat() for i in range((day_to - day_from).days + 1)]


def sum_counters(items: Iterable[Mapping[str, int]], minus: Iterable[Mapping[str, int]] = ()) -> dict[str, int]:
    """The items' counters added (and `minus`'s taken away: days outside the range of a week read whole)."""
    total = dict.fromkeys(COUNTERS, 0)
    for sign, group in ((1, items), (-1, minus)):
        for item in group:
            for name, value in item.items():
                if name in total:
                    total[name] += sign * value
    return total


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def figures(counters: Mapping[str, int]) -> dict[str, Any]:
    """Counts and rates of one group (rates are None where nothing was counted to divide by)."""
    c = {name: int(counters.get(name, 0)) for name in COUNTERS}
    completed = c["delivered"] + c["failed"]
    hours = c["duty_ms"] / 3_600_000
    return {
        "delivered": c["delivered"], "failed": c["failed"],
        "failed_by_reason": {r: c[f"failed_{r}"] for r in FAILURE_REASONS},
        "returned": c["returned"],
        "on_time": c["on_time"], "on_time_rate": _rate(c["on_time"], c["windowed"]),
        "delivered_early": c["early"], "delivered_late": c["late"],
        "first_attempts": c["first_attempts"], "first_attempt_success_rate": _rate(c["first_attempt_ok"],
                                                                                   c["first_attempts"]),
        "with_proof": c["proof"], "proof_compliance_rate": _rate(c["proof"], c["delivered"]),
        "far_from_stop": c["far"], "far_from_stop_rate": _rate(c["far"], c["delivered"]),
        "hours_on_duty": round(hours, 3),
        "stops_per_hour_on_duty": round(completed / hours, 3) if hours > 0 else None,
        "ratings_count": c["rating_n"],
        "rating_average": round(c["rating_sum"] / c["rating_n"], 3) if c["rating_n"] else None,
        "rating_distribution": {str(s): c[f"rating_{s}"] for s in range(1, 6)},
        "comments_count": c["comments"],
    }


CSV_COLUMNS = ("group", "delivered", "failed", *(f"failed_{r}" for r in FAILURE_REASONS), "returned", "on_time",
               "on_time_rate", "delivered_early", "delivered_late", "first_attempts", "first_attempt_success_rate",
               "with_proof", "proof_compliance_rate", "far_from_stop", "far_from_stop_rate", "hours_on_duty",
               "stops_per_hour_on_duty", "ratings_count", "rating_average", *(f"rating_{s}" for s in range(1, 6)),
               "comments_count")


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    text = str(value)
    # A spreadsheet runs a cell that starts with these as a formula (CSV injection): quote it as text.
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") and not _is_number(text) else text


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def csv_text(group_by: str, rows: Sequence[Mapping[str, Any]]) -> str:
    """The rows as CSV with a header row; the first column is named after the grouping."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([group_by if c == "group" else c for c in CSV_COLUMNS])
    for row in rows:
        flat: dict[str, Any] = {**row}
        flat.update({f"failed_{r}": n for r, n in (row.get("failed_by_reason") or {}).items()})
        flat.update({f"rating_{s}": n for s, n in (row.get("rating_distribution") or {}).items()})
        writer.writerow([_csv_value(flat.get(c)) for c in CSV_COLUMNS])
    return out.getvalue()
