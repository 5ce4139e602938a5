"""Failed delivery attempts, redirects and the return to the depot: pure rules (stdlib only).

* Every `failed` status counts one attempt. The attempt that reaches the merchant's limit
  (`max_delivery_attempts`, default 3) sends the parcel back: the shipment goes `failed` -> `returned` in
  the same write, with a return-to-depot leg, and nothing is offered to the recipient any more.
* Before that, a failed shipment may be rescheduled to a new day or redirected (left in a safe place, or
  with a neighbour) by its recipient on the tracking page or by the merchant through the API; both make it
  `rescheduled`, ready for a route on its new day.
* The depot of the return leg is the merchant's first zone of kind `depot` (its centre), when there is one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

DEFAULT_MAX_ATTEMPTS = 3
REDIRECT_NOTE_MAX = 300
NEIGHBOUR_NAME_MAX = 80


class RedirectKind(StrEnum):
    SAFE_PLACE = "safe_place"
    NEIGHBOUR = "neighbour"


@dataclass(frozen=True, slots=True)
class AttemptOutcome:
    attempts: int  # counting the attempt that just failed
    returned: bool  # the limit is reached: the parcel goes back to the depot


def after_failed_attempt(previous_attempts: int, max_attempts: int) -> AttemptOutcome:
    """The count and the outcome once one more attempt has failed."""
    attempts = max(previous_attempts, 0) + 1
    return AttemptOutcome(attempts, attempts >= max(max_attempts, 1))


def attempts_left(attempts: int, max_attempts: int) -> int:
    return max(max(max_attempts, 1) - attempts, 0)


def redirect_instructions(kind: RedirectKind, note: str | None, neighbour_name: str | None) -> dict[str, Any]:
    """The redirect as the driver's instructions (`recipient_instructions` shape, without `updated_at`)."""
    if kind == RedirectKind.SAFE_PLACE:
        text = f"Leave in a safe place: {note}" if note else "Leave in a safe place"
        return {"leave_at_door": True, "note": text}
    who = neighbour_name or "a neighbour"
    text = f"Deliver to neighbour {who}" + (f": {note}" if note else "")
    return {"leave_at_door": False, "note": text}


def ring_centre(geometry: Mapping[str, Any]) -> tuple[float, float] | None:
    """(lat, lng): the mean of the first exterior ring's corners of a GeoJSON Polygon or MultiPolygon."""
    coords: Any = geometry.get("coordinates")
    if geometry.get("type") == "MultiPolygon":
        coords = coords[0] if isinstance(coords, Sequence) and coords else None
    ring = coords[0] if isinstance(coords, Sequence) and coords else None
    if not isinstance(ring, Sequence) or len(ring) < 4:
        return None
    corners = ring[:-1]  # a closed ring repeats its first position
    try:
        lng = sum(float(p[0]) for p in corners) / len(corners)
        lat = sum(float(p[1]) for p in corners) / len(corners)
    except (TypeError, ValueError, IndexError):
        return None
    return lat, lng
