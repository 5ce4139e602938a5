"""Fleet use cases: merchants and their keys, drivers and devices, positions, merchant settings."""

from __future__ import annotations

import hashlib
import hmac
import threading
from dataclasses import dataclass
from typing import Any

from cachetools import TTLCache
from pydantic import ValidationError

from chalicelib.core import errors
from chalicelib.core.config import Settings
from chalicelib.core.cursors import cursor_in, cursor_out
from chalicelib.core.errors import DomainError, ErrorKind
from chalicelib.core.patch import merge_patch
from chalicelib.core.security import (
    hash_secret,
    new_id,
    new_secret,
)
from chalicelib.core.times import from_ms
from chalicelib.core.types import field_problems
from chalicelib.fleet.models import (
    DriverCreate,
    DriverOut,
    DriverPage,
    DriverToken,
    DriverWithToken,
    GeneratedDeviceId,
    MerchantSettings,
    NearbyDriver,
    NearbyDrivers,
    Position,
)
from chalicelib.fleet.rules import (
    DEVICE_ID_REASON,
    TRACKER_FAILURES,
    FailureLimit,
    device_id_problem,
    generate_device_id,
)
from chalicelib.geo import cells as geo
from chalicelib.storage.repository import Repository, now_utc
from chalicelib.storage.tables import (
    DriverItem,
    MerchantItem,
    PositionItem,
    merchant_pk,
)


def create_merchant(repo: Repository, name: str) -> tuple[str, str]:
    """Create a merchant; returns (merchant id, API key). The key is never stored."""
    merchant_id = new_id("mer")
    api_key = new_secret("dsk")
    repo.create_merchant(merchant_id, name, hash_secret(api_key), api_key[:8])
    return merchant_id, api_key


def _driver_out(item: DriverItem) -> DriverOut:
    return DriverOut(id=item.driver_id, name=item.name, phone=item.phone, external_ref=item.external_ref,
                     created_at=item.created_at)


def create_driver(repo: Repository, merchant_id: str, body: DriverCreate) -> DriverWithToken:
    token = new_secret("dtk")
    driver_id = new_id("drv")
    item = DriverItem(merchant_pk(merchant_id), f"DRIVER#{driver_id}", merchant_id=merchant_id, driver_id=driver_id,
                      name=body.name, phone=body.phone, external_ref=body.external_ref,
                      token_hash=hash_secret(token), created_at=now_utc())
    repo.create_driver(item)
    return DriverWithToken(**_driver_out(item).model_dump(), token=token)


def require_driver(repo: Repository, merchant_id: str, driver_id: str) -> DriverItem:
    item = repo.get_driver(merchant_id, driver_id)
    if item is None:
        raise errors.not_found("Driver")
    return item


def get_driver(repo: Repository, merchant_id: str, driver_id: str) -> DriverOut:
    return _driver_out(require_driver(repo, merchant_id, driver_id))


def list_drivers(repo: Repository, settings: Settings, merchant_id: str, limit: int, cursor: str | None
                 ) -> DriverPage:
    scope = f"drivers:{merchant_id}"
    items, last = repo.list_drivers(merchant_id, limit, cursor_in(settings, scope, cursor))
    return DriverPage(items=[_driver_out(i) for i in items], next_cursor=cursor_out(settings, scope, last))


def rotate_driver_token(repo: Repository, merchant_id: str, driver_id: str) -> DriverToken:
    driver = require_driver(repo, merchant_id, driver_id)
    token = new_secret("dtk")
    repo.replace_driver_token(driver, hash_secret(token))
    return DriverToken(driver_id=driver_id, token=token)


def _position_out(item: PositionItem) -> Position:
    def opt(value: Any) -> float | None:
        return float(value) if value is not None else None

    return Position(driver_id=item.driver_id, lat=float(item.lat), lng=float(item.lng),
                    fix_time=from_ms(item.fix_ms), accuracy=opt(item.accuracy), speed=opt(item.speed),
                    heading=opt(item.heading), altitude=opt(item.altitude), battery=opt(item.battery),
                    cell=item.cell, received_at=from_ms(item.received_ms))


def driver_position(repo: Repository, merchant_id: str, driver_id: str) -> Position:
    require_driver(repo, merchant_id, driver_id)
    item = repo.get_position(driver_id)
    if item is None:
        raise errors.not_found("Position")
    return _position_out(item)


