"""The tracking page front end (chalicelib.web): pure rendering, catalogues, assets, forms. No network, no AWS."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from chalicelib.http.routes import parse_form
from chalicelib.recipient.forms import (
    FormError,
    InstructionsForm,
    RatingForm,
    RescheduleForm,
    check_csrf,
    csrf_token,
    is_cross_site,
    parse_instructions,
    parse_rating,
    parse_reschedule,
)
from chalicelib.recipient.page import (
    LIVE_STATUSES,
    MESSAGE_KINDS,
    PageEvent,
    RescheduleOption,
    TrackingPage,
    content_security_policy,
    etag_matches,
    first_load_bytes,
    first_load_sizes,
    not_found_headers,
    page_headers,
    render_message,
    render_not_found,
    render_theme_css,
    render_tracking_page,
    status_etag,
    status_payload,
    theme_colours,
)
from chalicelib.shipments.lifecycle import DRIVER_VISIBLE, ShipmentStatus
from chalicelib.web.assets import asset_url, static_asset
from chalicelib.web.branding import DEFAULT_ACCENT, DEFAULT_PRIMARY, PAGE_BACKGROUND, Branding, contrast_ratio
from chalicelib.web.i18n import LOCALES_DIR, Translator, available_locales, catalogue, negotiate

WEB_DIR = Path(__file__).resolve().parents[2] / "chalicelib" / "web"
TOKEN = "A" * 43
ACTION = f"/api/track/{TOKEN}"
CSRF = "1700000000.csrf-token-value"
TILES = "https://{s}.tile.openstreetmap.org/{z}/{x}/{y}.png"
T0 = datetime(2025, 6, 3, 12, 10, 0, tzinfo=UTC)  # 14:10 in Berlin (CEST), 08:10 in New York (EDT)


def make_page(**changes: Any) -> TrackingPage:
    page = TrackingPage(
        token=TOKEN, status="out_for_delivery", time_zone="Europe/Berlin", locale="en", first_name="Ann",
        city="Berlin", eta_low=T0, eta_high=T0 + timedelta(minutes=20),
        promised_start=T0 - timedelta(hours=2), promised_end=T0 + timedelta(hours=2), stops_before=3,
        driver_first_name="Max", driver_position=(52.52, 13.405), destination=(52.53, 13.41),
        timeline=(PageEvent("created", T0 - timedelta(days=1)), PageEvent("out_for_delivery", T0 - timedelta(hours=3))),
    )
    return replace(page, **changes)


BRANDING = Branding("Acme Parcels", "#0b5394", "#b45309", "https://cdn.acme.example/logo.png",
                    "help@acme.example", "+49 30 1234 5678")


def render(page: TrackingPage | None = None, branding: Branding = BRANDING, **kwargs: Any) -> str:
    options: dict[str, Any] = {"tile_url": TILES, "csrf_token": CSRF, "status_url": f"{ACTION}/status",
                               "action_base": ACTION, "theme_href": f"{ACTION}/theme.css"}
    options.update(kwargs)
    return render_tracking_page(page or make_page(), branding, **options)


class Tags(HTMLParser):
    """Every start tag with its attributes, and the text of <script> and <style> elements."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.inline: list[str] = []
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag in ("script", "style"):
            self._in = tag

    def handle_endtag(self, tag: str) -> None:
        if tag == self._in:
            self._in = None

    def handle_data(self, data: str) -> None:
        if self._in and data.strip():
            self.inline.append(data)

    def find(self, tag: str, **attrs: str) -> list[dict[str, str | None]]:
        return [a for t, a in self.tags if t == tag and all(a.get(k) == v for k, v in attrs.items())]


def parse(html: str) -> Tags:
    parser = Tags()
    parser.feed(html)
    parser.close()
    return parser


def assert_csp_safe(html: str) -> Tags:
    """No inline script or style, no handler attribute, no style attribute, only safe URL schemes."""
    doc = parse(html)
    assert doc.inline == [], "inline <script> or <style> content"
    assert not doc.find("style")
    for tag, attrs in doc.tags:
        if tag == "script":
            assert attrs.get("src"), "a <script> without src"
        for name, value in attrs.items():
            assert not name.startswith("on"), f"event handler attribute {name} on <{tag}>"
            assert name != "style", f"style attribute on <{tag}>"
            if name in ("href", "src", "action") and value:
                assert re.match(r"^(https?://|/|#|mailto:|tel:)", value), f"{name}={value!r} on <{tag}>"
    return doc


