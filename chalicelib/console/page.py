"""The dispatcher console's HTML, pure: the sign-in page and the console shell that `static/console.js` fills.

The same standards as the tracking page (chalicelib.recipient.page): every value escaped, no inline script
or style, the recipient page's strict CSP, all words from the locale catalogue (`console.*` keys). The shell
carries no merchant data at all: the script reads the /v1 merchant API with the session cookie, so what the
console shows is exactly what the API answers. The page's only secret is the session's CSRF token (in a
`data-` attribute); the API key is posted once by the sign-in form and never reaches the page again.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from html import escape

from chalicelib.messaging.page import render_console_messages, render_shipment_conversation
from chalicelib.recipient.page import content_security_policy, document_head
from chalicelib.web.assets import DEFAULT_STATIC_BASE, asset_url, gzip_size, static_asset
from chalicelib.web.i18n import Translator, catalogue

POLL_SECONDS = 5
# What a browser fetches on the console's first load besides the HTML (the map library included).
CONSOLE_ASSETS = ("leaflet.css", "uplot.css", "console.css", "leaflet.js", "uplot.js", "console.js", "performance.js",
                  "favicon.svg")
# The Performance section's charts and their accessible tables: (id, message key).
PERFORMANCE_CHARTS = (("perf-volume", "console.perf.chart_volume"), ("perf-rates", "console.perf.chart_rates"),
                      ("perf-per-driver", "console.perf.chart_drivers"))
SIGN_IN_ERRORS = frozenset({"invalid_key", "cross_site", "signed_out", "expired"})
_COMMON_HEADERS = {
    "Content-Type": "text/html; charset=utf-8",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex, nofollow",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True, slots=True)
class ConsoleShell:
    """What the console page needs: where the API is, the session's CSRF token, the map tiles (None: the plain
    grid), and the locale."""

    csrf_token: str
    api_base: str
    console_base: str
    locale: str = "en"
    tile_url: str | None = None
    tile_attribution: str | None = None


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def script_messages(locale: str) -> dict[str, str]:
    """The `console.*` messages the script shows (English underneath a missing translation)."""
    english = catalogue("en")
    local = catalogue(locale)
    return {key: local.get(key, text) for key, text in english.items() if key.startswith("console.")}


def _head(t: Translator, title: str, static_base: str, *, app: bool) -> list[str]:
    out = document_head(t, title, static_base)
    if app:
        out.append(f'<link rel="stylesheet" href="{_e(asset_url("leaflet.css", static_base))}">')
        out.append(f'<link rel="stylesheet" href="{_e(asset_url("uplot.css", static_base))}">')
    out.append(f'<link rel="stylesheet" href="{_e(asset_url("console.css", static_base))}">')
    if app:
        out.append(f'<script src="{_e(asset_url("leaflet.js", static_base))}" defer></script>')
        out.append(f'<script src="{_e(asset_url("console.js", static_base))}" defer></script>')
        out.append(f'<script src="{_e(asset_url("uplot.js", static_base))}" defer></script>')
        out.append(f'<script src="{_e(asset_url("performance.js", static_base))}" defer></script>')
    out.append("</head>")
    return out


def render_sign_in(locale: str | None = None, *, console_base: str, error: str | None = None,
                   static_base: str = DEFAULT_STATIC_BASE) -> str:
    """The sign-in form: the API key goes in a password field and is posted, never put in a URL."""
    t = Translator(locale or "en")
    out = _head(t, t("console.sign_in.title"), static_base, app=False)
    out.append('<body class="signin">')
    out.append('<main id="main" class="signin__card">')
    out.append(f'<h1>{_e(t("console.sign_in.title"))}</h1>')
    out.append(f'<p>{_e(t("console.sign_in.intro"))}</p>')
    if error == "signed_out":  # news, not a problem
        out.append('<p class="signin__notice" role="status" id="signin-error">'
                   f'{_e(t("console.sign_in.signed_out"))}</p>')
    elif error in SIGN_IN_ERRORS:
        out.append(f'<p class="signin__error" role="alert" id="signin-error">{_e(t(f"console.sign_in.{error}"))}</p>')
    described = ' aria-describedby="signin-error"' if error in SIGN_IN_ERRORS else ""
    out.append(f'<form method="post" action="{_e(console_base)}/session" class="signin__form">'
               f'<label for="api_key">{_e(t("console.sign_in.key_label"))}</label>'
               f'<input id="api_key" name="api_key" type="password" autocomplete="current-password" required '
               f'spellcheck="false" autocapitalize="off" maxlength="200"{described}>'
               f'<button type="submit" class="btn">{_e(t("console.sign_in.submit"))}</button></form>')
    out.append(f'<p class="signin__hint">{_e(t("console.sign_in.hint"))}</p>')
    out.append("</main></body></html>")
    return "\n".join(out) + "\n"


def render_console(shell: ConsoleShell, *, static_base: str = DEFAULT_STATIC_BASE) -> str:
    """The console: a fleet map, today's routes, the exception queue and shipment search, filled by the script
    from `<body data-*>`; every region is a landmark with a heading, every control has a label."""
    t = Translator(shell.locale)
    messages = json.dumps(script_messages(t.locale), ensure_ascii=False, separators=(",", ":"))
    out = _head(t, t("console.title"), static_base, app=True)
    out.append(f'<body class="console" data-api="{_e(shell.api_base)}" data-console="{_e(shell.console_base)}" '
               f'data-csrf="{_e(shell.csrf_token)}" data-poll-seconds="{POLL_SECONDS}" data-locale="{_e(t.locale)}" '
               f'data-tiles="{_e(shell.tile_url or "")}" data-attribution="{_e(shell.tile_attribution or "")}" '
               f'data-messages="{_e(messages)}">')
    out.append(f'<a class="skip" href="#queue">{_e(t("console.skip"))}</a>')
    out.append('<header class="bar">'
               f'<h1 class="bar__title">{_e(t("console.title"))}</h1>'
               f'<a class="btn btn--quiet" href="#performance">{_e(t("console.perf.title"))}</a>'
               '<p id="sync" class="bar__sync" role="status" aria-live="polite"></p>'
               f'<form method="post" action="{_e(shell.console_base)}/session/end" class="bar__out">'
               f'<input type="hidden" name="csrf" value="{_e(shell.csrf_token)}">'
               f'<button type="submit" class="btn btn--quiet" id="sign-out">{_e(t("console.sign_out"))}</button>'
               "</form></header>")
    out.append('<main id="main" class="grid">')
    out.append('<section class="panel panel--map" aria-labelledby="fleet-h">'
               f'<h2 id="fleet-h">{_e(t("console.fleet.title"))}</h2>'
               f'<div id="map" class="map" role="img" aria-label="{_e(t("console.fleet.map_label"))}"></div>'
               '<ul id="legend" class="legend">'
               + "".join(f'<li><span class="dot dot--{s}" aria-hidden="true"></span>{_e(t(f"console.state.{s}"))}</li>'
                         for s in ("moving", "stopped", "offline", "off_duty"))
               + "</ul>"
               f'<ul id="drivers" class="list" aria-label="{_e(t("console.fleet.list_label"))}"></ul>'
               f'<p id="fleet-empty" class="empty" hidden>{_e(t("console.fleet.empty"))}</p></section>')
    out.append('<section id="queue" class="panel" aria-labelledby="queue-h" tabindex="-1">'
               f'<h2 id="queue-h">{_e(t("console.queue.title"))} <span id="queue-count" class="count"></span></h2>'
               f'<ul id="exceptions" class="list" aria-label="{_e(t("console.queue.title"))}"></ul>'
               f'<p id="queue-empty" class="empty" hidden>{_e(t("console.queue.empty"))}</p>'
               f'<p id="queue-missing" class="empty" hidden>{_e(t("console.queue.unavailable"))}</p></section>')
    out.append('<section class="panel" aria-labelledby="routes-h">'
               f'<h2 id="routes-h">{_e(t("console.routes.title"))}</h2>'
               f'<ul id="routes" class="list" aria-label="{_e(t("console.routes.title"))}"></ul>'
               f'<p id="routes-empty" class="empty" hidden>{_e(t("console.routes.empty"))}</p></section>')
    out.append('<section class="panel" aria-labelledby="search-h">'
               f'<h2 id="search-h">{_e(t("console.search.title"))}</h2>'
               '<form id="search" class="search" role="search">'
               f'<label for="q">{_e(t("console.search.label"))}</label>'
               '<input id="q" name="q" type="search" required maxlength="300" autocomplete="off" spellcheck="false">'
               f'<button type="submit" class="btn">{_e(t("console.search.submit"))}</button></form>'
               f'<p class="hint">{_e(t("console.search.hint"))}</p>'
               '<p id="search-status" class="empty" role="status" aria-live="polite"></p>'
               f'<ul id="results" class="list" aria-label="{_e(t("console.search.results"))}"></ul></section>')
    out.append(render_console_messages(t.locale, static_base=static_base))  # chalicelib.messaging
    out.append('<section id="detail" class="panel panel--detail" aria-labelledby="detail-h" tabindex="-1" hidden>'
               f'<h2 id="detail-h">{_e(t("console.detail.title"))}</h2>'
               '<button type="button" class="btn btn--quiet" id="detail-close">'
               f'{_e(t("console.detail.close"))}</button>'
               '<dl id="detail-facts" class="facts"></dl>'
               f'<h3>{_e(t("console.detail.timeline"))}</h3><ol id="detail-timeline" class="timeline"></ol>'
               f'<h3>{_e(t("console.detail.proof"))}</h3><div id="detail-proof"></div>'
               f'{render_shipment_conversation(t.locale)}</section>')
    out.append(_performance(t))
    out.append("</main></body></html>")
    return "\n".join(out) + "\n"


def _performance(t: Translator) -> str:
    """The Performance section: filters (a form, so Enter and the keyboard work), two charts over time, each
    with its figures as a table for screen readers and keyboards, and the per-driver table (CSV download)."""
    charts = "".join(
        f'<figure class="perf__chart"><figcaption id="{cid}-h">{_e(t(key))}</figcaption>'
        f'<div id="{cid}" class="perf__plot" role="img" aria-labelledby="{cid}-h"></div></figure>'
        for cid, key in PERFORMANCE_CHARTS)
    return ('<section id="performance" class="panel panel--wide" aria-labelledby="perf-h" tabindex="-1">'
            f'<h2 id="perf-h">{_e(t("console.perf.title"))}</h2>'
            '<form id="perf-filters" class="perf__filters">'
            f'<label for="perf-from">{_e(t("console.perf.from"))}</label>'
            '<input id="perf-from" name="from" type="date" required>'
            f'<label for="perf-to">{_e(t("console.perf.to"))}</label>'
            '<input id="perf-to" name="to" type="date" required>'
            f'<label for="perf-driver">{_e(t("console.perf.driver"))}</label>'
            f'<select id="perf-driver" name="driver_id"><option value="">{_e(t("console.perf.all_drivers"))}'
            '</option></select>'
            f'<button type="submit" class="btn">{_e(t("console.perf.show"))}</button>'
            f'<a id="perf-csv" class="btn btn--quiet" href="#" download>{_e(t("console.perf.csv"))}</a></form>'
            '<p id="perf-status" class="empty" role="status" aria-live="polite"></p>'
            f'<dl id="perf-totals" class="perf__totals" aria-label="{_e(t("console.perf.totals"))}"></dl>'
            f'<div class="perf__charts">{charts}</div>'
            f'<h3 id="perf-days-h">{_e(t("console.perf.by_day"))}</h3>'
            '<div class="perf__scroll" tabindex="0" role="region" aria-labelledby="perf-days-h">'
            '<table id="perf-days" class="perf__table"></table></div>'
            f'<h3 id="perf-drivers-h">{_e(t("console.perf.by_driver"))}</h3>'
            '<div class="perf__scroll" tabindex="0" role="region" aria-labelledby="perf-drivers-h">'
            '<table id="perf-drivers" class="perf__table"></table></div></section>')


def console_headers(tile_url: str | None, image_urls: Iterable[str | None] = ()) -> dict[str, str]:
    """The console's headers: the tracking page's strict CSP (tiles and proof photos as the only other image
    origins), never cached, never framed."""
    return {**_COMMON_HEADERS, "Content-Security-Policy": content_security_policy(tile_url, image_urls=image_urls)}


def sign_in_headers() -> dict[str, str]:
    return {**_COMMON_HEADERS, "Content-Security-Policy": content_security_policy(None)}


def console_first_load_bytes(page_html: str) -> int:
    """Compressed bytes of the console's first load: the HTML plus its styles, scripts (Leaflet too) and icon."""
    total = gzip_size(page_html.encode())
    for name in CONSOLE_ASSETS:
        found = static_asset(name)
        assert found is not None
        total += gzip_size(found[0])
    return total
