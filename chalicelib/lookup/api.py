"""Lookup routes: the merchant's settings (`/v1/lookup/settings`), the page `/lookup/{slug}` (GET shows the form,
POST looks the delivery up: 303 to its tracking link on a match), the embeddable form (`/embed`), the snippet
script (`/embed.js`) and the page's theme."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from chalice.app import Blueprint, Response

from chalicelib.core.config import get_settings
from chalicelib.http.routes import Call, Routes, WebCall, html_response
from chalicelib.storage import get_repository
from chalicelib.web.api import static_base

if TYPE_CHECKING:
    from chalicelib.lookup.models import LookupSettingsOut
    from chalicelib.lookup.service import LookupPage

blueprint = Blueprint(__name__)
routes = Routes(blueprint, models="chalicelib.lookup.models")


@routes.route("/v1/lookup/settings", "GET", summary="The lookup page's slug and the origins that may embed it",
              tag="lookup", response="LookupSettingsOut", errors_=(401,))
def get_lookup_settings(call: Call) -> LookupSettingsOut:
    from chalicelib.lookup import service

    return service.lookup_settings(get_repository(), get_settings(), call.merchant_id)


@routes.route("/v1/lookup/settings", "PUT", summary="Set the lookup page's slug (unique across merchants) and the "
              "origins that may embed its form", tag="lookup", body="LookupSettings", response="LookupSettingsOut",
              errors_=(400, 401, 409, 413, 415, 422))
def put_lookup_settings(call: Call) -> LookupSettingsOut:
    from chalicelib.lookup import service

    return service.replace_lookup_settings(get_repository(), get_settings(), call.merchant_id, call.body,
                                           datetime.now(UTC))


def _source_ip() -> str | None:
    """The caller's address as API Gateway saw it (never a client-supplied header)."""
    identity = (routes.current_request().context or {}).get("identity") or {}
    return identity.get("sourceIp")


def _locale(page: LookupPage, accept_language: str | None) -> str:
    from chalicelib.web.i18n import negotiate

    fallback = f"{page.settings.locale};q=0.001"  # the merchant's language below anything the browser asks for
    return negotiate(None, f"{accept_language},{fallback}" if accept_language else fallback)


def _render(page: LookupPage, call: WebCall, status: int, *, notice: str | None = None, embedded: bool = False,
            extra: dict[str, str] | None = None) -> Response:
    from chalicelib.lookup.page import page_headers, render_lookup_page
    from chalicelib.lookup.rules import frame_ancestors
    from chalicelib.lookup.service import page_url
    from chalicelib.web.i18n import Translator

    href = page_url(get_settings().public_path, page.slug)
    html = render_lookup_page(Translator(_locale(page, call.accept_language)), page.branding, action=href,
                              page_href=href, static_base=static_base(), notice=notice, embedded=embedded)
    headers = page_headers(frame_ancestors(page.allowed_origins) if embedded else "'none'")
    return html_response(html, status, {**headers, **(extra or {})})


def _open(slug: str) -> LookupPage:
    from chalicelib.lookup import service

    return service.open_page(get_repository(), slug)


@routes.web("/lookup/{slug}")
def lookup_page(call: WebCall, slug: str) -> Response:
    return _render(_open(slug), call, 200)


@routes.web("/lookup/{slug}/embed")
def lookup_embed(call: WebCall, slug: str) -> Response:
    """The form alone, for the merchant's pages: framed only by its allowed origins (CSP frame-ancestors)."""
    return _render(_open(slug), call, 200, embedded=True)


@routes.web("/lookup/{slug}", "POST", form=True)
def lookup_post(call: WebCall, slug: str) -> Response:
    from chalicelib.lookup import service
    from chalicelib.lookup.rules import post_allowed

    s, page = get_settings(), _open(slug)
    if not post_allowed(call.headers.get("origin"), call.headers.get("sec-fetch-site"), s.public_origin,
                        page.allowed_origins):
        return _render(page, call, 403, notice="refused")
    order, check = call.form.get("order", ""), call.form.get("check", "")
    if not order.strip() or not check.strip():
        return _render(page, call, 422, notice="incomplete")
    result = service.find(get_repository(), s, page, order, check, _source_ip(), datetime.now(UTC))
    if result.outcome == service.Outcome.FOUND and result.tracking_url:
        return Response(body="", status_code=303, headers={"Location": result.tracking_url, "Cache-Control": "no-store",
                                                           "Referrer-Policy": "no-referrer"})
    if result.outcome == service.Outcome.MISS:
        return _render(page, call, 200, notice="miss")
    return _render(page, call, 429, notice=result.outcome.value,
                   extra={"Retry-After": str(result.retry_after_s or 60)})


@routes.web("/lookup/{slug}/theme.css")
def lookup_theme(call: WebCall, slug: str) -> Response:
    from chalicelib.recipient.page import render_theme_css, theme_headers

    return html_response(render_theme_css(_open(slug).branding), 200, theme_headers())


@routes.web("/lookup/{slug}/embed.js")
def lookup_snippet(call: WebCall, slug: str) -> Response:
    """The snippet the merchant pastes: it puts an iframe of `/lookup/{slug}/embed` where the script stands.
    Reads nothing: an unknown slug's frame shows the 404 page."""
    from chalicelib.lookup.page import EMBED_SCRIPT, script_headers

    return html_response(EMBED_SCRIPT, 200, script_headers())
