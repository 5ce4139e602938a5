"""Driver presence, pure: on duty or not, moving, stopped, offline, and why; when a driver is due to be
declared offline; when a stream batch has to move that time (at most once a minute per driver).

Nothing here reads or writes storage: `fleet.presence` applies these decisions with conditional writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

PresenceState = Literal["moving", "stopped", "offline", "off_duty"]
OfflineReason = Literal["location_off", "app_background", "low_battery", "lwt", "no_fixes"]
LocationPermission = Literal["granted", "prompt", "denied"]
AppState = Literal["foreground", "background"]

DEFAULT_OFFLINE_AFTER_MINUTES = 5
# A stream batch moves the driver's due time only when it moves by at least this much: a driver pinging every
# few seconds costs one presence write a minute, not one per batch.
DUE_STEP_MS = 60_000
# At or below this battery percentage a silent phone is probably a flat one.
LOW_BATTERY_PERCENT = 10
# A fix at least this fast (m/s, ~3.6 km/h) and this recent counts as moving.
MOVING_MIN_SPEED_MPS = 1.0
MOVING_MAX_AGE_MS = 120_000
DUE_SHARDS = 4


@dataclass(frozen=True, slots=True)
class AppStatus:
    """What the driver app last reported of the phone (any part may be unknown)."""

    battery: int | None = None
    location_permission: LocationPermission | None = None
    app_state: AppState | None = None


@dataclass(frozen=True, slots=True)
class Presence:
    """A driver's stored presence, as the rules need it."""

    on_duty: bool = False
    offline: bool = False
    last_seen_ms: int | None = None
    reason: OfflineReason | None = None
    status: AppStatus = AppStatus()


def offline_due_ms(last_seen_ms: int | None, on_duty_since_ms: int, offline_after_minutes: float) -> int:
    """When a driver on duty with no fix since `last_seen_ms` (or since going on duty) is offline."""
    since = max(last_seen_ms or 0, on_duty_since_ms)
    return since + int(offline_after_minutes * 60_000)


def due_moves(written_due_ms: int | None, new_due_ms: int) -> bool:
    """Does a batch have to write its new due time? Only when it moves it forward by at least DUE_STEP_MS: the
    scheduler may then declare a driver offline up to DUE_STEP_MS late, never early."""
    return written_due_ms is None or new_due_ms - written_due_ms >= DUE_STEP_MS


def offline_reason(presence: Presence, *, lwt: bool = False) -> OfflineReason:
    """Why a driver most likely went silent: what its phone said last, else that it never sent a fix."""
    if lwt:
        return "lwt"
    status = presence.status
    if status.location_permission == "denied":
        return "location_off"
    if status.battery is not None and status.battery <= LOW_BATTERY_PERCENT:
        return "low_battery"
    if status.app_state == "background":
        return "app_background"
    if presence.last_seen_ms is None:
        return "no_fixes"
    # Silent for no reason the phone told: the phone lost its connection or the app was killed. The contract's
    # closest reason is that fixes stopped arriving.
    return "no_fixes"


def state_of(presence: Presence, *, now_ms: int, offline_after_minutes: float, fix_ms: int | None,
             speed_mps: float | None) -> PresenceState:
    """What the fleet view shows. Offline is shown as soon as the silence is long enough, even before the
    scheduler's next run records the episode (the event follows within a minute)."""
    if not presence.on_duty:
        return "off_duty"
    if presence.offline:
        return "offline"
    if presence.last_seen_ms is not None and now_ms - presence.last_seen_ms >= offline_after_minutes * 60_000:
        return "offline"
    if fix_ms is not None and speed_mps is not None and speed_mps >= MOVING_MIN_SPEED_MPS \
            and now_ms - fix_ms <= MOVING_MAX_AGE_MS:
        return "moving"
    return "stopped"


def shown_reason(presence: Presence, state: PresenceState) -> OfflineReason | None:
    """The reason the fleet view shows: the episode's, or for a driver about to be declared offline, the
    likely one; none for a driver who is fine (or off duty)."""
    if state != "offline":
        return None
    return presence.reason or offline_reason(presence)


def due_shard(driver_id: str) -> int:
    """The due index partition of a driver: stable, spread evenly (ids are random)."""
    return sum(driver_id.encode()) % DUE_SHARDS


def due_sort_key(due_ms: int, merchant_id: str, driver_id: str) -> str:
    """Sort key in the due index: by due time, so the scheduler reads only the drivers due by now."""
    return f"{due_ms:013d}#{merchant_id}#{driver_id}"


def offline_event_id(driver_id: str, episode: int) -> str:
    return f"driver-offline-{driver_id}-{episode}"


def online_event_id(driver_id: str, episode: int) -> str:
    return f"driver-online-{driver_id}-{episode}"


def off_duty_event_id(driver_id: str, episode: int) -> str:
    """The shift ended during offline episode `episode`: that episode is over without the driver coming back."""
    return f"driver-off-duty-{driver_id}-{episode}"
