"""Identifiers, secrets and their hashes.

API keys, driver tokens and tracking tokens are 256-bit random (or keyed)
values; only their SHA-256 hashes are stored, and the hash is the lookup key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
from typing import Any

from chalicelib.core import times

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_id(prefix: str, now_ms: int | None = None) -> str:
    """A time-ordered id (`drv_01J...`): 48-bit millisecond time + 80 random bits.

    Sorting ids sorts by creation time, which keeps `SK begins_with` listings
    in creation order.
    """
    ms = times.now_ms() if now_ms is None else now_ms
    value = (ms << 80) | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return f"{prefix}_{''.join(reversed(chars)).lower()}"


def new_secret(prefix: str) -> str:
    """A bearer secret shown once to its owner (`dsk_...`, `dtk_...`)."""
    return f"{prefix}_{secrets.token_urlsafe(32)}"


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def tracking_token(token_secret: str, shipment_id: str, version: int) -> str:
    """The shipment's tracking token, derived (never stored) from the stage secret.

    Deriving it lets the platform rebuild a recipient's link for a later SMS
    while the table holds only its hash; bumping `version` revokes the old link.
    """
    mac = hmac.new(token_secret.encode(), f"track:{shipment_id}:{version}".encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode()


TRACKING_TOKEN_LENGTH = 43  # base64url of 32 bytes, unpadded


def looks_like_tracking_token(token: str) -> bool:
    return len(token) == TRACKING_TOKEN_LENGTH and all(c.isalnum() or c in "-_" for c in token)


class CursorError(ValueError):
    """A pagination cursor that was not issued by this deployment for this listing."""


def encode_cursor(token_secret: str, scope: str, last_key: dict[str, Any]) -> str:
    """An opaque, signed pagination cursor bound to one listing (`scope`)."""
    payload = json.dumps({"s": scope, "k": last_key}, separators=(",", ":"), sort_keys=True).encode()
    sig = hmac.new(token_secret.encode(), payload, hashlib.sha256).digest()[:16]
    return base64.urlsafe_b64encode(sig + payload).rstrip(b"=").decode()


def decode_cursor(token_secret: str, scope: str, cursor: str) -> dict[str, Any]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except (ValueError, TypeError):
        raise CursorError("not a cursor") from None
    sig, payload = raw[:16], raw[16:]
    expected = hmac.new(token_secret.encode(), payload, hashlib.sha256).digest()[:16]
    if len(sig) != 16 or not hmac.compare_digest(sig, expected):
        raise CursorError("not a cursor issued for this listing")
    data = json.loads(payload)
    if data.get("s") != scope or not isinstance(data.get("k"), dict):
        raise CursorError("not a cursor issued for this listing")
    key: dict[str, Any] = data["k"]
    return key
