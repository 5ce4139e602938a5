"""The recipient's tracking page, rendered on the server: pure functions from plain data to HTML, CSS and JSON.

Nothing here touches AWS or the table; the route layer builds a `TrackingPage`
(already filtered for privacy: first name and city only, the driver only while
this stop is next or near) and a `Branding` (`chalicelib.web.branding`), and serves what these functions
return with the headers from `page_headers` / `not_found_headers`.

Safety rules kept by construction:

* Every piece of data that reaches HTML goes through `html.escape` (text and
  attribute values alike); URLs that become `src`/`href` are checked for
  scheme first (http/https, mailto:, tel:), so merchant or recipient text can
  never inject markup or a `javascript:` URL.
* No inline script, no `style=` attribute, no event-handler attribute: the
  page runs under `content_security_policy`, which forbids them. Merchant
  colours travel in a separate stylesheet (`render_theme_css`) made only of
  validated `#rrggbb` values.
* All visible words come from the locale's message catalogue (`i18n`).

The page reads fully without JavaScript; `static/track.js` then polls the JSON
from `status_payload` (one formatter for page and poll) and moves the map.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from functools import lru_cache
from html import escape
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from chalicelib.geo.day_window import zone_label
from chalicelib.shipments.failures import failure_reason_text
from chalicelib.web.assets import DEFAULT_STATIC_BASE, FIRST_LOAD_ASSETS, asset_url, gzip_size, static_asset
from chalicelib.web.branding import Branding, ink, text_on
from chalicelib.web.i18n import Translator

# --- input -----------------------------------------------------------------------------

# Statuses during which the driver, the ETA and "N stops before yours" make sense
# (chalicelib.domain.lifecycle.DRIVER_VISIBLE; a test keeps the two equal).
LIVE_STATUSES = frozenset({"out_for_delivery", "approaching", "arrived"})
FINAL_STATUSES = frozenset({"delivered", "returned", "cancelled"})

GATE_CODE_MAX = 32
NOTE_MAX = 500
NEIGHBOUR_NAME_MAX = 80
REDIRECT_NOTE_MAX = 300
COMMENT_MAX = 500

MESSAGE_KINDS = frozenset({"instructions_saved", "rescheduled", "rated", "already_rated", "form_expired",
                           "invalid_input", "not_available", "server_error"})


@dataclass(frozen=True, slots=True)
class PageEvent:
    """One timeline entry. `label_key` is a catalogue key; None means `event.{kind}` (else a generic label).
    A `failed` entry with a `reason` (a `FailureReason` code) says why, in the page's language."""

    kind: str
    at: datetime
    label_key: str | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class RescheduleOption:
    """A window the merchant offers. `label` is the merchant's own wording; None shows the localized window."""

    id: str
    start: datetime
    end: datetime
    label: str | None = None


@dataclass(frozen=True, slots=True)
class TrackingPage:
    """What the recipient may see, already filtered by the caller.

    Datetimes should be timezone-aware (naive ones are taken as UTC) and are shown
    in `time_zone` (IANA name; an unknown zone shows UTC). Positions are (lat, lng).
    The driver is shown only in the live statuses, whatever the caller passes.
    """

    token: str
    status: str
    time_zone: str = "UTC"
    locale: str = "en"
    first_name: str | None = None
    city: str | None = None
    eta_low: datetime | None = None
    eta_high: datetime | None = None
    promised_start: datetime | None = None
    promised_end: datetime | None = None
    stops_before: int | None = None
    driver_first_name: str | None = None
    driver_position: tuple[float, float] | None = None
    destination: tuple[float, float] | None = None
    timeline: Sequence[PageEvent] = ()
    can_give_instructions: bool = True
    instructions_saved: bool = False
    can_reschedule: bool = False
    reschedule_options: Sequence[RescheduleOption] = ()
    # After a failed attempt: the reason code (`FailureReason`), attempts so far and the merchant's limit; a
    # redirect is offered with the reschedule options.
    failure_reason: str | None = None
    attempts: int = 0
    max_attempts: int | None = None
    can_redirect: bool = False
    can_rate: bool = False
    rating: int | None = None
    proof_photo_url: str | None = None
    delivered_at: datetime | None = None
    receipt_jws: str | None = None  # the signed delivery receipt (compact JWS), once delivered
    # The estimate left the local day (geo/day_window.py): "Delayed: later today" instead of times.
    eta_later_today: bool = False
    # The estimate expects the driver before the promised window opens (geo/day_window.before_window).
    eta_early: bool = False
    # Arrived, then the driver left the stop's fence without a delivery result yet: not "at your address".
    driver_departed: bool = False
    # The merchant publishes its measured ETA accuracy: (arrivals inside the window, out of) over 30 days.
    eta_accuracy: tuple[int, int] | None = None


