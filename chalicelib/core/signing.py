"""The one signed-token helper: HMAC-SHA256 under the stage's token secret, one purpose per kind of token.

Six kinds of token are signed with the stage secret (`DOORSTEP_TOKEN_SECRET`), each under its own
`Purpose`, which is the first thing the MAC covers (`"<purpose>:" + message`). No purpose is a prefix of
another and each is followed by ":", so the signed messages of two purposes can never be the same bytes: a
pagination cursor can never be replayed as a driver app link, a CSRF token or a tracking token.

| purpose            | token                                   | expiry                       | module              |
|--------------------|-----------------------------------------|------------------------------|---------------------|
| `track`            | the MAC itself, base64url (43 chars)    | none (revoked by version)    | core/security.py    |
| `cursor`           | base64url(MAC[:16] + payload)           | none (bound to one listing)  | core/security.py    |
| `driver-app-link`  | `dl1.<payload>.<MAC>` (`seal`)          | in the payload, exclusive    | driver_app/rules.py |
| `csrf`             | `<issued>.<MAC[:18]>`                   | `max_age` after issue        | recipient/forms.py  |
| `console-session`  | `<payload>.<MAC>` (`seal`)              | in the payload; revocable    | console/rules.py    |
| `console-csrf`     | MAC[:18] of the session id, base64url   | with its session             | console/rules.py    |
| `console-link`     | `<payload>.<MAC>` (`seal`)              | in the payload; used once    | console/rules.py    |

The tracking token is derived, never stored (the table keeps its hash and the platform rebuilds the link
for a later message), so its bytes must never change: the purpose tags are exactly the prefixes the
four schemes used before they shared this helper, and the tests pin a known token. Verification is
constant-time (`hmac.compare_digest`) and refuses a MAC of any length but the scheme's.

The stdlib serves: itsdangerous would sign the same way but with its own key derivation and wire format,
which would change every tracking token (and with it every link already sent) and the other tokens' shapes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from dataclasses import dataclass
from enum import StrEnum


class Purpose(StrEnum):
    TRACKING = "track"
    CURSOR = "cursor"
    DRIVER_LINK = "driver-app-link"
    CSRF = "csrf"
    CONSOLE_SESSION = "console-session"
    CONSOLE_CSRF = "console-csrf"
    CONSOLE_LINK = "console-link"
    PREFERENCES = "recipient-preferences"


MAC_BYTES = 32  # HMAC-SHA256
MIN_MAC_BYTES = 16
_B64 = re.compile(r"^[A-Za-z0-9_-]+$")


def b64encode(data: bytes) -> str:
    """URL-safe base64 without padding (safe in a path segment, a query string or a form field)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64decode(text: str) -> bytes | None:
    """The bytes of `b64encode` text; None for anything else (other characters, impossible lengths)."""
    if not _B64.match(text):
        return None
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None


@dataclass(frozen=True, slots=True)
class Signer:
    """Signs and checks messages of one purpose under one secret."""

    secret: str
    purpose: Purpose

    def mac(self, message: bytes | str, size: int = MAC_BYTES) -> bytes:
        """The first `size` bytes of HMAC-SHA256(secret, "<purpose>:" + message)."""
        if not MIN_MAC_BYTES <= size <= MAC_BYTES:
            raise ValueError(f"a MAC is {MIN_MAC_BYTES} to {MAC_BYTES} bytes")
        data = message.encode() if isinstance(message, str) else message
        tagged = self.purpose.value.encode() + b":" + data
        return hmac.new(self.secret.encode(), tagged, hashlib.sha256).digest()[:size]

    def verify(self, message: bytes | str, mac: bytes, size: int = MAC_BYTES) -> bool:
        """Whether `mac` is this signer's `size`-byte MAC of `message`; constant time, and a MAC of any
        other length (a truncated one) is refused."""
        return len(mac) == size and hmac.compare_digest(mac, self.mac(message, size))

    def derive(self, message: str) -> str:
        """A token that is the MAC itself (43 characters): rebuilt from the message, never stored."""
        return b64encode(self.mac(message))

    def seal(self, payload: bytes) -> str:
        """`<payload>.<MAC>`, both base64url: the payload travels, readable but not forgeable."""
        return f"{b64encode(payload)}.{b64encode(self.mac(payload))}"

    def unseal(self, token: str) -> bytes | None:
        """The payload of a `seal`ed token signed by this signer; None for anything else."""
        encoded_payload, dot, encoded_mac = token.partition(".")
        if not dot:
            return None
        payload, mac = b64decode(encoded_payload), b64decode(encoded_mac)
        if payload is None or mac is None or not self.verify(payload, mac):
            return None
        return payload


def unexpired(expires_at_s: int, now_s: float) -> bool:
    """Whether a token that expires at `expires_at_s` (epoch seconds, exclusive) still works at `now_s`."""
    return now_s < expires_at_s


def issued_recently(issued_s: int, now_s: float, max_age_s: int, clock_skew_s: int = 60) -> bool:
    """Whether a token issued at `issued_s` is at most `max_age_s` old (and not from more than the allowed
    clock skew in the future)."""
    return now_s - max_age_s <= issued_s <= now_s + clock_skew_s
