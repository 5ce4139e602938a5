"""The driver web app's pure rules: signed per-driver links, the day of a route, the next stop.

A driver app link is `dl1.<payload>.<signature>` (base64url parts): the payload
names the merchant, the driver, the driver's link version and the expiry (epoch
seconds); the signature is the stage secret's HMAC for the `driver-app-link` purpose
(`core.signing`, which keeps it apart from tracking tokens, cursors and CSRF tokens).
Nothing is stored per link: revoking bumps the version on the driver item, so
every link signed with an older version stops working at once. The merchant id
travels in the payload so that checking a link costs one GetItem (the driver).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, tzinfo

from chalicelib.core.signing import Purpose, Signer, unexpired
from chalicelib.shipments.lifecycle import DRIVER_VISIBLE, ShipmentStatus

LINK_PREFIX = "dl1"
MAX_LINK_LENGTH = 400
DEFAULT_EXPIRES_HOURS = 16  # a working day with margin
MAX_EXPIRES_HOURS = 72
_ID = r"[A-Za-z0-9_-]{1,64}"
_PAYLOAD = re.compile(rf"^({_ID}):({_ID}):(\d{{1,9}}):(\d{{1,12}})$")

# Stops the driver can still act on (arrived / delivered / failed are allowed from these).
ACTIONABLE = DRIVER_VISIBLE


@dataclass(frozen=True, slots=True)
class LinkClaims:
    """What a well-signed, unexpired link says. The version still has to match the driver's."""

    merchant_id: str
    driver_id: str
    version: int
    expires_at: datetime


def _signer(token_secret: str) -> Signer:
    return Signer(token_secret, Purpose.DRIVER_LINK)


def sign_link(token_secret: str, merchant_id: str, driver_id: str, version: int, expires_at: datetime) -> str:
    """The link token for (merchant, driver, version), valid until `expires_at` (whole seconds)."""
    if not re.fullmatch(_ID, merchant_id) or not re.fullmatch(_ID, driver_id) or version < 0:
        raise ValueError("ids must be 1-64 characters of [A-Za-z0-9_-] and the version non-negative")
    payload = f"{merchant_id}:{driver_id}:{version}:{int(expires_at.timestamp())}".encode()
    return f"{LINK_PREFIX}.{_signer(token_secret).seal(payload)}"


def looks_like_link(token: str) -> bool:
    """A bearer value that claims to be a driver app link (the driver's own tokens start with `dtk_`)."""
    return token.startswith(LINK_PREFIX + ".")


def verify_link(token_secret: str, token: str, now: datetime) -> LinkClaims | None:
    """The link's claims if it was signed under `token_secret` and has not expired; None for anything else
    (malformed, tampered, signed elsewhere, expired). Constant-time signature comparison."""
    if len(token) > MAX_LINK_LENGTH or not looks_like_link(token):
        return None
    payload = _signer(token_secret).unseal(token.removeprefix(LINK_PREFIX + "."))
    match = _PAYLOAD.match(payload.decode("ascii", "replace")) if payload is not None else None
    if match is None or not unexpired(expires_s := int(match.group(4)), now.timestamp()):
        return None
    return LinkClaims(match.group(1), match.group(2), int(match.group(3)), datetime.fromtimestamp(expires_s, UTC))


def link_version(stored: int | float | None) -> int:
    """The driver's current link version: links issued before any revocation carry 0."""
    return int(stored) if stored is not None else 0


# --- today's route ------------------------------------------------------------------------


def local_day(now: datetime, tz: tzinfo) -> date:
    """The calendar day at `now` in the merchant's time zone: what "today's route" means for the driver."""
    return now.astimezone(tz).date()


@dataclass(frozen=True, slots=True)
class RouteCandidate:
    route_id: str
    status: str  # planned, active, completed
    created_at: datetime


_ROUTE_PREFERENCE = {"active": 0, "planned": 1}


def pick_route(routes: Iterable[RouteCandidate]) -> str | None:
    """The route to show for a day: the active one, else a planned one, else the last completed;
    among equals the most recently created."""
    ranked = sorted(routes, key=lambda r: (_ROUTE_PREFERENCE.get(r.status, 2), -r.created_at.timestamp()))
    return ranked[0].route_id if ranked else None


def next_stop(stops: Sequence[str], statuses: Mapping[str, ShipmentStatus | str]) -> str | None:
    """The first stop in route order the driver can still act on (out for delivery, approaching, arrived)."""
    for shipment_id in stops:
        status = statuses.get(shipment_id)
        if status is not None and ShipmentStatus(status) in ACTIONABLE:
            return shipment_id
    return None