# --- small helpers ------------------------------------------------------------------------


def _e(value: object) -> str:
    """Escaped for text and for double- or single-quoted attribute values."""
    return escape(str(value), quote=True)


@lru_cache(maxsize=64)
def _zone(name: str) -> tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        return UTC


def _local(dt: datetime, tz: tzinfo) -> datetime:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(tz)


def _floor_minute(dt: datetime) -> datetime:
    return dt.replace(second=0, microsecond=0)


def _ceil_minute(dt: datetime) -> datetime:
    floored = _floor_minute(dt)
    return floored if floored == dt else floored + timedelta(minutes=1)


_HOST = re.compile(r"^(?:\*\.)?[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?$|^[0-9a-f:.]{2,45}$")
_UNSAFE_URL_CHARS = re.compile(r"[\x00-\x20\x7f\"'<>\\`]")


def _http_url(url: str | None) -> str | None:
    """`url` if it is an absolute http(s) URL without credentials or stray characters, else None."""
    if not url or len(url) > 4096 or _UNSAFE_URL_CHARS.search(url):
        return None
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname or "@" in parts.netloc:
        return None
    return url


def _origin(url: str | None, *, template: bool = False) -> str | None:
    """`scheme://host[:port]` of a valid http(s) URL, for the CSP; a tile template's `{s}.` becomes `*.`."""
    if url is None:
        return None
    if template:
        url = url.replace("://{s}.", "://*.", 1)
    if _http_url(url) is None:
        return None
    parts = urlsplit(url)
    if not parts.hostname or not _HOST.match(parts.hostname):
        return None
    return f"{parts.scheme}://{parts.netloc.lower()}"


def _tile_template(url: str | None) -> str | None:
    """A usable Leaflet tile URL template (http(s), {z}/{x}/{y}), else None."""
    if url is None or not all(p in url for p in ("{z}", "{x}", "{y}")) or _origin(url, template=True) is None:
        return None
    return url


_EMAIL = re.compile(r"^[A-Za-z0-9.!#$%&*+/=?^_{|}~-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")
_PHONE = re.compile(r"^\+?[0-9][0-9 ()./-]{2,30}$")


def _coords(pos: tuple[float, float] | None) -> tuple[float, float] | None:
    if pos is None:
        return None
    lat, lng = float(pos[0]), float(pos[1])
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lng <= 180.0):
        return None
    return round(lat, 6), round(lng, 6)


def _status_key(t: Translator, status: str, driver_departed: bool = False) -> str:
    if status == "arrived" and driver_departed:
        return "departed"
    return status if t.has(f"status.{status}") else "unknown"


def _event_label(t: Translator, event: PageEvent) -> str:
    if event.kind == "failed" and event.reason is not None and event.label_key is None:
        return t("event.failed_reason", reason=failure_reason_text(event.reason, t.locale))
    for key in (event.label_key, f"event.{event.kind}"):
        if key and t.has(key):
            return t(key)
    return t("event.update")


def _driver_position(page: TrackingPage) -> tuple[float, float] | None:
    return _coords(page.driver_position) if page.status in LIVE_STATUSES else None


def _stops_text(t: Translator, stops: int | None) -> str | None:
    if stops is None or stops < 0:
        return None
    return t.plural("stops_before", stops)


def eta_text(t: Translator, low: datetime, high: datetime, tz: tzinfo) -> str:
    """"Between 14:10 and 14:30 CEST" in `tz`: the start rounded down, the end rounded up to the minute, the
    zone's abbreviation after it (times are never bare). The service bounds the window to one local day
    (geo/day_window.py); the two-day wording is only this renderer's fallback."""
    if high < low:
        low, high = high, low
    start, end = _floor_minute(_local(low, tz)), _ceil_minute(_local(high, tz))
    label = zone_label(start, tz)
    if start == end:
        return f'{t("eta.around", time=t.format_time(start))} {label}'
    if start.date() != end.date():
        return f'{t("eta.between_days", start=t.format_datetime(start), end=t.format_datetime(end))} {label}'
    return f'{t("eta.between", start=t.format_time(start), end=t.format_time(end))} {label}'


def window_text(t: Translator, start: datetime, end: datetime, tz: tzinfo) -> str:
    """"Tue 4 Jun, 09:00-12:00" (en dash) in `tz` (both ends with a date when they fall on different days)."""
    a, b = _local(start, tz), _local(end, tz)
    if a.date() == b.date():
        text = t("window.day_range", date=t.format_date(a), start=t.format_time(a), end=t.format_time(b))
    else:
        text = t("window.range", start=t.format_datetime(a), end=t.format_datetime(b))
    return f"{text} {zone_label(a, tz)}"



