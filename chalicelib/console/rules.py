"""The console's session rules, pure: the signed session cookie, its CSRF token, and which requests need one.

A dispatcher signs in by posting the merchant's API key once (a form field, never a URL); the answer is a
session cookie and nothing else the page could leak. The cookie is `<payload>.<MAC>` sealed under the
`console-session` purpose: the payload names the merchant, a random session id and the expiry, so a forged
or expired cookie is refused before storage is read. The session id also names an item in the table
(docs/data-model.md, row 101) that sign-out deletes: a stolen cookie stops working at sign-out, not only at
expiry.

The cookie is HttpOnly (no script reads it), Secure and SameSite=Strict (no other site's page sends it). On
top of that every unsafe request made with the cookie must carry `X-CSRF-Token`: an HMAC of the session id
under the `console-csrf` purpose, which the console page receives in its HTML. A Bearer key needs no CSRF
token: no browser attaches it by itself.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie

from chalicelib.core.signing import Purpose, Signer, b64decode, b64encode, unexpired

SESSION_COOKIE = "doorstep_console"
SESSION_TTL_S = 12 * 3600
LINK_TTL_S = 15 * 60  # a sign-in link (`POST /v1/console/sign-in-links`) works once, within this
CSRF_HEADER = "x-csrf-token"
CSRF_MAC_BYTES = 18
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MAX_COOKIE_CHARS = 400  # a real session cookie is about 150 characters
_SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{16,64}$")


@dataclass(frozen=True, slots=True)
class SessionClaim:
    """What a session cookie says: whose it is, which session (the revocable item) and until when."""

    merchant_id: str
    session_id: str
    expires_s: int


def seal_session(secret: str, claim: SessionClaim) -> str:
    payload = json.dumps({"m": claim.merchant_id, "s": claim.session_id, "e": claim.expires_s},
                         separators=(",", ":")).encode()
    return Signer(secret, Purpose.CONSOLE_SESSION).seal(payload)


def open_session(secret: str, value: str | None, now_s: float) -> SessionClaim | None:
    """The claim of a cookie this stage signed and that has not expired; None for anything else."""
    if not value or len(value) > MAX_COOKIE_CHARS:
        return None
    payload = Signer(secret, Purpose.CONSOLE_SESSION).unseal(value)
    if payload is None:
        return None
    try:
        data = json.loads(payload)
        claim = SessionClaim(str(data["m"]), str(data["s"]), int(data["e"]))
    except (ValueError, KeyError, TypeError):
        return None
    if not claim.merchant_id or not _SESSION_ID.match(claim.session_id) or not unexpired(claim.expires_s, now_s):
        return None
    return claim


@dataclass(frozen=True, slots=True)
class LinkClaim:
    """What a one-time sign-in link says: whose, which link item (deleted when used) and until when."""

    merchant_id: str
    link_id: str
    expires_s: int


def seal_link(secret: str, claim: LinkClaim) -> str:
    payload = json.dumps({"m": claim.merchant_id, "l": claim.link_id, "e": claim.expires_s},
                         separators=(",", ":")).encode()
    return Signer(secret, Purpose.CONSOLE_LINK).seal(payload)


def open_link(secret: str, value: str | None, now_s: float) -> LinkClaim | None:
    """The claim of a sign-in link this stage signed and that has not expired; None for anything else."""
    if not value or len(value) > MAX_COOKIE_CHARS:
        return None
    payload = Signer(secret, Purpose.CONSOLE_LINK).unseal(value)
    if payload is None:
        return None
    try:
        data = json.loads(payload)
        claim = LinkClaim(str(data["m"]), str(data["l"]), int(data["e"]))
    except (ValueError, KeyError, TypeError):
        return None
    if not claim.merchant_id or not _SESSION_ID.match(claim.link_id) or not unexpired(claim.expires_s, now_s):
        return None
    return claim


def csrf_token(secret: str, session_id: str) -> str:
    """The CSRF token of one session: the same for its whole life, useless for any other session."""
    return b64encode(Signer(secret, Purpose.CONSOLE_CSRF).mac(session_id, CSRF_MAC_BYTES))


def csrf_valid(secret: str, session_id: str, value: str | None) -> bool:
    if not value or len(value) > 64:
        return False
    mac = b64decode(value.strip())
    return mac is not None and Signer(secret, Purpose.CONSOLE_CSRF).verify(session_id, mac, CSRF_MAC_BYTES)


def needs_csrf(method: str) -> bool:
    return method.upper() not in SAFE_METHODS


def session_cookie(headers: Mapping[str, str]) -> str | None:
    """The console session cookie of a request (lower-case header names), if it sent one."""
    raw = headers.get("cookie")
    if not raw:
        return None
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(raw)
    except CookieError:
        return None
    morsel = jar.get(SESSION_COOKIE)
    return morsel.value if morsel is not None else None


def set_cookie(value: str, path: str, max_age_s: int = SESSION_TTL_S) -> str:
    """The Set-Cookie header of a new session: HttpOnly, Secure, SameSite=Strict, expiring with the session."""
    return f"{SESSION_COOKIE}={value}; Path={path or '/'}; Max-Age={max_age_s}; HttpOnly; Secure; SameSite=Strict"


def clear_cookie(path: str) -> str:
    """The Set-Cookie header that removes the session cookie (sign-out)."""
    return f"{SESSION_COOKIE}=; Path={path or '/'}; Max-Age=0; HttpOnly; Secure; SameSite=Strict"
