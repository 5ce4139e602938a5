"""The dispatcher console: the page (`/console`), sign-in (`POST /console/session`) and sign-out.

The page is a web route (no Bearer auth): without a live session it is the sign-in form, with one it is the
console shell, whose script calls the /v1 merchant API with the session cookie (see chalicelib.console.rules
and `fleet.api.authenticate`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from chalice.app import Blueprint, Response

from chalicelib.core.config import get_settings
from chalicelib.core.errors import DomainError, ErrorKind
from chalicelib.http.routes import Call, Routes, WebCall, html_response
from chalicelib.storage import get_repository
from chalicelib.web.api import static_base

if TYPE_CHECKING:  # the route models load on first use of a route (`Routes(models=...)`)
    from chalicelib.console.models import SignInLinkOut

blueprint = Blueprint(__name__)
routes = Routes(blueprint, models="chalicelib.console.models")


def console_base() -> str:
    return f"{get_settings().public_path}/console"


def _cookie_path() -> str:
    return get_settings().public_path or "/"


def _locale(call: WebCall) -> str:
    from chalicelib.web.i18n import negotiate

    return negotiate(call.query.get("lang"), call.accept_language)


def _sign_in(call: WebCall, status: int, error: str | None, extra: dict[str, str] | None = None) -> Response:
    from chalicelib.console.page import render_sign_in, sign_in_headers

    html = render_sign_in(_locale(call), console_base=console_base(), error=error, static_base=static_base())
    return html_response(html, status, {**sign_in_headers(), **(extra or {})})


def _redirect(location: str, cookie: str) -> Response:
    return Response(body="", status_code=303, headers={"Location": location, "Set-Cookie": cookie,
                                                       "Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})


@routes.web("/console")
def console_page(call: WebCall) -> Response:
    """The console when the session cookie is live, else the sign-in form."""
    from chalicelib.console import rules, service
    from chalicelib.console.page import ConsoleShell, console_headers, render_console
    from chalicelib.shipments.proof import blob_store

    s = get_settings()
    claim = service.live_session(get_repository(), s.token_secret, call.headers, datetime.now(UTC))
    if claim is None:
        notice = call.query.get("m")
        # A cookie that no longer works is removed, so the browser stops sending it.
        extra = {"Set-Cookie": rules.clear_cookie(_cookie_path())} if rules.session_cookie(call.headers) else None
        return _sign_in(call, 200, notice if notice in ("signed_out", "expired") else None, extra)
    shell = ConsoleShell(csrf_token=rules.csrf_token(s.token_secret, claim.session_id), api_base=s.public_path,
                         console_base=console_base(), locale=_locale(call), tile_url=s.tile_url,
                         tile_attribution=s.tile_attribution)
    return html_response(render_console(shell, static_base=static_base()), 200,
                         console_headers(s.tile_url, [blob_store().upload_url()]))


@routes.web("/console/session", "POST", form=True)
def sign_in(call: WebCall) -> Response:
    """Exchange the API key (a form field) for the session cookie; back to the console (303)."""
    from chalicelib.console import rules, service
    from chalicelib.recipient.forms import is_cross_site

    s = get_settings()
    if is_cross_site(call.headers, s.public_origin):
        return _sign_in(call, 403, "cross_site")
    try:
        started = service.start_session(get_repository(), s.token_secret, call.form.get("api_key", ""),
                                        datetime.now(UTC))
    except DomainError as exc:
        if exc.kind is not ErrorKind.UNAUTHENTICATED:
            raise
        return _sign_in(call, 401, "invalid_key")
    return _redirect(console_base(), rules.set_cookie(started.cookie_value, _cookie_path()))


@routes.web("/console/session/end", "POST", form=True)
def sign_out(call: WebCall) -> Response:
    """End the session (its item is deleted: the cookie stops working everywhere) and clear the cookie."""
    from chalicelib.console import rules, service

    s = get_settings()
    claim = service.live_session(get_repository(), s.token_secret, call.headers, datetime.now(UTC))
    if claim is not None:
        if not rules.csrf_valid(s.token_secret, claim.session_id, call.form.get("csrf")):
            return _sign_in(call, 403, "cross_site")
        service.end_session(get_repository(), claim)
    return _redirect(f"{console_base()}?m=signed_out", rules.clear_cookie(_cookie_path()))


@routes.web("/console/session", "DELETE", errors_as="json")
def end_session(call: WebCall) -> Response:
    """Sign out from script: the cookie and the session's X-CSRF-Token; 204 and the cookie cleared."""
    from chalicelib.console import rules, service

    s = get_settings()
    claim = service.checked_session(get_repository(), s.token_secret, call.headers, "DELETE", datetime.now(UTC))
    service.end_session(get_repository(), claim)
    return Response(body="", status_code=204, headers={"Set-Cookie": rules.clear_cookie(_cookie_path()),
                                                       "Cache-Control": "no-store"})


@routes.route("/v1/console/sign-in-links", "POST", summary="A one-time link that opens the console signed in "
              "(15 minutes; for a dispatcher without the API key)", tag="console", response="SignInLinkOut",
              status=201, errors_=(401,))
def create_sign_in_link(call: Call) -> SignInLinkOut:
    from chalicelib.console import service
    from chalicelib.console.models import SignInLinkOut

    s = get_settings()
    token, expires_s = service.issue_link(get_repository(), s.token_secret, call.merchant_id, datetime.now(UTC))
    return SignInLinkOut(url=f"{s.public_base_url.rstrip('/')}/console/link/{token}",
                         expires_at=datetime.fromtimestamp(expires_s, UTC))


@routes.web("/console/link/{token}")
def use_sign_in_link(call: WebCall, token: str) -> Response:
    """A one-time sign-in link: the session cookie and on to the console (303); a used, expired or forged link
    answers the sign-in form. The token leaves the address bar at once (the redirect), never sent onwards."""
    from chalicelib.console import rules, service

    s = get_settings()
    started = service.redeem_link(get_repository(), s.token_secret, token, datetime.now(UTC))
    if started is None:
        return _sign_in(call, 401, "expired", {"Referrer-Policy": "no-referrer"})
    return _redirect(console_base(), rules.set_cookie(started.cookie_value, _cookie_path()))