# --- colours and the theme stylesheet ----------------------------------------------------------

def theme_colours(branding: Branding) -> dict[str, str]:
    """The CSS custom properties of a merchant's theme, every pair at WCAG AA (the one rule of `web.branding`)."""
    primary, accent = branding.primary, branding.accent
    return {
        "--brand": primary,
        "--on-brand": text_on(primary),
        "--brand-ink": ink(primary),
        "--accent": accent,
        "--on-accent": text_on(accent),
        "--accent-ink": ink(accent),
    }


def render_theme_css(branding: Branding) -> str:
    """The per-merchant stylesheet (served by the route layer as text/css): validated colours only, no text."""
    props = ";".join(f"{k}:{v}" for k, v in theme_colours(branding).items())
    return f":root{{{props}}}\n"


def _theme_version(branding: Branding) -> str:
    return hashlib.sha256(render_theme_css(branding).encode()).hexdigest()[:12]


def theme_href(page_href: str, branding: Branding) -> str:
    """Where a page under `page_href` links its merchant stylesheet (`{page_href}/theme.css`), versioned by it."""
    return f"{page_href}/theme.css?v={_theme_version(branding)}"


# --- the JSON the page polls -------------------------------------------------------------------


def status_payload(page: TrackingPage) -> dict[str, Any]:
    """The live part of the page as JSON, with localized texts; `version` changes whenever anything else does.

    Shape: status, status_label, status_detail, eta {low, high, text, early} | null (low and high null when the
    text says "later today"; early: expected before the promised window opens, which the text says),
    stops_before, stops_before_text,
    driver {lat, lng, first_name} | null, destination {lat, lng} | null,
    timeline [{kind, label, at_text}], version.
    """
    t = Translator(page.locale)
    tz = _zone(page.time_zone)
    eta: dict[str, str | bool | None] | None = None
    if page.eta_later_today:
        eta = {"low": None, "high": None, "text": t("eta.later_today")}
    elif page.eta_low is not None and page.eta_high is not None:
        eta = {
            "low": _local(page.eta_low, tz).isoformat(timespec="seconds"),
            "high": _local(page.eta_high, tz).isoformat(timespec="seconds"),
            "text": eta_text(t, page.eta_low, page.eta_high, tz),
            "early": page.eta_early,
        }
        if page.eta_early:
            eta["text"] = t("eta.early", eta=eta["text"])
    driver_pos = _driver_position(page)
    destination = _coords(page.destination)
    stops = page.stops_before if page.stops_before is not None and page.stops_before >= 0 else None
    payload: dict[str, Any] = {
        "status": page.status,
        "status_label": t(f"status.{_status_key(t, page.status, page.driver_departed)}"),
        "status_detail": t(f"status_detail.{_status_key(t, page.status, page.driver_departed)}"),
        "eta": eta,
        "stops_before": stops,
        "stops_before_text": _stops_text(t, stops),
        "driver": ({"lat": driver_pos[0], "lng": driver_pos[1], "first_name": page.driver_first_name}
                   if driver_pos else None),
        "destination": {"lat": destination[0], "lng": destination[1]} if destination else None,
        "timeline": [{"kind": ev.kind, "label": _event_label(t, ev), "at_text": t.format_datetime(_local(ev.at, tz))}
                     for ev in page.timeline],
    }
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    payload["version"] = hashlib.sha256(canonical.encode()).hexdigest()[:16]
    return payload


def status_json(payload: dict[str, Any]) -> str:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)


def status_etag(payload: dict[str, Any]) -> str:
    """The strong ETag for a payload: its version, quoted."""
    return f'"{payload["version"]}"'


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """Whether an If-None-Match header names `etag` (weak comparison, `*` matches)."""
    if not if_none_match:
        return False
    bare = etag.removeprefix("W/")
    for candidate in if_none_match.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == bare:
            return True
    return False


# --- headers for the route layer ------------------------------------------------------------------


