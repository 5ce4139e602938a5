"""Pure rules of the lookup page: slugs, the second factor, the embedding origins, and the attempt limits.

No I/O: the service reads and writes, these decide. Comparisons that may tell a miss from a match run in
constant time and always compare both factors, so a wrong postcode costs what a wrong phone ending costs.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

SLUG = re.compile(r"^[a-z0-9](?:[a-z0-9-]{1,38}[a-z0-9])$")
SLUG_PATTERN = SLUG.pattern
ORIGIN = re.compile(r"^https://[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?(?::[0-9]{1,5})?$")
ORIGIN_PATTERN = ORIGIN.pattern
MAX_ALLOWED_ORIGINS = 10
ORDER_MAX = 100  # external_ref's own limit
FACTOR_MAX = 20  # postal_code's own limit
_NOT_ALNUM = re.compile(r"[^0-9A-Z]")
_NOT_DIGIT = re.compile(r"[^0-9]")
# Compared when the shipment (or its postcode or phone) is missing, so a miss does the same work as a match.
_NOTHING = "\x00" * 16


@dataclass(frozen=True)
class AttemptLimit:
    """Per client (hashed address): at most `attempts` lookups per fixed window of `window_s` seconds."""

    attempts: int = 20
    window_s: int = 600

    def window(self, now_s: int) -> tuple[int, int]:
        start = now_s - now_s % self.window_s
        return start, start + self.window_s


@dataclass(frozen=True)
class MissLock:
    """Per order number: `misses` wrong answers, each within `lock_s` of the last, lock the number for `lock_s`
    (every further attempt, right or wrong, answers the locked page until it has been quiet that long)."""

    misses: int = 5
    lock_s: int = 900

    def locked(self, misses: int, quiet_until_s: int, now_s: int) -> bool:
        return misses >= self.misses and now_s < quiet_until_s


CLIENT_LIMIT = AttemptLimit()
ORDER_LOCK = MissLock()


def valid_slug(slug: str) -> bool:
    return bool(SLUG.fullmatch(slug))


def normalize_order(order: str) -> str:
    """The order number as typed, trimmed (external_refs are matched exactly, as the merchant API does)."""
    return order.strip()[:ORDER_MAX]


def normalize_postcode(value: str) -> str:
    """Upper case, letters and digits only: `sw1a 1aa`, `SW1A-1AA` and `SW1A1AA` are one postcode."""
    return _NOT_ALNUM.sub("", value.upper())[:FACTOR_MAX]


def phone_ending(phone: str | None) -> str:
    """The last four digits of a phone number, or '' when it has fewer."""
    digits = _NOT_DIGIT.sub("", phone or "")
    return digits[-4:] if len(digits) >= 4 else ""


def _same(given: str, expected: str) -> bool:
    # compare_digest on equal-length digests: constant time whatever the lengths typed.
    a = hashlib.sha256(given.encode()).digest()
    b = hashlib.sha256((expected or _NOTHING).encode()).digest()
    return hmac.compare_digest(a, b) and bool(expected)


def factor_matches(given: str, postcode: str | None, phone: str | None) -> bool:
    """True when `given` is the delivery address's postcode or the last four digits of the recipient's phone.
    Both comparisons always run."""
    typed = normalize_postcode(given)
    by_postcode = _same(typed, normalize_postcode(postcode or ""))
    by_phone = _same(typed, phone_ending(phone))
    return bool(typed) and (by_postcode | by_phone)


def shipment_factors(address: Mapping[str, object] | None, recipient: Mapping[str, object] | None
                     ) -> tuple[str | None, str | None]:
    postcode = (address or {}).get("postal_code")
    phone = (recipient or {}).get("phone")
    return (str(postcode) if postcode else None, str(phone) if phone else None)


def hashed_client(secret: str, source_ip: str | None) -> str:
    """The caller's address as a keyed hash (never stored in the clear)."""
    return hmac.new(secret.encode(), f"lookup-client:{source_ip or '-'}".encode(), hashlib.sha256).hexdigest()[:32]


def hashed_order(secret: str, merchant_id: str, order: str) -> str:
    """One merchant's order number as a keyed hash: its miss counter, whether or not the order exists."""
    return hmac.new(secret.encode(), f"lookup-order:{merchant_id}:{order}".encode(),
                    hashlib.sha256).hexdigest()[:32]


# --- embedding --------------------------------------------------------------------------------------


def normalize_origin(value: str) -> str | None:
    """`https://host[:port]` in lower case, or None for anything else (paths, http, wildcards)."""
    text = value.strip().rstrip("/").lower()
    if not ORIGIN.fullmatch(text):
        return None
    parts = urlsplit(text)
    if parts.port is not None and not 0 < parts.port < 65536:
        return None
    return text


def frame_ancestors(allowed: Iterable[str]) -> str:
    """The CSP frame-ancestors source list: the merchant's origins, or 'none' (no site may embed it)."""
    origins = [o for o in (normalize_origin(a) for a in allowed) if o]
    return " ".join(origins) if origins else "'none'"


def post_allowed(origin_header: str | None, fetch_site: str | None, own_origin: str, allowed: Iterable[str]
                 ) -> bool:
    """A lookup form post is accepted from our own pages (Sec-Fetch-Site same-origin: also our frame inside the
    merchant's page, whose post Chromium sends with `Origin: null`), from the merchant's allowed origins, and
    from clients that say neither (not a browser); a browser post from any other site is refused."""
    if fetch_site in ("same-origin", "none"):
        return True
    if origin_header is None:
        return fetch_site is None
    origin = origin_header.strip().rstrip("/").lower()
    if origin == own_origin.rstrip("/").lower():
        return True
    return origin in {o for o in (normalize_origin(a) for a in allowed) if o}