# --- escaping and CSP-compatibility ---------------------------------------------------------

HOSTILE = '<script>alert(1)</script>"\'><img src=x onerror=alert(2)>'


def test_hostile_recipient_driver_and_merchant_text_is_escaped() -> None:
    page = make_page(first_name=HOSTILE, city=HOSTILE, driver_first_name=HOSTILE,
                     reschedule_options=(RescheduleOption(HOSTILE, T0, T0 + timedelta(hours=2), label=HOSTILE),),
                     can_reschedule=True, status="assigned", timeline=(PageEvent(HOSTILE, T0, label_key=HOSTILE),))
    branding = Branding(HOSTILE, primary_colour="red;}</style><script>x()</script>",
                        accent_colour="#12345g", logo_url="javascript:alert(1)",
                        support_email=HOSTILE, support_phone=HOSTILE)
    html = render(page, branding, csrf_token=HOSTILE, tile_attribution=HOSTILE, status_url=HOSTILE)
    assert "<script>alert" not in html
    assert "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    doc = assert_csp_safe(html)
    assert not doc.find("img", src="javascript:alert(1)")
    assert not any((a.get("href") or "").startswith(("mailto:", "tel:")) for _, a in doc.tags)
    # The hidden CSRF field carries the hostile value as an attribute, intact after unescaping.
    assert doc.find("input", name="csrf")[0]["value"] == HOSTILE


def test_hostile_colours_fall_back_to_the_default_theme() -> None:
    css = render_theme_css(Branding("x", "red;}</style><script>x()</script>", "url(javascript:x)"))
    assert f"--brand:{DEFAULT_PRIMARY}" in css
    assert f"--accent:{DEFAULT_ACCENT}" in css
    assert "<" not in css and "url(" not in css and "script" not in css
    assert "--brand:#0b5394" in render_theme_css(Branding("x", "#0B5394"))


def test_javascript_and_data_urls_never_become_src_or_href() -> None:
    for bad in ("javascript:alert(1)", "data:image/svg+xml,<svg onload=x>", "//evil.example/x.png",
                "https://user:pw@evil.example/x.png", 'https://evil.example/x.png" onload="x'):
        html = render(make_page(status="delivered", proof_photo_url=bad, delivered_at=T0),
                      replace(BRANDING, logo_url=bad))
        doc = assert_csp_safe(html)
        assert not doc.find("img", src=bad)


def test_page_has_no_inline_script_style_or_handlers_in_every_state() -> None:
    states = [
        make_page(),
        make_page(status="created", can_reschedule=True,
                  reschedule_options=(RescheduleOption("a", T0 + timedelta(days=1), T0 + timedelta(days=1, hours=3)),)),
        make_page(status="delivered", can_rate=True, proof_photo_url="https://b.s3.amazonaws.com/p.jpg?sig=1",
                  delivered_at=T0),
        make_page(status="delivered", rating=4),
        make_page(status="weird-status", timeline=(), driver_position=None, destination=None),
    ]
    for page in states:
        assert_csp_safe(render(page))
    assert_csp_safe(render_not_found("en"))
    for kind in MESSAGE_KINDS:
        assert_csp_safe(render_message(kind, "de", back_href=ACTION, branding=BRANDING, theme_href="/t.css"))


def test_scripts_are_deferred_files_and_track_js_is_console_free() -> None:
    doc = parse(render())
    scripts = [a["src"] for a in doc.find("script")]
    assert len(scripts) == 2 and all(s and "?v=" in s for s in scripts)
    assert all("defer" in a for a in doc.find("script"))
    js = (WEB_DIR / "static" / "track.js").read_text()
    for forbidden in ("console.", "innerHTML", "eval(", "document.write", "setAttribute(\"style"):
        assert forbidden not in js


