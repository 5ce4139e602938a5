"""Identifiers, secrets and their hashes; tracking tokens and paging cursors (signed by `core.signing`).

API keys, driver tokens and tracking tokens are 256-bit random (or keyed)
values; only their SHA-256 hashes are stored, and the hash is the lookup key.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from typing import Any

from chalicelib.core import times
from chalicelib.core.signing import Purpose, Signer, b64decode, b64encode

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
    return Signer(token_secret, Purpose.TRACKING).derive(f"{shipment_id}:{version}")


TRACKING_TOKEN_LENGTH = 43  # base64url of 32 bytes, unpadded


def looks_like_tracking_token(token: str) -> bool:
    return len(token) == TRACKING_TOKEN_LENGTH and all(c.isalnum() or c in "-_" for c in token)


class CursorError(ValueError):
    """A pagination cursor that was not issued by this deployment for this listing."""


_CURSOR_MAC_BYTES = 16


def encode_cursor(token_secret: str, scope: str, last_key: dict[str, Any]) -> str:
    """An opaque, signed pagination cursor bound to one listing (`scope`): base64url(MAC[:16] + payload)."""
    payload = json.dumps({"s": scope, "k": last_key}, separators=(",", ":"), sort_keys=True).encode()
    return b64encode(Signer(token_secret, Purpose.CURSOR).mac(payload, _CURSOR_MAC_BYTES) + payload)


def decode_cursor(token_secret: str, scope: str, cursor: str) -> dict[str, Any]:
    raw = b64decode(cursor)
    if raw is None:
        raise CursorError("not a cursor")
    mac, payload = raw[:_CURSOR_MAC_BYTES], raw[_CURSOR_MAC_BYTES:]
    if not Signer(token_secret, Purpose.CURSOR).verify(payload, mac, _CURSOR_MAC_BYTES):
        raise CursorError("not a cursor issued for this listing")
    data = json.loads(payload)
    if data.get("s") != scope or not isinstance(data.get("k"), dict):
        raise CursorError("not a cursor issued for this listing")
    key: dict[str, Any] = data["k"]
    return key