def nearby_drivers(repo: Repository, merchant_id: str, lat: float, lng: float, radius_m: float,
                   limit: int) -> NearbyDrivers:
    cells = geo.cells_within(lat, lng, radius_m)
    found = []
    for item in repo.positions_in_cells(merchant_id, cells):
        distance = geo.haversine_m(lat, lng, float(item.lat), float(item.lng))
        if distance <= radius_m:
            found.append(NearbyDriver(driver_id=item.driver_id, distance_m=round(distance, 1),
                                      position=_position_out(item)))
    found.sort(key=lambda d: d.distance_m)
    return NearbyDrivers(items=found[:limit])


def parse_merchant_settings(stored_json: str | None) -> MerchantSettings:
    """The one parser of a merchant's stored settings: the defaults when none are stored."""
    return MerchantSettings.model_validate_json(stored_json) if stored_json else MerchantSettings()


def merchant_settings(repo: Repository, merchant_id: str) -> MerchantSettings:
    return parse_merchant_settings(repo.merchant_settings(merchant_id))


@dataclass(frozen=True)
class MerchantProfile:
    """What the features need of a merchant, from one read of its item, parsed once."""

    merchant_id: str
    name: str
    settings: MerchantSettings
    notifications_json: str | None  # parsed by notifications only when an event may notify

    @classmethod
    def of(cls, item: MerchantItem) -> MerchantProfile:
        return cls(item.merchant_id, item.name, parse_merchant_settings(item.settings), item.notifications)


DEFAULT_MERCHANT_NAME = "Doorstep"
PROFILE_CACHE_S = 60.0  # a changed setting reaches a warm stream or schedule function within this
_profiles: TTLCache[str, MerchantProfile] = TTLCache(maxsize=1024, ttl=PROFILE_CACHE_S)
_profiles_lock = threading.Lock()  # the webhook sender reads profiles from its worker threads


def merchant_profile(repo: Repository, merchant_id: str) -> MerchantProfile | None:
    """The merchant's profile read now (one GetItem): for a request, which must see its own last change."""
    item = repo.get_merchant(merchant_id)
    return MerchantProfile.of(item) if item is not None else None


def cached_merchant_profile(repo: Repository, merchant_id: str) -> MerchantProfile:
    """The merchant's profile for stream and scheduled functions: read at most once a minute per warm container.
    A merchant that no longer exists reads as the defaults, so a late event still carries a sensible look."""
    with _profiles_lock:
        cached = _profiles.get(merchant_id)
    if cached is not None:
        return cached
    profile = merchant_profile(repo, merchant_id) or MerchantProfile(merchant_id, DEFAULT_MERCHANT_NAME,
                                                                     MerchantSettings(), None)
    with _profiles_lock:
        _profiles[merchant_id] = profile
    return profile


def forget_cached_profiles() -> None:
    """Tests and tools that change settings and need the change seen at once."""
    with _profiles_lock:
        _profiles.clear()


def replace_merchant_settings(repo: Repository, merchant_id: str, body: MerchantSettings) -> MerchantSettings:
    """Replace all settings (omitted fields take their defaults); the stream pipeline sees them within a minute."""
    repo.put_merchant_settings(merchant_id, body.model_dump_json())
    return body


SETTINGS_PATCH_ATTEMPTS = 5  # each lost race re-reads and merges again; five lost races in a row is a conflict


def patch_merchant_settings(repo: Repository, merchant_id: str, patch: dict[str, Any]) -> MerchantSettings:
    """Apply a JSON merge patch (`chalicelib.core.patch`) to the stored settings: only the fields sent change.

    The merged settings are validated whole (422 naming the field) and written conditionally on the settings
    read, so a concurrent change is never overwritten with a stale copy: a lost race merges again into what won.
    """
    for _ in range(SETTINGS_PATCH_ATTEMPTS):
        stored = repo.merchant_settings(merchant_id, consistent=True)
        current = parse_merchant_settings(stored)
        try:
            merged = MerchantSettings.model_validate(merge_patch(current.model_dump(mode="json"), patch))
        except ValidationError as exc:
            raise errors.validation_failed(field_problems(exc)) from None
        new_json = merged.model_dump_json()
        if new_json == stored or repo.swap_merchant_settings(merchant_id, stored, new_json):
            return merged
    raise errors.conflict("The settings kept changing while this PATCH was applied; send it again.",
                          code="settings_changed")


def driver_for_device(repo: Repository, device_id: str) -> tuple[str, str] | None:
    """The driver a tracker app's device id stands for: the driver's own token, or a device id the merchant
    registered for that driver. Both are credentials, stored only as hashes. An id that is not unguessable
    (registered before ids had to carry 96 bits) stands for nobody: it is refused without a lookup."""
    if not device_id or len(device_id) > 256 or device_id_problem(device_id) is not None:
        return None
    digest = hash_secret(device_id)
    return repo.driver_for_token(digest) or repo.driver_for_device(digest)


