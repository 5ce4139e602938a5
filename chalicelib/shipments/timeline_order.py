"""The one order of a shipment's timeline, for the merchant API and the recipient page alike (pure; docs/eta.md,
"One clock").

Every event carries two instants: `occurred_at` (when it happened, by the clock of whoever saw it: a phone's fix
time, the merchant's request) and `recorded_at` (when Doorstep stored it). Phones run late, go offline and have
wrong clocks, so `occurred_at` alone can put "Delivered 16:41" above "Order received 16:55". The rule:

1. `created` is always first.
2. Each event is placed at its *effective time*: its `occurred_at`, but never before the shipment's creation, and
   an attempt's event (approaching, arrived, dwell, departed, delayed, delivered, failed) never before the start
   of its attempt (the latest `out_for_delivery` recorded no later than it was), nor before an event of an
   earlier step of the same attempt that was recorded before it (a result typed on a phone whose clock is
   behind still reads after the arrival).
3. Events order by effective time; at equal times by their place in the delivery's lifecycle (assigned before out
   for delivery before approaching before arrived before dwell before departed before the attempt's result);
   then by `recorded_at`, then by id. The order is total, so any arrival order of the events reads the same.

The recipient page shows the effective time; the merchant API shows both stored instants, in this order.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Protocol, TypeVar

ATTEMPT_KINDS = frozenset({"approaching", "arrived", "dwell", "departed", "delayed", "delivered", "failed"})
LIFECYCLE_RANK = {
    "created": 0, "assigned": 10, "rescheduled": 15, "out_for_delivery": 20, "approaching": 30, "delayed": 35,
    "arrived": 40, "dwell": 50, "departed": 60, "delivered": 70, "failed": 70, "returned": 80, "cancelled": 80,
    "rated": 90,
}
OTHER_RANK = 55  # instructions, notifications, link revocations: between the stay and its result when tied


class TimelineEntry(Protocol):
    @property
    def type(self) -> str: ...
    @property
    def occurred_at(self) -> datetime: ...
    @property
    def recorded_at(self) -> datetime: ...
    @property
    def event_id(self) -> str: ...


E = TypeVar("E", bound=TimelineEntry)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def ordered_timeline(events: Iterable[E]) -> list[tuple[E, datetime]]:
    """The events in display order, each with its effective time (see the module's rules)."""
    items = list(events)
    created = [_aware(e.occurred_at) for e in items if e.type == "created"]
    floor = min(created) if created else None
    starts = sorted((_aware(e.recorded_at), _effective(_aware(e.occurred_at), floor)) for e in items
                    if e.type == "out_for_delivery")
    placed: list[tuple[tuple[int, datetime, int, datetime, str], E, datetime]] = []
    # Within an attempt, an event is never before one of an earlier lifecycle step recorded before it (a result
    # from a phone whose clock is behind still reads after the arrival): taken in recording order.
    seen: dict[datetime | None, list[tuple[int, datetime]]] = {}
    for e in sorted(items, key=lambda e: (_aware(e.recorded_at), _rank(e.type), e.event_id)):
        at = _effective(_aware(e.occurred_at), floor)
        rank = _rank(e.type)
        if e.type in ATTEMPT_KINDS:
            start = _attempt_start(starts, _aware(e.recorded_at))
            at = _effective(at, start)
            before = seen.setdefault(start, [])
            at = max([at, *(t for r, t in before if r < rank)])
            before.append((rank, at))
        key = (0 if e.type == "created" else 1, at, rank, _aware(e.recorded_at), e.event_id)
        placed.append((key, e, at))
    placed.sort(key=lambda p: p[0])
    return [(e, at) for _, e, at in placed]


def _rank(kind: str) -> int:
    return LIFECYCLE_RANK.get(kind, OTHER_RANK)


def _effective(moment: datetime, floor: datetime | None) -> datetime:
    return moment if floor is None or moment >= floor else floor


def _attempt_start(starts: Sequence[tuple[datetime, datetime]], recorded: datetime) -> datetime | None:
    """The effective time of the latest out_for_delivery recorded no later than `recorded`."""
    found = None
    for start_recorded, start_at in starts:
        if start_recorded > recorded:
            break
        found = start_at
    return found