@pytest.mark.skipif(shutil.which("node") is None, reason="node not installed: JS syntax check skipped")
def test_track_js_parses() -> None:
    subprocess.run(["node", "--check", str(WEB_DIR / "static" / "track.js")], check=True)


def test_page_basics_for_accessibility() -> None:
    html = render()
    doc = parse(html)
    assert doc.find("html", lang="en")
    assert doc.find("meta", name="viewport")
    assert doc.find("a", href="#main") and doc.find("main", id="main")
    assert len(doc.find("h1")) == 1
    ids = [a["id"] for _, a in doc.tags if a.get("id")]
    assert len(ids) == len(set(ids)), "duplicate ids"
    labelled = {a["for"] for a in doc.find("label")}
    controls = [a for t, a in doc.tags if t in ("input", "textarea", "select") and a.get("type") != "hidden"]
    assert controls and all(a.get("id") in labelled for a in controls), "a control without a <label for>"
    assert doc.find("div", **{"aria-live": "polite"})


# --- CSP and headers ----------------------------------------------------------------------------


def test_content_security_policy_is_strict() -> None:
    csp = content_security_policy(TILES, "https://cdn.acme.example/logo.png")
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["default-src"] == "'none'"
    assert directives["script-src"] == "'self'"
    assert directives["style-src"] == "'self'"
    assert directives["connect-src"] == "'self'"
    assert directives["form-action"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert directives["base-uri"] == "'none'"
    assert directives["img-src"].split() == ["'self'", "data:", "https://*.tile.openstreetmap.org",
                                             "https://cdn.acme.example"]
    assert "unsafe" not in csp


def test_csp_only_lists_valid_origins() -> None:
    for bad in ("javascript:alert(1)", "https://evil.example; script-src *", "ftp://x.example/{z}/{x}/{y}",
                "https://evil.example/no-placeholders.png", None):
        csp = content_security_policy(bad)
        assert "img-src 'self' data:;" in csp, bad
    csp = content_security_policy("http://127.0.0.1:8080/tiles/{z}/{x}/{y}.png",
                                  image_urls=["http://127.0.0.1:5001/bucket/p.jpg?X-Amz-Signature=a", None])
    assert "img-src 'self' data: http://127.0.0.1:8080 http://127.0.0.1:5001;" in csp


def test_page_headers() -> None:
    page = make_page(status="delivered", proof_photo_url="https://proof.s3.amazonaws.com/p.jpg?sig=x")
    headers = page_headers(page, BRANDING, TILES)
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["X-Robots-Tag"].startswith("noindex")
    assert headers["Cache-Control"] == "no-store"
    assert "https://proof.s3.amazonaws.com" in headers["Content-Security-Policy"]
    assert not_found_headers()["Content-Security-Policy"] == content_security_policy(None)


# --- times and languages ------------------------------------------------------------------------


@pytest.mark.parametrize(("zone", "expected"), [
    ("Europe/Berlin", "Between 14:10 and 14:30 CEST"),
    ("America/New_York", "Between 08:10 and 08:30 EDT"),
    ("Asia/Kolkata", "Between 17:40 and 18:00 IST"),
    ("Not/AZone", "Between 12:10 and 12:30 UTC"),  # unknown zone: UTC
])
def test_eta_window_in_the_recipients_time_zone(zone: str, expected: str) -> None:
    page = make_page(time_zone=zone)
    assert status_payload(page)["eta"]["text"] == expected
    assert expected in render(page)


def test_eta_window_rounds_outwards_and_collapses() -> None:
    page = make_page(eta_low=T0 + timedelta(seconds=59), eta_high=T0 + timedelta(minutes=19, seconds=1))
    assert status_payload(page)["eta"]["text"] == "Between 14:10 and 14:30 CEST"
    assert status_payload(make_page(eta_high=T0))["eta"]["text"] == "Around 14:10 CEST"
    late = datetime(2025, 6, 3, 21, 50, tzinfo=UTC)  # 23:50 Berlin, window ends after midnight
    text = status_payload(make_page(eta_low=late, eta_high=late + timedelta(minutes=30)))["eta"]["text"]
    assert text == "Between Tue 3 Jun, 23:50 and Wed 4 Jun, 00:20 CEST"  # the renderer's fallback only
    naive = status_payload(make_page(eta_low=T0.replace(tzinfo=None), eta_high=T0.replace(tzinfo=None)))
    assert naive["eta"]["text"] == "Around 14:10 CEST"  # naive is UTC


def test_german_page() -> None:
    html = render(make_page(locale="de-DE"))
    doc = parse(html)
    assert doc.find("html", lang="de")
    assert "Zwischen 14:10 und 14:30 Uhr" in html
    assert "Noch 3 Stopps vor Ihnen" in html
    assert "In Zustellung" in html and "Lieferhinweise" in html
    assert "Between" not in html


def test_locale_negotiation_falls_back_to_english() -> None:
    assert negotiate("de-AT") == "de"
    assert negotiate("fr") == "en"
    assert negotiate(None, "fr-CH, de;q=0.8, en;q=0.5") == "de"
    assert negotiate(None, "de;q=0, en") == "en"
    assert negotiate("../../etc/passwd") == "en"
    assert negotiate("") == "en"
    html = render(make_page(locale="fr"))
    assert parse(html).find("html", lang="en")
    assert Translator("en")("no.such.key") == "no.such.key"


def test_catalogues_have_the_same_keys_and_placeholders() -> None:
    files = sorted(LOCALES_DIR.glob("*.json"))
    assert {"en", "de"} <= available_locales()
    english = json.loads((LOCALES_DIR / "en.json").read_text(encoding="utf-8"))
    placeholders = re.compile(r"\{([a-z_]+)\}")
    for path in files:
        other = json.loads(path.read_text(encoding="utf-8"))
        assert set(other) - set(english) == set(), f"{path.name} has keys English lacks"
        assert set(english) - set(other) == set(), f"{path.name} lacks keys"
        for key, text in other.items():
            assert isinstance(text, str) and text.strip(), f"{path.name}: {key} empty"
            assert set(placeholders.findall(text)) == set(placeholders.findall(english[key])), \
                f"{path.name}: {key} placeholders differ"
        assert other["meta.dir"] in ("ltr", "rtl") and other["meta.clock"] in ("12h", "24h")


def test_every_shipment_status_has_its_messages() -> None:
    messages = catalogue("en")
    for status in ShipmentStatus:
        for prefix in ("status", "status_detail", "event"):
            assert f"{prefix}.{status.value}" in messages
    assert {str(s) for s in DRIVER_VISIBLE} == LIVE_STATUSES


def test_twelve_hour_clock_locale() -> None:
    t = Translator("en")
    assert t.format_time(datetime(2025, 1, 1, 0, 5)) == "00:05"
    t._messages = {**t._messages, "meta.clock": "12h"}  # a merchant locale with a 12-hour clock
    assert t.format_time(datetime(2025, 1, 1, 0, 5)) == "12:05\u00a0am"
    assert t.format_time(datetime(2025, 1, 1, 14, 30)) == "2:30\u00a0pm"


# --- content by state ---------------------------------------------------------------------------


def test_stops_before_text_only_when_given() -> None:
    cases = {None: None, 0: "You are the next stop!", 1: "1 stop before yours", 3: "3 stops before yours"}
    for stops, text in cases.items():
        page = make_page(stops_before=stops)
        assert status_payload(page)["stops_before_text"] == text
        para = parse(render(page)).find("p", **{"data-field": "stops_before_text"})[0]
        assert ("hidden" in para) == (text is None)
        if text:
            assert text in render(page)
    assert "stop before yours" not in render(make_page(stops_before=None))


def forms(html: str) -> dict[str, dict[str, str | None]]:
    return {str(a["action"]).rsplit("/", 1)[1]: a for a in parse(html).find("form")}


def test_forms_follow_the_flags_and_each_has_a_csrf_field() -> None:
    options = (RescheduleOption("tue-am", T0 + timedelta(days=1), T0 + timedelta(days=1, hours=3)),
               RescheduleOption("wed-pm", T0 + timedelta(days=2), T0 + timedelta(days=2, hours=3), label="Wednesday"))
    cases = [
        (make_page(status="assigned", can_reschedule=True, reschedule_options=options), {"instructions", "reschedule"}),
        (make_page(status="assigned", can_reschedule=True, reschedule_options=()), {"instructions"}),
        (make_page(can_reschedule=False, reschedule_options=options), {"instructions"}),
        (make_page(status="delivered", can_rate=True), {"rating"}),
        (make_page(status="delivered", can_rate=False, rating=5), set()),
        (make_page(can_give_instructions=False), set()),
    ]
    for page, expected in cases:
        html = render(page)
        found = forms(html)
        assert set(found) == expected, page.status
        for form in found.values():
            assert form["method"] == "post" and str(form["action"]).startswith(ACTION + "/")
        chunks = html.split("<form ")[1:]
        assert len(chunks) == len(expected)
        for chunk in chunks:
            body = chunk.split("</form>", 1)[0]
            assert f'<input type="hidden" name="csrf" value="{CSRF}">' in body


def test_reschedule_options_are_radios_with_localized_windows() -> None:
    options = (RescheduleOption("tue-am", T0 + timedelta(days=1), T0 + timedelta(days=1, hours=3)),
               RescheduleOption("wed-pm", T0 + timedelta(days=2), T0 + timedelta(days=2, hours=3), label="Wednesday"))
    html = render(make_page(status="assigned", can_reschedule=True, reschedule_options=options))
    radios = parse(html).find("input", type="radio", name="option")
    assert [r["value"] for r in radios] == ["tue-am", "wed-pm"]
    assert "Wed 4 Jun, 14:10\u201317:10" in html and "Wednesday" in html
    de = render(make_page(status="assigned", can_reschedule=True, reschedule_options=options, locale="de"))
    assert "Mi., 4. Juni, 14:10\u201317:10 Uhr" in de


def test_rating_once_and_proof_of_delivery() -> None:
    photo = "https://proof.s3.amazonaws.com/shp/p.jpg?X-Amz-Signature=abc&X-Amz-Expires=300"
    page = make_page(status="delivered", can_rate=True, proof_photo_url=photo, delivered_at=T0)
    doc = parse(render(page))
    assert [r["value"] for r in doc.find("input", type="radio", name="rating")] == ["5", "4", "3", "2", "1"]
    assert doc.find("textarea", name="comment")
    img = doc.find("img", **{"class": "proof-photo"})[0]
    assert img["src"] == photo and img["alt"]
    rated = render(make_page(status="delivered", rating=4, can_rate=False))
    assert "You rated this delivery 4 out of 5." in rated and 'name="rating"' not in rated
    assert "proof-photo" not in render(make_page(proof_photo_url=photo))  # not before delivery


def test_driver_only_while_live_and_map_only_then() -> None:
    live = render(make_page())
    assert 'data-driver="52.52,13.405"' in live and 'id="map"' in live
    assert "leaflet.js" in live and "Your driver today is Max." in live
    for status in ("created", "assigned", "delivered", "failed"):
        page = make_page(status=status)
        assert status_payload(page)["driver"] is None
        html = render(page)
        assert 'id="map"' not in html and "leaflet" not in html and "Max" not in html
    no_driver = render(make_page(driver_position=None, driver_first_name=None))
    legend = parse(no_driver).find("li", **{"data-field": "driver_legend"})[0]
    assert "hidden" in legend and "data-driver=" not in no_driver and 'data-dest="52.53,13.41"' in no_driver


def test_map_tiles_and_attribution() -> None:
    html = render(tile_attribution="© OpenStreetMap contributors")
    assert f'data-tiles="{TILES}"' in html and "Map data: © OpenStreetMap contributors" in html
    bad = render(tile_url="javascript:alert(1)", tile_attribution="x")
    assert "data-tiles" not in bad and "Map data" not in bad and 'id="map"' in bad


def test_no_personal_data_beyond_first_name_and_city() -> None:
    page = make_page()
    payload = status_payload(page)
    assert set(payload) == {"status", "status_label", "status_detail", "eta", "stops_before", "stops_before_text",
                            "driver", "destination", "timeline", "version"}
    assert set(payload["driver"]) == {"lat", "lng", "first_name"}
    assert TOKEN not in json.dumps(payload)


# --- the polled JSON ------------------------------------------------------------------------------


def test_an_estimate_before_the_promised_window_says_so_in_the_page_and_its_json() -> None:
    early = make_page(eta_early=True, promised_start=T0 + timedelta(hours=2), promised_end=T0 + timedelta(hours=4))
    payload = status_payload(early)
    assert payload["eta"]["early"] is True
    assert payload["eta"]["text"] == "Between 14:10 and 14:30 CEST, before your delivery window"
    html = render(early)
    assert "Between 14:10 and 14:30 CEST, before your delivery window" in html
    assert "Delivery window: Tue 3 Jun, 16:10\u201318:10 CEST" in html  # the promise itself stays on the page
    german = status_payload(replace(early, locale="de"))
    assert german["eta"]["text"] == "Zwischen 14:10 und 14:30 Uhr CEST, vor Ihrem Lieferfenster"
    assert status_payload(early)["version"] != status_payload(make_page())["version"]


def test_status_payload_shape_and_version() -> None:
    payload = status_payload(make_page())
    assert payload["status"] == "out_for_delivery" and payload["status_label"] == "Out for delivery"
    assert payload["eta"] == {"low": "2025-06-03T14:10:00+02:00", "high": "2025-06-03T14:30:00+02:00",
                              "text": "Between 14:10 and 14:30 CEST", "early": False}
    assert payload["stops_before"] == 3 and payload["stops_before_text"] == "3 stops before yours"
    assert payload["driver"] == {"lat": 52.52, "lng": 13.405, "first_name": "Max"}
    assert payload["destination"] == {"lat": 52.53, "lng": 13.41}
    assert payload["timeline"] == [
        {"kind": "created", "label": "Order received", "at_text": "Mon 2 Jun, 14:10"},
        {"kind": "out_for_delivery", "label": "Out for delivery", "at_text": "Tue 3 Jun, 11:10"},
    ]
    assert re.fullmatch(r"[0-9a-f]{16}", payload["version"])
    json.dumps(payload)
    assert status_payload(make_page())["version"] == payload["version"]
    moved = status_payload(make_page(driver_position=(52.521, 13.405)))
    assert moved["version"] != payload["version"]
    assert status_payload(make_page(locale="de"))["version"] != payload["version"]


def test_etag_helpers() -> None:
    payload = status_payload(make_page())
    etag = status_etag(payload)
    assert etag == f'"{payload["version"]}"'
    assert etag_matches(etag, etag) and etag_matches(f'"x", W/{etag}', etag) and etag_matches("*", etag)
    assert not etag_matches(None, etag) and not etag_matches('"other"', etag)


def test_page_embeds_the_same_texts_as_the_payload() -> None:
    page = make_page()
    payload = status_payload(page)
    html = render(page)
    main = parse(html).find("main")[0]
    assert main["data-version"] == payload["version"] and main["data-status-url"] == f"{ACTION}/status"
    for text in (payload["status_label"], payload["eta"]["text"], payload["stops_before_text"]):
        assert text in html


# --- not found and messages -------------------------------------------------------------------------


def test_not_found_is_one_page_per_locale() -> None:
    first = render_not_found("en")
    assert first == render_not_found("en") == render_not_found(None) == render_not_found("xx")
    assert "Tracking link not found" in first and "<script" not in first
    german = render_not_found("de")
    assert "Sendungslink nicht gefunden" in german and parse(german).find("html", lang="de")


def test_messages() -> None:
    html = render_message("instructions_saved", "en", back_href=ACTION)
    assert "Instructions saved" in html and f'href="{ACTION}"' in html
    with pytest.raises(ValueError):
        render_message("<script>", "en")


# --- theme ------------------------------------------------------------------------------------------

COLOURS = ["#ffffff", "#ffee00", "#777777", "#000000", "#ff0000", "#00ff00", "#0b5394", "#b45309", "#f0f0f0"]


@pytest.mark.parametrize("colour", COLOURS)
def test_theme_colours_meet_wcag_aa(colour: str) -> None:
    theme = theme_colours(Branding("x", colour, colour))
    for base in ("brand", "accent"):
        assert contrast_ratio(theme[f"--{base}"], theme[f"--on-{base}"]) >= 4.5
        assert contrast_ratio(theme[f"--{base}-ink"], PAGE_BACKGROUND) >= 4.5
        assert contrast_ratio(theme[f"--{base}-ink"], "#ffffff") >= 4.5


def test_default_theme_meets_wcag_aa() -> None:
    css = (WEB_DIR / "static" / "track.css").read_text()
    defaults = dict(re.findall(r"(--[a-z-]+):\s*(#[0-9a-f]{6})", css.split("}", 1)[0]))
    assert defaults["--bg"] == PAGE_BACKGROUND
    for text in ("--text", "--muted", "--brand-ink", "--accent-ink"):
        for background in ("--bg", "--card"):
            assert contrast_ratio(defaults[text], defaults[background]) >= 4.5, (text, background)
    assert contrast_ratio(defaults["--brand"], defaults["--on-brand"]) >= 4.5
    assert theme_colours(Branding("x")) == {k: v for k, v in defaults.items() if k in theme_colours(Branding("x"))}


def test_theme_href_is_versioned() -> None:
    links = [a["href"] for a in parse(render()).find("link", rel="stylesheet")]
    assert any(str(h).startswith(f"{ACTION}/theme.css?v=") for h in links)
    other = [a["href"] for a in parse(render(branding=replace(BRANDING, primary_colour="#000000"))).find("link")]
    assert set(links) != set(other)


# --- static assets and size --------------------------------------------------------------------------


def test_static_assets_are_whitelisted() -> None:
    for name, kind in (("track.js", "javascript"), ("track.css", "css"), ("leaflet.js", "javascript"),
                       ("leaflet.css", "css")):
        found = static_asset(name)
        assert found is not None and kind in found[1] and found[0]
        assert re.fullmatch(rf"/api/static/{re.escape(name)}\?v=[0-9a-f]{{12}}", asset_url(name, "/api/static/"))
    for bad in ("", "../page.py", "..%2Fpage.py", "vendor/leaflet/leaflet.js", "track.js/../../page.py",
                "/etc/passwd", "LICENSE", "leaflet.js.map", "Track.js"):
        assert static_asset(bad) is None, bad


def test_leaflet_is_vendored_with_its_licence() -> None:
    vendor = WEB_DIR / "static" / "vendor" / "leaflet"
    assert 'version="1.9.4"' in (vendor / "leaflet.js").read_text().replace("t.version=", 'version=')
    assert "BSD 2-Clause" in (vendor / "LICENSE").read_text()
    assert "1.9.4" in (vendor / "README.md").read_text()


def test_first_load_is_under_150_kb_compressed() -> None:
    html = render(tile_attribution="© OpenStreetMap contributors")
    theme = render_theme_css(BRANDING)
    sizes = first_load_sizes(html, theme)
    total = first_load_bytes(html, theme)
    assert total == sum(gz for _, gz in sizes.values())
    print(f"\nfirst load: {total / 1024:.1f} KiB gzip ("
          + ", ".join(f"{name} {raw / 1024:.1f}/{gz / 1024:.1f}" for name, (raw, gz) in sizes.items())
          + " KiB raw/gzip)")
    assert total < 150 * 1024


def test_importing_the_package_stays_light() -> None:
    code = ("import sys, chalicelib.web; "
            "print(sorted(m for m in ('boto3', 'botocore', 'pynamodb', 'pydantic', 'chalice', 'app', "
            "'chalicelib.services', 'chalicelib.models') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                         cwd=WEB_DIR.parents[1]).stdout.strip()
    assert out == "[]"


# --- forms --------------------------------------------------------------------------------------------

SECRET = "test-secret-test-secret-test-secret-0123"
NOW = 1_750_000_000


def fields(**values: str) -> dict[str, str]:
    return {"csrf": csrf_token(SECRET, TOKEN, NOW), **values}


def test_csrf_tokens() -> None:
    token = csrf_token(SECRET, TOKEN, NOW)
    assert check_csrf(SECRET, TOKEN, token, NOW + 60)
    assert not check_csrf(SECRET, "B" * 43, token, NOW)  # another shipment's page
    assert not check_csrf("another-secret", TOKEN, token, NOW)
    assert not check_csrf(SECRET, TOKEN, token, NOW + 2 * 86400)  # expired
    assert not check_csrf(SECRET, TOKEN, token[:-1] + ("A" if token[-1] != "A" else "B"), NOW)
    for bad in (None, "", "x", "abc.def", "1." + "a" * 100):
        assert not check_csrf(SECRET, TOKEN, bad, NOW)


def test_parse_forms() -> None:
    assert parse_form(b"csrf=1.a&gate_code=12%2334&leave_at_door=1&note=Hi%0Athere") == {
        "csrf": "1.a", "gate_code": "12#34", "leave_at_door": "1", "note": "Hi\nthere"}
    assert parse_form(b"a=" + b"x" * 20000) is None
    assert parse_form(b"note=%ff") is None
    got = parse_instructions(fields(gate_code=" 12#34 ", leave_at_door="1", note="Ring\x00 twice\r\nthanks"),
                             secret=SECRET, page_token=TOKEN, now_s=NOW)
    assert got == InstructionsForm("12#34", True, "Ring twice\nthanks")
    assert parse_instructions(fields(), secret=SECRET, page_token=TOKEN, now_s=NOW) == InstructionsForm(None, False,
                                                                                                         None)
    assert parse_instructions(fields(note="x" * 501), secret=SECRET, page_token=TOKEN,
                              now_s=NOW) == FormError("invalid_input", "note")
    assert parse_instructions({"gate_code": "1"}, secret=SECRET, page_token=TOKEN,
                              now_s=NOW) == FormError("form_expired", "csrf")
    assert parse_rating(fields(rating="5", comment="Great"), secret=SECRET, page_token=TOKEN,
                        now_s=NOW) == RatingForm(5, "Great")
    for bad in ("0", "6", "", "4.5", "five"):
        assert isinstance(parse_rating(fields(rating=bad), secret=SECRET, page_token=TOKEN, now_s=NOW), FormError)
    offered = {"tue-am", "wed-pm"}
    assert parse_reschedule(fields(option="wed-pm"), offered, secret=SECRET, page_token=TOKEN,
                            now_s=NOW) == RescheduleForm("wed-pm")
    assert parse_reschedule(fields(option="fri"), offered, secret=SECRET, page_token=TOKEN,
                            now_s=NOW) == FormError("not_available", "option")
    assert all(error.kind in MESSAGE_KINDS for error in (FormError("form_expired"), FormError("invalid_input"),
                                                         FormError("not_available")))


def test_cross_site_detection() -> None:
    assert is_cross_site({"sec-fetch-site": "cross-site"})
    assert is_cross_site({"sec-fetch-site": "same-site"})
    assert not is_cross_site({"sec-fetch-site": "same-origin"})
    assert is_cross_site({"origin": "https://evil.example"}, "https://track.example.com")
    assert not is_cross_site({"origin": "https://track.example.com"}, "https://track.example.com/")
    assert not is_cross_site({})


def test_an_estimate_past_the_local_day_says_later_today_without_times() -> None:
    payload = status_payload(make_page(eta_low=None, eta_high=None, eta_later_today=True))
    assert payload["eta"] == {"low": None, "high": None, "text": "Delayed: later today"}
    assert "Delayed: later today" in render(make_page(eta_low=None, eta_high=None, eta_later_today=True))


def test_the_promised_window_names_its_zone() -> None:
    assert "Tue 3 Jun, 12:10\u201316:10 CEST" in render(make_page())


def test_after_the_driver_departs_the_page_no_longer_says_at_your_address() -> None:
    there = status_payload(make_page(status="arrived"))
    assert there["status_detail"] == "Your driver is at your address now."
    left = status_payload(make_page(status="arrived", driver_departed=True))
    assert left["status_label"] == "Your driver has left your address"
    assert "at your address now" not in left["status_detail"]
    html = render(make_page(status="arrived", driver_departed=True))
    detail = html.split('data-field="status_detail"', 1)[1].split("</p>", 1)[0].rsplit(">", 1)[1]
    assert "The result of the delivery attempt will show here shortly." in detail
    assert "Your driver is at your address now." not in detail
