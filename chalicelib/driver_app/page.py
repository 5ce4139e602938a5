"""The driver web app's shell: pure rendering of the page its script (`static/driver.js`) brings to life.

The shell holds every control, labelled, in the driver's language; the script loads the route from
`/v1/driver/route` with the link token as its bearer credential, and sends everything the driver does
through a persistent offline queue. Like the tracking page: no inline script or style (the CSP forbids
them), every value escaped, all words from the message catalogue (`driver.*` keys).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from html import escape

from chalicelib.messaging.page import render_driver_messages
from chalicelib.recipient.page import _origin, document_head
from chalicelib.shipments.failures import FailureReason, failure_reason_label
from chalicelib.web.assets import DEFAULT_STATIC_BASE, asset_url, gzip_size, static_asset
from chalicelib.web.branding import DEFAULT_PRIMARY, valid_colour
from chalicelib.web.i18n import Translator, catalogue

NOTE_MAX = 500
NAME_MAX = 100
PING_SECONDS = 15  # a batch of fixes at least this often while the page is open (or every PING_BATCH fixes)
PING_BATCH = 20
DRIVER_ASSETS = ("driver.css", "driver.js", "driver_messages.js", "favicon.svg")


@dataclass(frozen=True, slots=True)
class DriverShell:
    token: str
    driver_id: str
    driver_first_name: str
    merchant_name: str  # the merchant's display name (`Branding.name`)
    locale: str = "en"
    api_base: str = ""  # path prefix of the API on this origin ('' or e.g. '/api')
    brand_colour: str = DEFAULT_PRIMARY  # `Branding.primary`: the browser's toolbar colour


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def script_messages(locale: str) -> dict[str, str]:
    """The `driver.*` messages the script shows (English underneath a missing translation)."""
    english = catalogue("en")
    local = catalogue(locale)
    return {key: local.get(key, text) for key, text in english.items() if key.startswith("driver.")}


def _head(t: Translator, title: str, static_base: str, with_script: bool, brand_colour: str = DEFAULT_PRIMARY
          ) -> list[str]:
    colour = valid_colour(brand_colour, DEFAULT_PRIMARY)
    out = [*document_head(t, title, static_base), f'<meta name="theme-color" content="{colour}">',
           f'<link rel="stylesheet" href="{_e(asset_url("driver.css", static_base))}">']
    if with_script:
        out.append(f'<script src="{_e(asset_url("driver.js", static_base))}" defer></script>')
    out.append("</head>")
    return out


def _field(label_for: str, label: str, control: str) -> str:
    return f'<div class="field"><label for="{label_for}">{_e(label)}</label>{control}</div>'


def render_driver_page(shell: DriverShell, *, static_base: str = DEFAULT_STATIC_BASE) -> str:
    """The whole page. The script reads its settings from `<main data-*>`: the token, the API prefix, the
    driver id (it names the phone's queue), the ping cadence and its messages."""
    t = Translator(shell.locale)
    messages = json.dumps(script_messages(t.locale), ensure_ascii=False, separators=(",", ":"))
    out = _head(t, t("driver.page.title", merchant=shell.merchant_name), static_base, with_script=True,
                brand_colour=shell.brand_colour)
    out.append("<body>")
    out.append('<header id="bar" class="bar" data-gps="unknown">'
               f'<p class="bar-title">{_e(shell.merchant_name)}</p>'
               '<p id="sync" class="sync" role="status" aria-live="polite" data-state="starting" data-queue="0">'
               f'<span class="sync-dot" aria-hidden="true"></span><span id="sync-text">{_e(t("driver.sync.online"))}'
               "</span></p></header>")
    out.append(f'<main id="main" data-token="{_e(shell.token)}" data-api="{_e(shell.api_base)}" '
               f'data-driver="{_e(shell.driver_id)}" data-ping-seconds="{PING_SECONDS}" '
               f'data-ping-batch="{PING_BATCH}" data-locale="{_e(t.locale)}" data-messages="{_e(messages)}">')
    out.append(f'<noscript><p class="card">{_e(t("driver.page.noscript"))}</p></noscript>')
    out.append('<p id="gps-alert" class="gps-alert" role="alert" hidden></p>')  # first: location off
    if shell.driver_first_name:
        out.append(f'<p class="greeting">{_e(t("driver.page.greeting", name=shell.driver_first_name))}</p>')
    out.append('<div id="alerts" class="alerts"></div>')
    out.append('<p id="toast" class="toast" role="status" aria-live="polite" hidden></p>')

    # the next stop
    out.append('<section id="next" class="card next" aria-labelledby="next-h">'
               f'<h1 id="next-h">{_e(t("driver.next.heading"))}</h1>'
               f'<div id="next-body" aria-live="polite"><p>{_e(t("driver.next.loading"))}</p></div>'
               '<div id="nav" class="nav" hidden>'
               f'<a id="nav-google" class="btn btn--nav" href="#" target="_blank" rel="noopener noreferrer">'
               f'{_e(t("driver.nav.google"))}</a>'
               f'<a id="nav-geo" class="btn btn--secondary" href="#">{_e(t("driver.nav.geo"))}</a></div>'
               '<div id="actions" class="actions" hidden>'
               f'<button id="btn-arrived" type="button" class="btn">{_e(t("driver.action.arrived"))}</button>'
               f'<button id="btn-delivered" type="button" class="btn btn--ok">{_e(t("driver.action.delivered"))}'
               "</button>"
               f'<button id="btn-failed" type="button" class="btn btn--warn">{_e(t("driver.action.failed"))}</button>'
               "</div></section>")

    # delivered: photo, signature, name, note, contactless
    out.append('<section id="deliver" class="card" aria-labelledby="deliver-h" hidden>'
               f'<h2 id="deliver-h">{_e(t("driver.deliver.heading"))}</h2><form id="deliver-form" novalidate>')
    out.append(_field("photo", t("driver.deliver.photo"),
                      '<input id="photo" name="photo" type="file" accept="image/*" capture="environment">'
                      f'<img id="photo-preview" class="preview" alt="{_e(t("driver.deliver.photo_preview"))}" '
                      'hidden>'))
    out.append('<div class="field">'
               f'<p id="sig-label" class="label">{_e(t("driver.deliver.signature"))}</p>'
               f'<p id="sig-hint" class="hint">{_e(t("driver.deliver.signature_hint"))}</p>'
               '<canvas id="signature" class="signature" role="img" '
               f'aria-label="{_e(t("driver.deliver.signature_pad"))}" aria-describedby="sig-label sig-hint">'
               "</canvas>"
               f'<button id="sig-clear" type="button" class="btn btn--link">{_e(t("driver.deliver.clear"))}</button>'
               "</div>")
    out.append(_field("recipient-name", t("driver.deliver.name"),
                      f'<input id="recipient-name" name="recipient_name" type="text" maxlength="{NAME_MAX}" '
                      'autocomplete="off">'))
    out.append(_field("deliver-note", t("driver.deliver.note"),
                      f'<textarea id="deliver-note" name="note" rows="2" maxlength="{NOTE_MAX}"></textarea>'))
    out.append('<div class="field field--check"><input id="contactless" name="contactless" type="checkbox">'
               f'<label for="contactless">{_e(t("driver.deliver.contactless"))}</label></div>')
    # chain of custody: shown for a stop that requires them (the stop's `requirements`, which the app enforces)
    out.append('<div id="pin-field" hidden>'
               + _field("pin", t("driver.custody.pin"),
                        '<input id="pin" name="pin" type="text" inputmode="numeric" pattern="[0-9]{6}" maxlength="6" '
                        'autocomplete="one-time-code">') + "</div>")
    out.append('<div id="age-field" class="field field--check" hidden><input id="age-verified" name="age_verified" '
               f'type="checkbox"><label id="age-label" for="age-verified">{_e(t("driver.custody.age"))}</label></div>')
    out.append('<div id="scan-field" class="field" hidden>'
               f'<p class="label">{_e(t("driver.custody.scan"))}</p>'
               '<video id="scan-video" class="preview" muted playsinline hidden></video>'
               f'<button id="scan-camera" type="button" class="btn btn--secondary" hidden>'
               f'{_e(t("driver.custody.scan_camera"))}</button>'
               f'<label for="scan-manual">{_e(t("driver.custody.scan_manual"))}</label>'
               '<input id="scan-manual" type="text" maxlength="64" autocomplete="off" autocapitalize="characters">'
               f'<button id="scan-add" type="button" class="btn btn--secondary">{_e(t("driver.custody.scan_add"))}'
               '</button><ul id="scan-list" class="notes"></ul></div>')
    out.append('<p id="deliver-error" class="error" role="alert" hidden></p>')
    out.append('<div class="form-actions">'
               f'<button type="submit" class="btn btn--ok">{_e(t("driver.deliver.submit"))}</button>'
               f'<button type="button" class="btn btn--secondary" data-cancel>{_e(t("driver.form.cancel"))}</button>'
               "</div></form></section>")

    # failed: reason and note
    options = "".join(f'<option value="{r.value}">{_e(failure_reason_label(r, t.locale))}</option>'
                      for r in FailureReason)
    out.append('<section id="fail" class="card" aria-labelledby="fail-h" hidden>'
               f'<h2 id="fail-h">{_e(t("driver.fail.heading"))}</h2><form id="fail-form" novalidate>')
    out.append(_field("fail-reason", t("driver.fail.reason"),
                      f'<select id="fail-reason" name="reason" required aria-describedby="fail-error">'
                      f'<option value="">{_e(t("driver.fail.choose"))}</option>{options}</select>'))
    out.append(_field("fail-note", t("driver.fail.note"),
                      f'<textarea id="fail-note" name="note" rows="2" maxlength="{NOTE_MAX}"></textarea>'))
    out.append('<p id="fail-error" class="error" role="alert" hidden></p>')
    out.append('<div class="form-actions">'
               f'<button type="submit" class="btn btn--warn">{_e(t("driver.fail.submit"))}</button>'
               f'<button type="button" class="btn btn--secondary" data-cancel>{_e(t("driver.form.cancel"))}</button>'
               "</div></form></section>")

    # messages with dispatch and each stop's recipient (chalicelib.messaging)
    out.append(render_driver_messages(t.locale, static_base=static_base))

    # the route and the queue
    out.append('<section class="card" aria-labelledby="route-h">'
               f'<h2 id="route-h">{_e(t("driver.route.heading"))}</h2>'
               '<p id="route-summary" class="muted"></p><ol id="stops" class="stops"></ol></section>')
    out.append('<section class="card" aria-labelledby="queue-h">'
               f'<h2 id="queue-h">{_e(t("driver.sync.heading"))}</h2>'
               '<p id="queue-text"></p><p id="gps-text" class="muted"></p>'
               f'<button id="send-now" type="button" class="btn btn--secondary">{_e(t("driver.sync.send_now"))}'
               "</button>"
               # Start / End shift: on duty, the app shares its location and dispatch sees the driver offline when
               # it goes silent; off duty (or once the route completes) it shares nothing.
               f'<button id="shift-toggle" type="button" class="btn btn--secondary" aria-pressed="false">'
               f'{_e(t("driver.shift.start"))}</button></section>')
    out.append("</main></body></html>")
    return "\n".join(out) + "\n"


def render_driver_not_found(locale: str | None = None, *, static_base: str = DEFAULT_STATIC_BASE) -> str:
    """The one 404 page for a malformed, tampered, expired, revoked or unknown driver link."""
    t = Translator(locale or "en")
    out = _head(t, t("driver.not_found.title"), static_base, with_script=False)
    out.append(f'<body><main id="main"><section class="card"><h1>{_e(t("driver.not_found.title"))}</h1>'
               f'<p>{_e(t("driver.not_found.body"))}</p></section></main></body></html>')
    return "\n".join(out) + "\n"


_COMMON_HEADERS = {
    "Content-Type": "text/html; charset=utf-8",
    "Referrer-Policy": "no-referrer",  # the link is a credential: never in a Referer
    "X-Robots-Tag": "noindex, nofollow",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


def driver_csp(upload_url: str | None) -> str:
    """Scripts, styles and fetches from this origin only, plus uploads to the proof bucket's origin;
    images also from `blob:` (the photo preview before it is sent)."""
    connect = ["'self'"]
    origin = _origin(upload_url)
    if origin:
        connect.append(origin)
    return "; ".join([
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        f"connect-src {' '.join(connect)}",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ])


def driver_page_headers(upload_url: str | None) -> dict[str, str]:
    return {**_COMMON_HEADERS, "Content-Security-Policy": driver_csp(upload_url)}


def driver_not_found_headers() -> dict[str, str]:
    return {**_COMMON_HEADERS, "Content-Security-Policy": driver_csp(None)}


def driver_first_load_bytes(page_html: str) -> int:
    """Compressed bytes of the first load: the shell plus its stylesheet, script and icon."""
    total = gzip_size(page_html.encode())
    for name in DRIVER_ASSETS:
        found = static_asset(name)
        assert found is not None
        total += gzip_size(found[0])
    return total
