"""Console sessions: sign in with the merchant's API key, authenticate a request by its cookie, sign out."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from chalicelib.console import rules
from chalicelib.core import errors
from chalicelib.core.observability import metrics

if TYPE_CHECKING:
    from chalicelib.storage.repository import Repository


@dataclass(frozen=True, slots=True)
class StartedSession:
    cookie_value: str
    csrf_token: str
    claim: rules.SessionClaim


def start_session(repo: Repository, secret: str, api_key: str, now: datetime) -> StartedSession:
    """Exchange a merchant API key for a new session (401 for a key that is not valid)."""
    from chalicelib.fleet.auth import authenticate_merchant

    key = api_key.strip()
    if not key:
        raise errors.unauthorized("Enter the merchant API key.")
    merchant_id = authenticate_merchant(repo, f"Bearer {key}")
    claim = rules.SessionClaim(merchant_id, secrets.token_urlsafe(24), int(now.timestamp()) + rules.SESSION_TTL_S)
    repo.put_console_session(claim.session_id, merchant_id, claim.expires_s, now)
    metrics.add_metric(name="ConsoleSignIns", unit="Count", value=1)
    return StartedSession(rules.seal_session(secret, claim), rules.csrf_token(secret, claim.session_id), claim)


def live_session(repo: Repository, secret: str, headers: Mapping[str, str], now: datetime) -> rules.SessionClaim | None:
    """The request's session when its cookie is genuine, unexpired and not signed out; else None."""
    claim = rules.open_session(secret, rules.session_cookie(headers), now.timestamp())
    if claim is None:
        return None
    if repo.console_session_merchant(claim.session_id) != claim.merchant_id:
        return None
    return claim


def authenticate(repo: Repository, secret: str, headers: Mapping[str, str], method: str, now: datetime) -> str:
    """The merchant of a request made with the console cookie: 401 for a forged, expired or ended session,
    403 for an unsafe method without the session's CSRF token."""
    return checked_session(repo, secret, headers, method, now).merchant_id


def checked_session(repo: Repository, secret: str, headers: Mapping[str, str], method: str,
                    now: datetime) -> rules.SessionClaim:
    """The request's live session, its CSRF token checked on unsafe methods (401 / 403 as `authenticate`)."""
    claim = live_session(repo, secret, headers, now)
    if claim is None:
        raise errors.unauthorized("The console session is not valid (expired or signed out); sign in again.")
    if rules.needs_csrf(method) and not rules.csrf_valid(secret, claim.session_id, headers.get(rules.CSRF_HEADER)):
        raise errors.DomainError(errors.ErrorKind.FORBIDDEN, "csrf_failed", "The X-CSRF-Token header is missing or "
                                 "does not match the console session.",
                                 [errors.FieldProblem("X-CSRF-Token", "missing or not this session's token")])
    return claim


def end_session(repo: Repository, claim: rules.SessionClaim) -> None:
    repo.delete_console_session(claim.session_id)


def issue_link(repo: Repository, secret: str, merchant_id: str, now: datetime) -> tuple[str, int]:
    """A one-time sign-in link's token for the merchant, and its expiry (epoch seconds)."""
    claim = rules.LinkClaim(merchant_id, secrets.token_urlsafe(24), int(now.timestamp()) + rules.LINK_TTL_S)
    repo.put_console_link(claim.link_id, merchant_id, claim.expires_s, now)
    return rules.seal_link(secret, claim), claim.expires_s


def redeem_link(repo: Repository, secret: str, token: str, now: datetime) -> StartedSession | None:
    """A new session for a genuine, unexpired link used for the first time; None otherwise (no storage is read
    for a forged or expired one)."""
    claim = rules.open_link(secret, token, now.timestamp())
    if claim is None or repo.use_console_link(claim.link_id) != claim.merchant_id:
        return None
    session = rules.SessionClaim(claim.merchant_id, secrets.token_urlsafe(24),
                                 int(now.timestamp()) + rules.SESSION_TTL_S)
    repo.put_console_session(session.session_id, claim.merchant_id, session.expires_s, now)
    metrics.add_metric(name="ConsoleSignIns", unit="Count", value=1)
    return StartedSession(rules.seal_session(secret, session), rules.csrf_token(secret, session.session_id), session)