def content_security_policy(tile_url: str | None, logo_url: str | None = None, *,
                            image_urls: Iterable[str | None] = ()) -> str:
    """A strict CSP: scripts and styles only from this origin, images also from the tile server and the
    origins of the logo and any other image the page shows (the proof photo's presigned URL)."""
    img = ["'self'", "data:"]
    origins = [_origin(tile_url, template=True) if _tile_template(tile_url) else None, _origin(_http_url(logo_url))]
    origins.extend(_origin(_http_url(u)) for u in image_urls)
    for origin in origins:
        if origin and origin not in img:
            img.append(origin)
    return "; ".join([
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        f"img-src {' '.join(img)}",
        "connect-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ])


_COMMON_HEADERS = {
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex, nofollow",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}
HTML_CONTENT_TYPE = "text/html; charset=utf-8"
CSS_CONTENT_TYPE = "text/css; charset=utf-8"


def page_headers(page: TrackingPage, branding: Branding, tile_url: str | None) -> dict[str, str]:
    """Headers for the tracking page HTML (CSP sized to exactly the image origins this page uses)."""
    csp = content_security_policy(tile_url, branding.logo_url, image_urls=[page.proof_photo_url])
    return {"Content-Type": HTML_CONTENT_TYPE, "Content-Security-Policy": csp, **_COMMON_HEADERS}


def not_found_headers() -> dict[str, str]:
    """Headers for the 404 page (and the message pages): the same strict CSP, no tile server."""
    return {"Content-Type": HTML_CONTENT_TYPE, "Content-Security-Policy": content_security_policy(None),
            **_COMMON_HEADERS}


def status_headers(payload: dict[str, Any]) -> dict[str, str]:
    """Headers for the polled JSON (200 and 304 alike): the ETag, and no caching by anyone else."""
    return {"Content-Type": "application/json", "ETag": status_etag(payload), "Cache-Control": "no-cache, private",
            "Referrer-Policy": "no-referrer", "X-Robots-Tag": "noindex, nofollow", "X-Content-Type-Options": "nosniff"}


def theme_headers() -> dict[str, str]:
    """Headers for `render_theme_css` (its URL carries ?v=<hash>, so a day of caching is safe)."""
    return {"Content-Type": CSS_CONTENT_TYPE, "Cache-Control": "private, max-age=86400",
            "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


# --- HTML -----------------------------------------------------------------------------------------


def document_head(t: Translator, title: str, static_base: str) -> list[str]:
    """The opening every page shares (tracking and driver): language and direction, not indexed, no referrer
    sent, the icon. The caller adds its stylesheets and scripts and closes the head."""
    return [
        "<!doctype html>",
        f'<html lang="{_e(t.locale)}" dir="{t.dir}">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<meta name="robots" content="noindex, nofollow">',
        '<meta name="referrer" content="no-referrer">',
        f"<title>{_e(title)}</title>",
        f'<link rel="icon" href="{_e(asset_url("favicon.svg", static_base))}" type="image/svg+xml">',
    ]


def _head(t: Translator, title: str, *, static_base: str, theme_href: str | None, with_map: bool) -> list[str]:
    out = document_head(t, title, static_base)
    if with_map:
        out.append(f'<link rel="stylesheet" href="{_e(asset_url("leaflet.css", static_base))}">')
    out.append(f'<link rel="stylesheet" href="{_e(asset_url("track.css", static_base))}">')
    if theme_href:
        out.append(f'<link rel="stylesheet" href="{_e(theme_href)}">')
    if with_map:
        out.append(f'<script src="{_e(asset_url("leaflet.js", static_base))}" defer></script>')
    return out


def _brand_bar(branding: Branding | None) -> str:
    if branding is None:
        return ""
    logo = _http_url(branding.logo_url)
    img = f'<img class="logo" src="{_e(logo)}" alt="" height="40">' if logo else ""
    return f'<header class="brand-bar">{img}<p class="brand-name">{_e(branding.name)}</p></header>'


def _hidden(flag: bool) -> str:
    return " hidden" if flag else ""


def _csrf_field(csrf_token: str) -> str:
    return f'<input type="hidden" name="csrf" value="{_e(csrf_token)}">'


def _contact(t: Translator, page: TrackingPage, branding: Branding) -> str:
    lines: list[str] = []
    if page.driver_first_name and page.status in LIVE_STATUSES:
        lines.append(f'<p>{_e(t("contact.driver", name=page.driver_first_name))}</p>')
    items: list[str] = []
    email = (branding.support_email or "").strip()
    if email:
        link = f'<a href="mailto:{_e(email)}">{_e(email)}</a>' if _EMAIL.match(email) else _e(email)
        items.append(f'<li>{_e(t("contact.email"))}: {link}</li>')
    phone = (branding.support_phone or "").strip()
    if phone:
        if _PHONE.match(phone):
            dial = "".join(c for c in phone if c.isdigit() or c == "+")
            items.append(f'<li>{_e(t("contact.phone"))}: <a href="tel:{_e(dial)}">{_e(phone)}</a></li>')
        else:
            items.append(f'<li>{_e(t("contact.phone"))}: {_e(phone)}</li>')
    if items:
        lines.append(f'<p>{_e(t("contact.merchant", merchant=branding.name))}</p><ul class="contact-list">'
                     + "".join(items) + "</ul>")
    if not lines:
        return ""
    return ('<section class="card" aria-labelledby="contact-h">'
            f'<h2 id="contact-h">{_e(t("contact.heading"))}</h2>{"".join(lines)}</section>')


def _map(t: Translator, payload: dict[str, Any], tiles: str | None, tile_attribution: str | None) -> str:
    driver, dest = payload["driver"], payload["destination"]
    attrs = [
        'id="map" class="map"',
        f'aria-label="{_e(t("map.label"))}"',
        f'data-no-tiles="{_e(t("map.no_tiles"))}"',
    ]
    if tiles:
        attrs.append(f'data-tiles="{_e(tiles)}"')
    if driver:
        attrs.append(f'data-driver="{driver["lat"]},{driver["lng"]}"')
    if dest:
        attrs.append(f'data-dest="{dest["lat"]},{dest["lng"]}"')
    legend = (f'<ul class="legend"><li data-field="driver_legend"{_hidden(driver is None)}>'
              f'<span class="dot dot--driver" aria-hidden="true"></span>{_e(t("map.legend_driver"))}</li>'
              + (f'<li><span class="dot dot--dest" aria-hidden="true"></span>{_e(t("map.legend_destination"))}</li>'
                 if dest else "")
              + "</ul>")
    attribution = (f'<p class="map-attribution">{_e(t("map.attribution", attribution=tile_attribution))}</p>'
                   if tiles and tile_attribution else "")
    return ('<section class="card map-card" aria-labelledby="map-h">'
            f'<h2 id="map-h" class="visually-hidden">{_e(t("map.heading"))}</h2>'
            f'<div {" ".join(attrs)}><p class="map-fallback">{_e(t("map.fallback"))}</p></div>'
            f"{legend}{attribution}</section>")


def _instructions_form(t: Translator, page: TrackingPage, csrf_token: str, action_base: str) -> str:
    saved = (f'<p class="notice" role="status">{_e(t("instructions.saved"))}</p>' if page.instructions_saved else "")
    return (
        '<section class="card" aria-labelledby="instr-h">'
        f'<h2 id="instr-h">{_e(t("instructions.heading"))}</h2>'
        f'<p>{_e(t("instructions.intro"))}</p>{saved}'
        f'<form method="post" action="{_e(action_base)}/instructions">{_csrf_field(csrf_token)}'
        f'<div class="field"><label for="gate_code">{_e(t("instructions.gate_code"))}</label>'
        f'<input id="gate_code" name="gate_code" type="text" maxlength="{GATE_CODE_MAX}" autocomplete="off"></div>'
        '<div class="field field--check"><input id="leave_at_door" name="leave_at_door" type="checkbox" value="1">'
        f'<label for="leave_at_door">{_e(t("instructions.leave_at_door"))}</label></div>'
        f'<div class="field"><label for="note">{_e(t("instructions.note"))}</label>'
        f'<textarea id="note" name="note" rows="3" maxlength="{NOTE_MAX}" aria-describedby="note-hint"></textarea>'
        f'<p id="note-hint" class="hint">{_e(t("instructions.note_hint", max=NOTE_MAX))}</p></div>'
        f'<button type="submit">{_e(t("instructions.submit"))}</button></form></section>'
    )


def _reschedule_form(t: Translator, page: TrackingPage, tz: tzinfo, csrf_token: str, action_base: str) -> str:
    radios = []
    for i, option in enumerate(page.reschedule_options):
        label = option.label or window_text(t, option.start, option.end, tz)
        required = " required" if i == 0 else ""
        radios.append(f'<div class="field field--check"><input id="opt-{i}" name="option" type="radio" '
                      f'value="{_e(option.id)}"{required}><label for="opt-{i}">{_e(label)}</label></div>')
    return (
        '<section class="card" aria-labelledby="resched-h">'
        f'<h2 id="resched-h">{_e(t("reschedule.heading"))}</h2><p>{_e(t("reschedule.intro"))}</p>'
        f'<form method="post" action="{_e(action_base)}/reschedule">{_csrf_field(csrf_token)}'
        f'<fieldset><legend>{_e(t("reschedule.legend"))}</legend>{"".join(radios)}</fieldset>'
        f'<button type="submit">{_e(t("reschedule.submit"))}</button></form></section>'
    )


def _redirect_form(t: Translator, page: TrackingPage, tz: tzinfo, csrf_token: str, action_base: str) -> str:
    """Safe place or neighbour, a note, and the next delivery time (every control reachable by keyboard)."""
    options = "".join(f'<option value="{_e(o.id)}">{_e(o.label or window_text(t, o.start, o.end, tz))}</option>'
                      for o in page.reschedule_options)
    kinds = "".join(
        f'<div class="field field--check"><input id="redirect-kind-{kind}" name="kind" type="radio" value="{kind}"'
        f'{" required" if kind == "safe_place" else ""}><label for="redirect-kind-{kind}">'
        f'{_e(t(f"redirect.{kind}"))}</label></div>' for kind in ("safe_place", "neighbour"))
    return (
        '<section class="card" aria-labelledby="redirect-h">'
        f'<h2 id="redirect-h">{_e(t("redirect.heading"))}</h2><p>{_e(t("redirect.intro"))}</p>'
        f'<form method="post" action="{_e(action_base)}/redirect">{_csrf_field(csrf_token)}'
        f'<fieldset><legend>{_e(t("redirect.legend"))}</legend>{kinds}</fieldset>'
        f'<div class="field"><label for="redirect-note">{_e(t("redirect.note"))}</label>'
        f'<textarea id="redirect-note" name="note" rows="2" maxlength="{REDIRECT_NOTE_MAX}"></textarea></div>'
        f'<div class="field"><label for="redirect-neighbour">{_e(t("redirect.neighbour_name"))}</label>'
        f'<input id="redirect-neighbour" name="neighbour_name" type="text" maxlength="{NEIGHBOUR_NAME_MAX}" '
        'autocomplete="off"></div>'
        f'<div class="field"><label for="redirect-when">{_e(t("redirect.when"))}</label>'
        f'<select id="redirect-when" name="option" required>{options}</select></div>'
        f'<button type="submit">{_e(t("redirect.submit"))}</button></form></section>'
    )


def _failure_facts(t: Translator, page: TrackingPage) -> list[str]:
    """Why the last attempt failed, in words, and how many attempts there were (never a raw code)."""
    if page.failure_reason is None or page.status not in ("failed", "returned"):
        return []
    reason = failure_reason_text(page.failure_reason, t.locale)
    if page.status == "returned":
        return [f'<li>{_e(t("returned.after", attempts=page.attempts, reason=reason))}</li>']
    facts = [f'<li>{_e(t("failed.reason", reason=reason))}</li>']
    if page.max_attempts is not None and page.attempts:
        facts.append(f'<li>{_e(t("failed.attempts", attempts=page.attempts, max=page.max_attempts))}</li>')
    if page.can_reschedule:
        facts.append(f'<li>{_e(t("failed.intro"))}</li>')
    return facts


def _rating_section(t: Translator, page: TrackingPage, csrf_token: str, action_base: str) -> str:
    head = f'<section class="card" aria-labelledby="rating-h"><h2 id="rating-h">{_e(t("rating.heading"))}</h2>'
    if page.rating is not None and 1 <= page.rating <= 5:
        return f'{head}<p class="notice" role="status">{_e(t("rating.thanks", rating=page.rating))}</p></section>'
    radios = "".join(
        f'<div class="field field--check"><input id="rating-{n}" name="rating" type="radio" value="{n}"'
        f'{" required" if n == 1 else ""}><label for="rating-{n}">{_e(t(f"rating.value.{n}"))}</label></div>'
        for n in range(5, 0, -1)
    )
    return (
        f'{head}<form method="post" action="{_e(action_base)}/rating">{_csrf_field(csrf_token)}'
        f'<fieldset class="rating"><legend>{_e(t("rating.legend"))}</legend>{radios}</fieldset>'
        f'<div class="field"><label for="comment">{_e(t("rating.comment"))}</label>'
        f'<textarea id="comment" name="comment" rows="3" maxlength="{COMMENT_MAX}" aria-describedby="comment-hint">'
        f'</textarea><p id="comment-hint" class="hint">{_e(t("rating.comment_hint", max=COMMENT_MAX))}</p></div>'
        f'<button type="submit">{_e(t("rating.submit"))}</button></form></section>'
    )


def _proof(t: Translator, page: TrackingPage, tz: tzinfo) -> str:
    photo = _http_url(page.proof_photo_url)
    if page.status != "delivered" or (photo is None and page.delivered_at is None):
        return ""
    parts = ['<section class="card" aria-labelledby="proof-h">', f'<h2 id="proof-h">{_e(t("proof.heading"))}</h2>']
    if page.delivered_at is not None:
        when = _local(page.delivered_at, tz)
        parts.append(f'<p><time datetime="{_e(when.isoformat(timespec="minutes"))}">'
                     f'{_e(t("proof.delivered_at", when=t.format_datetime(when)))}</time></p>')
    if photo:
        parts.append(f'<img class="proof-photo" src="{_e(photo)}" alt="{_e(t("proof.photo_alt"))}" loading="lazy">')
    if page.receipt_jws:
        parts.append(f'<details id="receipt" class="receipt"><summary>{_e(t("proof.receipt"))}</summary>'
                     f'<p>{_e(t("proof.receipt_hint"))}</p>'
                     f'<pre class="receipt-jws" tabindex="0">{_e(page.receipt_jws)}</pre></details>')
    parts.append("</section>")
    return "".join(parts)


def _timeline(t: Translator, page: TrackingPage, payload: dict[str, Any], tz: tzinfo) -> str:
    items = []
    for event, entry in zip(page.timeline, payload["timeline"], strict=True):
        iso = _local(event.at, tz).isoformat(timespec="minutes")
        items.append(f'<li><span class="tl-label">{_e(entry["label"])}</span> '
                     f'<time class="tl-time" datetime="{_e(iso)}">{_e(entry["at_text"])}</time></li>')
    return ('<section class="card" aria-labelledby="timeline-h">'
            f'<h2 id="timeline-h">{_e(t("timeline.heading"))}</h2>'
            f'<ol class="timeline" data-field="timeline">{"".join(items)}</ol></section>')


def render_tracking_page(page: TrackingPage, branding: Branding, *, tile_url: str | None, csrf_token: str,
                         status_url: str, action_base: str, theme_href: str | None = None,
                         static_base: str = DEFAULT_STATIC_BASE, tile_attribution: str | None = None,
                         poll_seconds: int = 15, preferences_href: str | None = None,
                         extra_sections: Sequence[str] = ()) -> str:
    """The whole tracking page as HTML.

    `extra_sections` are other features' ready HTML sections (the conversation with the driver), shown
    before the timeline.

    `action_base` is the page's own path (`/api/track/<token>`): forms post to
    `{action_base}/instructions`, `/reschedule` and `/rating`. `status_url` is the
    polled JSON (`status_payload`). `theme_href` is where `render_theme_css` is
    served (`{action_base}/theme.css`); a `?v=` hash of the theme is appended.
    `tile_url` is a Leaflet template (`https://tile.example/{z}/{x}/{y}.png`, `{s}.`
    allowed); an invalid one is ignored and the map shows its markers on a plain
    background. `tile_attribution` is plain text shown under the map.
    """
    t = Translator(page.locale)
    tz = _zone(page.time_zone)
    payload = status_payload(page)
    tiles = _tile_template(tile_url)
    live = page.status in LIVE_STATUSES
    with_map = live and (payload["driver"] is not None or payload["destination"] is not None)
    status_key = _status_key(t, page.status, page.driver_departed)
    if theme_href:
        theme_href = f"{theme_href}{'&' if '?' in theme_href else '?'}v={_theme_version(branding)}"

    out = _head(t, t("page.title", merchant=branding.name), static_base=static_base, theme_href=theme_href,
                with_map=with_map)
    out.append(f'<script src="{_e(asset_url("track.js", static_base))}" defer></script>')
    out.append("</head>")
    out.append("<body>")
    out.append(f'<a class="skip-link" href="#main">{_e(t("page.skip"))}</a>')
    out.append(_brand_bar(branding))
    poll = max(5, min(int(poll_seconds), 300))
    details = {s: t(f"status_detail.{s}") for s in sorted(LIVE_STATUSES)}
    out.append(f'<main id="main" data-status-url="{_e(status_url)}" data-poll="{poll}" '
               f'data-status="{_e(page.status)}" data-version="{_e(payload["version"])}">')

    # status card
    out.append('<section class="card status-card" aria-labelledby="status-h">')
    if page.first_name:
        out.append(f'<p class="greeting">{_e(t("page.greeting", name=page.first_name))}</p>')
    out.append('<div class="live" aria-live="polite">')
    out.append(f'<h1 id="status-h" class="status-label" data-field="status_label">{_e(payload["status_label"])}</h1>')
    out.append(f'<p class="status-detail" data-field="status_detail" data-details="{_e(json.dumps(details))}">'
               f'{_e(t(f"status_detail.{status_key}"))}</p>')
    eta = payload["eta"]
    out.append(f'<div class="eta" data-field="eta"{_hidden(eta is None)}>'
               f'<p class="eta-label">{_e(t("eta.label"))}</p>'
               f'<p class="eta-text" data-field="eta_text">{_e(eta["text"] if eta else "")}</p></div>')
    stops = payload["stops_before_text"]
    out.append(f'<p class="stops" data-field="stops_before_text"{_hidden(stops is None)}>{_e(stops or "")}</p>')
    out.append("</div>")
    facts = _failure_facts(t, page)
    if page.promised_start is not None and page.promised_end is not None:
        promised = window_text(t, page.promised_start, page.promised_end, tz)
        facts.append(f'<li>{_e(t("page.promised", window=promised))}</li>')
    if page.city:
        facts.append(f'<li>{_e(t("page.delivering_to", city=page.city))}</li>')
    if page.eta_accuracy is not None and page.status not in FINAL_STATUSES:
        held, of = page.eta_accuracy
        facts.append(f'<li class="eta-accuracy">{_e(t("page.eta_accuracy", held=held, of=of))}</li>')
    if facts:
        out.append(f'<ul class="facts">{"".join(facts)}</ul>')
    out.append("</section>")

    if with_map:
        out.append(_map(t, payload, tiles, tile_attribution))
    out.append(_proof(t, page, tz))
    if page.can_rate or (page.rating is not None and page.status == "delivered"):
        out.append(_rating_section(t, page, csrf_token, action_base))
    if page.can_reschedule and page.reschedule_options:
        out.append(_reschedule_form(t, page, tz, csrf_token, action_base))
        if page.can_redirect:
            out.append(_redirect_form(t, page, tz, csrf_token, action_base))
    if page.can_give_instructions and page.status not in FINAL_STATUSES:
        out.append(_instructions_form(t, page, csrf_token, action_base))
    out.extend(extra_sections)
    if page.timeline:
        out.append(_timeline(t, page, payload, tz))
    out.append(_contact(t, page, branding))
    out.append("</main>")
    prefs = f'<p><a href="{_e(preferences_href)}">{_e(t("prefs.link"))}</a></p>' if preferences_href else ""
    out.append(f'<footer class="footer">{prefs}<p>{_e(t("page.powered_by"))}</p></footer>')
    out.append("</body></html>")
    return "\n".join(part for part in out if part) + "\n"


def _simple_page(t: Translator, title: str, body: str, *, static_base: str, branding: Branding | None,
                 theme_href: str | None, back_href: str | None) -> str:
    out = _head(t, title, static_base=static_base, theme_href=theme_href, with_map=False)
    out.append("</head>")
    out.append("<body>")
    out.append(_brand_bar(branding))
    back = f'<p><a href="{_e(back_href)}">{_e(t("message.back"))}</a></p>' if back_href else ""
    out.append(f'<main id="main"><section class="card"><h1>{_e(title)}</h1><p>{_e(body)}</p>{back}</section></main>')
    out.append(f'<footer class="footer"><p>{_e(t("page.powered_by"))}</p></footer>')
    out.append("</body></html>")
    return "\n".join(part for part in out if part) + "\n"


def render_not_found(locale: str | None = None, *, static_base: str = DEFAULT_STATIC_BASE) -> str:
    """The friendly 404 page: the same bytes for an unknown, malformed, expired or revoked token."""
    t = Translator(locale or "en")
    return _simple_page(t, t("not_found.title"), t("not_found.body"), static_base=static_base, branding=None,
                        theme_href=None, back_href=None)


def render_message(kind: str, locale: str | None = None, *, back_href: str | None = None,
                   branding: Branding | None = None, theme_href: str | None = None,
                   static_base: str = DEFAULT_STATIC_BASE) -> str:
    """A short page after a form post (`kind` in MESSAGE_KINDS): a title, a sentence and a link back."""
    if kind not in MESSAGE_KINDS:
        raise ValueError(f"unknown message kind {kind!r}")
    t = Translator(locale or "en")
    if theme_href and branding is not None:
        theme_href = f"{theme_href}{'&' if '?' in theme_href else '?'}v={_theme_version(branding)}"
    return _simple_page(t, t(f"message.{kind}.title"), t(f"message.{kind}.body"), static_base=static_base,
                        branding=branding, theme_href=theme_href if branding is not None else None,
                        back_href=back_href)


# --- size --------------------------------------------------------------------------------------------


def first_load_sizes(page_html: str, theme_css: str = "") -> dict[str, tuple[int, int]]:
    """(raw bytes, gzip bytes) of everything a first visit downloads, map tiles excluded."""
    sizes = {"html": (len(page_html.encode()), gzip_size(page_html.encode()))}
    if theme_css:
        sizes["theme.css"] = (len(theme_css.encode()), gzip_size(theme_css.encode()))
    for name in FIRST_LOAD_ASSETS:
        found = static_asset(name)
        assert found is not None
        sizes[name] = (len(found[0]), gzip_size(found[0]))
    return sizes


def first_load_bytes(page_html: str, theme_css: str = "") -> int:
    """Compressed bytes of the first load: the HTML plus FIRST_LOAD_ASSETS (styles, scripts, icon) and the theme."""
    return sum(gz for _, gz in first_load_sizes(page_html, theme_css).values())
