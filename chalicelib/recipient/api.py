"""The recipient's tracking link: the page, its polled JSON, theme and form posts, and the JSON view.

The link is `{DOORSTEP_PUBLIC_BASE_URL}/track/{token}`: an HTML page (readable without JavaScript) whose script
polls `/track/{token}/status`. Unknown, malformed, revoked and expired tokens all get the same 404 page after the
same reads (`recipient.service.resolve`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from chalice.app import Blueprint, Response

from chalicelib.core.config import get_settings
from chalicelib.core.errors import DomainError, ErrorKind
from chalicelib.core.links import tracking_page_url
from chalicelib.http.errors import error_headers, status_of
from chalicelib.http.routes import Call, Routes, WebCall, html_response, json_response
from chalicelib.storage import get_repository
from chalicelib.web.api import static_base

if TYPE_CHECKING:
    from chalicelib.recipient.service import Link

blueprint = Blueprint(__name__)
routes = Routes(blueprint, models="chalicelib.recipient.models")

FORM_ERROR_KINDS = {"form_expired": ErrorKind.FORBIDDEN, "invalid_input": ErrorKind.INVALID,
                    "not_available": ErrorKind.CONFLICT}


def error_page(exc: DomainError, accept_language: str | None) -> Response:
    """A page route's error as a page in the browser's language: the one 404 page, or a short message page."""
    from chalicelib.recipient.page import MESSAGE_KINDS, not_found_headers, render_message, render_not_found
    from chalicelib.web.i18n import negotiate

    locale = negotiate(None, accept_language)
    status = status_of(exc)
    if status == 404:
        body = render_not_found(locale, static_base=static_base())
    else:
        kind = exc.code if exc.code in MESSAGE_KINDS else "server_error" if status >= 500 else "invalid_input"
        body = render_message(kind, locale, static_base=static_base())
    return html_response(body, status, {**not_found_headers(), **error_headers(exc)})


def resolve_link(token: str, now: datetime) -> Link:
    from chalicelib.recipient import service

    return service.resolve(get_repository(), token, now)


@dataclass(frozen=True)
class PagePaths:
    page: str
    status: str
    theme: str
    static: str


def page_paths(token: str) -> PagePaths:
    """The page's own links, under the path of the public base URL (e.g. the API Gateway stage)."""
    page = tracking_page_url(get_settings().public_path, token)
    return PagePaths(page, f"{page}/status", f"{page}/theme.css", static_base())


@routes.route("/v1/track/{token}", "GET", summary="Recipient tracking view (JSON)", tag="tracking", auth="none",
              response="TrackingView", errors_=(404,))
def track_json(call: Call, token: str) -> Response:
    from chalicelib.recipient import service

    view = service.tracking_view(get_repository(), resolve_link(token, datetime.now(UTC)))
    return json_response(view, 200, {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer",
                                     "X-Robots-Tag": "noindex, nofollow"})


@routes.web("/track/{token}")
def tracking_page(call: WebCall, token: str) -> Response:
    from chalicelib.recipient import service
    from chalicelib.recipient.forms import csrf_token
    from chalicelib.recipient.page import page_headers, render_tracking_page

    s, now = get_settings(), datetime.now(UTC)
    link = resolve_link(token, now)
    page = service.tracking_page(get_repository(), link, now, call.accept_language)
    branding = service.branding(link)
    paths = page_paths(token)
    csrf = csrf_token(s.token_secret, token)
    html = render_tracking_page(page, branding, tile_url=s.tile_url, csrf_token=csrf,
                                status_url=paths.status, action_base=paths.page, theme_href=paths.theme,
                                static_base=paths.static, tile_attribution=s.tile_attribution,
                                poll_seconds=s.tracking_poll_seconds, preferences_href=_preferences_href(link),
                                extra_sections=[conversation_section(link, page.locale, csrf, paths, now)])
    return html_response(html, 200, page_headers(page, branding, s.tile_url))


def _preferences_href(link: Link) -> str:
    """The recipient's message preferences for this delivery (a signed link of its own)."""
    from chalicelib.notifications.preferences import preferences_url

    s = get_settings()
    return preferences_url(s.public_path, s.token_secret, link.shipment.merchant_id, link.shipment.shipment_id)


def conversation_section(link: Link, locale: str, csrf: str, paths: PagePaths, now: datetime) -> str:
    """The conversation with the driver (chalicelib.messaging), rendered into the page."""
    from zoneinfo import ZoneInfo

    from chalicelib.messaging import service as messaging
    from chalicelib.messaging.page import ShownMessage, render_conversation

    thread = messaging.recipient_thread(get_repository(), link.shipment, now)
    shown = [ShownMessage(m.sender_role, m.sender_name, m.text, m.sent_at, bool(m.read_by)) for m in thread.messages]
    try:
        tz = ZoneInfo(link.time_zone)
    except (KeyError, ValueError):
        tz = ZoneInfo("UTC")
    return render_conversation(locale, shown, is_open=thread.open, csrf_token=csrf, action_base=paths.page, tz=tz,
                               static_base=paths.static)