# Sources over the limit in this warm container -> the end of their window: their further failures answer 429
# without another write. Only a shortcut: the counter item in the table is what holds across containers.
_BLOCKED: dict[str, int] = {}
_BLOCKED_MAX = 4096


def tracker_failed(repo: Repository, settings: Settings, source_ip: str | None, now_s: int,
                   failure: DomainError, limit: FailureLimit = TRACKER_FAILURES) -> DomainError:
    """Count a failed tracker attempt (unknown device id, wrong credentials) for its source address; the error
    to answer: `failure` itself while the source is under the limit, 429 with Retry-After once it is over.

    The count is a counter item per (source, fixed window) in the table (an ADD with a TTL, conditional on the
    limit): Lambda runs many containers at once, so a per-container count would allow the limit once per
    container. The source address is stored only as a keyed hash. Successful attempts are never counted or
    slowed, so one misconfigured phone behind a shared (carrier NAT) address does not block the others.
    """
    start, end = limit.window(now_s)
    source = hmac.new(settings.token_secret.encode(), f"tracker-source:{source_ip or '-'}".encode(),
                      hashlib.sha256).hexdigest()[:32]
    blocked_until = _BLOCKED.get(source)
    if blocked_until is None or blocked_until <= now_s:
        if repo.count_failure(f"RATELIMIT#tracker#{source}", f"WINDOW#{start}", limit.failures, end + 3600):
            return failure
        if len(_BLOCKED) >= _BLOCKED_MAX:
            for key in [k for k, until in _BLOCKED.items() if until <= now_s] or list(_BLOCKED):
                del _BLOCKED[key]
        _BLOCKED[source] = end
    return DomainError(ErrorKind.RATE_LIMITED, "too_many_failures",
                       "Too many failed tracker attempts from this address; check the app's device id and retry "
                       "later.", [errors.FieldProblem("id", "too many unknown device ids from this address")],
                       retry_after_s=max(1, end - now_s))


def driver_for_credentials(repo: Repository, driver_id: str, token: str) -> tuple[str, str] | None:
    """(merchant id, driver id) when `token` is the token of the driver `driver_id` (OwnTracks' Basic auth)."""
    found = repo.driver_for_token(hash_secret(token))
    return found if found is not None and found[1] == driver_id else None


def register_device(repo: Repository, merchant_id: str, driver_id: str, device_id: str) -> None:
    """Let a tracker app with this device id post the driver's positions.

    An id that is not unguessable is refused (422 naming `device_id`). So is an id another merchant holds, with
    the very same answer: nobody learns whether an id exists in another tenant. An id another of the merchant's
    own drivers holds is a 409 (the merchant's own data).
    """
    problem = device_id_problem(device_id)
    if problem is not None:
        raise _unusable_device_id(problem)
    require_driver(repo, merchant_id, driver_id)
    holder = repo.register_device(merchant_id, driver_id, hash_secret(device_id))
    if holder is None:
        return
    if holder[0] == merchant_id:
        raise errors.conflict("This device id belongs to another of your drivers.", "device_id",
                              "registered for another driver")
    raise _unusable_device_id(DEVICE_ID_REASON)  # another tenant's id: the same answer as an unusable one


def generate_device(repo: Repository, merchant_id: str, driver_id: str) -> GeneratedDeviceId:
    """A new random device id (100 bits) registered for the driver; answered once, stored only as a hash."""
    require_driver(repo, merchant_id, driver_id)
    device_id = generate_device_id()
    if repo.register_device(merchant_id, driver_id, hash_secret(device_id)) is not None:
        raise errors.service_unavailable("Please retry the request.")  # a 100-bit collision: not in practice
    return GeneratedDeviceId(driver_id=driver_id, device_id=device_id)


def _unusable_device_id(reason: str) -> DomainError:
    return errors.validation_failed([errors.FieldProblem("device_id", reason)])


def record_driver_transition(repo: Repository, merchant_id: str, driver_id: str, event: str, region: str | None,
                             region_id: str | None, occurred_ms: int, lat: float | None, lng: float | None) -> None:
    """A region enter/leave the driver's own app reported (OwnTracks), kept with the zone events."""
    from chalicelib.geo.geofence import event_id
    from chalicelib.storage.tables import zone_event_item

    kind = "enter" if event == "enter" else "exit"
    zone_id = f"device:{region_id or region or 'region'}"[:200]
    repo.put_zone_event_once(zone_event_item(
        merchant_id, driver_id, event_id(driver_id, zone_id, kind, occurred_ms), kind, zone_id,
        (region or region_id or "device region")[:200], from_ms(occurred_ms),
        lat or 0.0, lng or 0.0))
