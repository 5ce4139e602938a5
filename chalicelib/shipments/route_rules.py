"""Route edit rules: what a new stop order changes, and when a route is done. Pure domain code."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

# A stop is done for its route once it reaches one of these: the route completes when every stop it still holds is.
ROUTE_STOP_DONE = frozenset({"delivered", "failed", "returned", "cancelled"})
# Stops that leave an edited route go back to `created` (to be planned again) unless they are done.
STOP_RELEASABLE = frozenset({"assigned", "out_for_delivery", "approaching", "arrived"})


@dataclass(frozen=True)
class StopEdit:
    """What a new stop order does to a route: the stops it adds, the stops it drops, and whether anything moved."""

    added: tuple[str, ...]
    removed: tuple[str, ...]
    reordered: bool


def plan_stop_edit(old: Sequence[str], new: Sequence[str]) -> StopEdit:
    """Compare a route's stops with the order the merchant wants (both without repeats)."""
    old_set, new_set = set(old), set(new)
    added = tuple(s for s in new if s not in old_set)
    removed = tuple(s for s in old if s not in new_set)
    kept_old = [s for s in old if s in new_set]
    kept_new = [s for s in new if s in old_set]
    return StopEdit(added, removed, kept_old != kept_new)


def route_done(statuses: Iterable[str]) -> bool:
    """A route with at least one stop, every one of them done (a stop with no status any more is not counted)."""
    seen = list(statuses)
    return bool(seen) and all(s in ROUTE_STOP_DONE for s in seen)