@routes.web("/track/{token}/status", errors_as="json")
def tracking_status(call: WebCall, token: str) -> Response:
    """The live part of the page as JSON; 304 when the If-None-Match ETag still holds."""
    from chalicelib.recipient import service
    from chalicelib.recipient.page import etag_matches, status_headers, status_json, status_payload

    now = datetime.now(UTC)
    payload = status_payload(service.tracking_page(get_repository(), resolve_link(token, now), now,
                                                   call.accept_language))
    headers: dict[str, str | list[str]] = dict(status_headers(payload))
    if etag_matches(call.headers.get("if-none-match"), str(headers["ETag"])):
        headers.pop("Content-Type")
        return Response(body="", status_code=304, headers=headers)
    return Response(body=status_json(payload), status_code=200, headers=headers)


@routes.web("/track/{token}/theme.css")
def tracking_theme(call: WebCall, token: str) -> Response:
    from chalicelib.recipient import service
    from chalicelib.recipient.page import render_theme_css, theme_headers

    branding = service.branding(resolve_link(token, datetime.now(UTC)))
    return html_response(render_theme_css(branding), 200, theme_headers())


def form_post(call: WebCall, token: str, act: Callable[[Link, datetime, str], None]) -> Response:
    """The shared part of the page's form posts: resolve the link (else the 404 page), refuse cross-site posts,
    run `act(link, now, secret)` (which checks the CSRF token as it parses), and answer 303 back to the page,
    or a message page in the recipient's language with a 4xx status."""
    from chalicelib.recipient import service
    from chalicelib.recipient.forms import is_cross_site
    from chalicelib.recipient.page import MESSAGE_KINDS, content_security_policy, not_found_headers, render_message

    s, now = get_settings(), datetime.now(UTC)
    link = resolve_link(token, now)
    try:
        if is_cross_site(call.headers, s.public_origin):
            raise DomainError(ErrorKind.FORBIDDEN, "form_expired", "Cross-site form posts are refused.")
        act(link, now, s.token_secret)
    except DomainError as exc:
        paths = page_paths(token)
        branding = service.branding(link)
        status = status_of(exc)
        kind = exc.code if exc.code in MESSAGE_KINDS else "server_error" if status >= 500 else "invalid_input"
        html = render_message(kind, service.locale(link, call.accept_language), back_href=paths.page,
                              branding=branding, theme_href=paths.theme, static_base=paths.static)
        headers = {**not_found_headers(), "Content-Security-Policy": content_security_policy(None, branding.logo_url),
                   **error_headers(exc)}  # e.g. Retry-After of a 503 while the storage is busy
        return html_response(html, status_of(exc), headers)
    return Response(body="", status_code=303, headers={"Location": tracking_page_url(s.public_base_url, token),
                                                       "Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})


def form_error(kind: str) -> DomainError:
    return DomainError(FORM_ERROR_KINDS.get(kind, ErrorKind.INVALID), kind, f"The form was refused: {kind}.")


@routes.web("/track/{token}/instructions", "POST", form=True)
def post_instructions(call: WebCall, token: str) -> Response:
    from chalicelib.recipient import service
    from chalicelib.recipient.forms import FormError, parse_instructions

    def act(link: Link, now: datetime, secret: str) -> None:
        form = parse_instructions(call.form, secret=secret, page_token=token)
        if isinstance(form, FormError):
            raise form_error(form.kind)
        service.save_instructions(get_repository(), link, gate_code=form.gate_code, leave_at_door=form.leave_at_door,
                                  note=form.note, now=now)

    return form_post(call, token, act)


@routes.web("/track/{token}/reschedule", "POST", form=True)
def post_reschedule(call: WebCall, token: str) -> Response:
    from chalicelib.recipient import service
    from chalicelib.recipient.forms import FormError, parse_reschedule

    def act(link: Link, now: datetime, secret: str) -> None:
        form = parse_reschedule(call.form, service.offered_ids(link, now), secret=secret, page_token=token)
        if isinstance(form, FormError):
            raise form_error(form.kind)
        service.reschedule(get_repository(), link, form.option_id, now)

    return form_post(call, token, act)


@routes.web("/track/{token}/redirect", "POST", form=True)
def post_redirect(call: WebCall, token: str) -> Response:
    from chalicelib.recipient import service
    from chalicelib.recipient.forms import FormError, parse_redirect

    def act(link: Link, now: datetime, secret: str) -> None:
        form = parse_redirect(call.form, service.offered_ids(link, now), secret=secret, page_token=token)
        if isinstance(form, FormError):
            raise form_error(form.kind)
        service.redirect(get_repository(), link, kind=form.kind, note=form.note, neighbour_name=form.neighbour_name,
                         option_id=form.option_id, now=now)

    return form_post(call, token, act)


@routes.web("/track/{token}/rating", "POST", form=True)
def post_rating(call: WebCall, token: str) -> Response:
    from chalicelib.recipient import service
    from chalicelib.recipient.forms import FormError, parse_rating

    def act(link: Link, now: datetime, secret: str) -> None:
        form = parse_rating(call.form, secret=secret, page_token=token)
        if isinstance(form, FormError):
            raise form_error(form.kind)
        service.rate(get_repository(), link, score=form.rating, comment=form.comment, now=now)

    return form_post(call, token, act)


