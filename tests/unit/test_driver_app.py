"""The driver web app's pure parts: link signing and checking, the day and route to show, the next stop, and the
page shell (escaping, CSP, messages, size). No network, no AWS."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.core.security import tracking_token
from chalicelib.driver_app.page import (
    DriverShell,
    driver_csp,
    driver_first_load_bytes,
    render_driver_not_found,
    render_driver_page,
    script_messages,
)
from chalicelib.driver_app.rules import (
    DEFAULT_EXPIRES_HOURS,
    MAX_EXPIRES_HOURS,
    RouteCandidate,
    link_version,
    local_day,
    looks_like_link,
    next_stop,
    pick_route,
    sign_link,
    verify_link,
)

SECRET = "k" * 40
NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(hours=16)


def test_a_link_round_trips_until_it_expires() -> None:
    token = sign_link(SECRET, "mer_1", "drv_2", 3, LATER)
    assert looks_like_link(token) and not looks_like_link("dtk_abc")
    claims = verify_link(SECRET, token, NOW)
    assert claims is not None
    assert (claims.merchant_id, claims.driver_id, claims.version, claims.expires_at) == ("mer_1", "drv_2", 3, LATER)
    assert verify_link(SECRET, token, LATER - timedelta(seconds=1)) is not None
    assert verify_link(SECRET, token, LATER) is None  # expiry is exclusive
    assert re.fullmatch(r"dl1\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{43}", token)  # URL-safe as a path segment


def test_real_ids_make_a_link_short_enough_for_a_text_message() -> None:
    token = sign_link(SECRET, "mer_01jd8k2x9q4m5n6p7r8s9t0v1w", "drv_01jd8k2x9q4m5n6p7r8s9t0v1w", 12, LATER)
    assert len(token) < 160


@pytest.mark.parametrize("mutate", [
    lambda t: t.replace("dl1.", "dl2.", 1),
    lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),  # signature
    lambda t: t.split(".")[0] + "." + t.split(".")[1][::-1] + "." + t.split(".")[2],  # payload
    lambda t: t + ".x",
    lambda t: t.replace(".", "", 1),
    lambda t: t + "=",
    lambda t: "dl1..",
    lambda t: "dl1." + "A" * 500 + ".B",
])
def test_tampered_links_are_refused(mutate: object) -> None:
    token = sign_link(SECRET, "mer_1", "drv_2", 0, LATER)
    assert verify_link(SECRET, mutate(token), NOW) is None  # type: ignore[operator]


def test_a_link_is_bound_to_the_secret_and_to_its_purpose() -> None:
    token = sign_link(SECRET, "mer_1", "drv_2", 0, LATER)
    assert verify_link("other" * 10, token, NOW) is None
    # a tracking token signed under the same secret is not a link, and a link is not a tracking token
    assert verify_link(SECRET, tracking_token(SECRET, "shp_1", 1), NOW) is None


def test_signing_refuses_ids_that_would_break_the_payload() -> None:
    for bad in ("mer:1", "", "x" * 65, "mer 1"):
        with pytest.raises(ValueError):
            sign_link(SECRET, bad, "drv_2", 0, LATER)
    with pytest.raises(ValueError):
        sign_link(SECRET, "mer_1", "drv_2", -1, LATER)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_arbitrary_text_never_verifies_or_raises(text: str) -> None:
    assert verify_link(SECRET, text, NOW) is None
    assert verify_link(SECRET, "dl1." + text, NOW) is None


def test_versions_and_limits() -> None:
    assert link_version(None) == 0 and link_version(2) == 2 and link_version(2.0) == 2
    assert 1 <= DEFAULT_EXPIRES_HOURS <= MAX_EXPIRES_HOURS == 72


def test_the_day_is_the_merchants() -> None:
    late_utc = datetime(2026, 11, 21, 23, 30, tzinfo=UTC)
    assert local_day(late_utc, ZoneInfo("UTC")).isoformat() == "2026-11-21"
    assert local_day(late_utc, ZoneInfo("Europe/Berlin")).isoformat() == "2026-11-22"
    assert local_day(late_utc, ZoneInfo("America/Los_Angeles")).isoformat() == "2026-11-21"


def test_the_route_shown_is_active_then_planned_then_the_newest() -> None:
    t0 = NOW
    planned = RouteCandidate("r-planned", "planned", t0)
    active = RouteCandidate("r-active", "active", t0 - timedelta(hours=1))
    done_old = RouteCandidate("r-done-old", "completed", t0 - timedelta(hours=3))
    done_new = RouteCandidate("r-done-new", "completed", t0 - timedelta(hours=2))
    assert pick_route([planned, active, done_old]) == "r-active"
    assert pick_route([done_old, planned]) == "r-planned"
    assert pick_route([done_old, done_new]) == "r-done-new"
    assert pick_route([]) is None


def test_the_next_stop_is_the_first_one_still_to_serve() -> None:
    order = ["a", "b", "c", "d"]
    assert next_stop(order, {"a": "delivered", "b": "failed", "c": "arrived", "d": "out_for_delivery"}) == "c"
    assert next_stop(order, {"a": "cancelled", "b": "approaching"}) == "b"
    assert next_stop(order, {"a": "assigned", "b": "assigned"}) is None  # not started yet
    assert next_stop(order, {s: "delivered" for s in order}) is None


# --- the page shell -------------------------------------------------------------------------------------


def shell(**changes: object) -> DriverShell:
    values: dict[str, object] = {"token": "dl1.abc.def", "driver_id": "drv_1", "driver_first_name": "Maxine",
                                 "merchant_name": "Acme Parcels", "locale": "en", "api_base": "/api"}
    values.update(changes)
    return DriverShell(**values)  # type: ignore[arg-type]


def test_the_shell_escapes_everything_and_has_no_inline_code() -> None:
    html = render_driver_page(shell(merchant_name='<img src=x onerror="alert(1)">', driver_first_name="<b>Max"))
    assert "<img src=x" not in html and "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in html
    assert "<b>Max" not in html
    assert all(" src=" in tag for tag in re.findall(r"<script[^>]*>", html))
    assert not re.search(r"<[^>]*\s(style|on[a-z]+)=", html)


def test_every_control_has_a_label() -> None:
    html = render_driver_page(shell())
    for control_id in re.findall(r'<(?:input|select|textarea)[^>]*\sid="([^"]+)"', html):
        assert f'for="{control_id}"' in html, control_id
    assert 'role="img" aria-label="Signature pad"' in html
    assert html.count('type="button"') + html.count('type="submit"') == html.count("<button")


def test_the_shell_hands_the_script_its_settings_and_messages() -> None:
    html = render_driver_page(shell(locale="de"))
    main = re.search(r"<main ([^>]*)>", html)
    assert main
    attrs = dict(re.findall(r'([a-z-]+)="([^"]*)"', main.group(1)))
    assert attrs["data-token"] == "dl1.abc.def" and attrs["data-api"] == "/api" and attrs["data-locale"] == "de"
    from html import unescape

    messages = json.loads(unescape(attrs["data-messages"]))
    assert messages == script_messages("de") and messages["driver.action.delivered"] == "Zugestellt"
    assert all(key.startswith("driver.") for key in messages)
    assert '<html lang="de"' in html and "Zustellung bestätigen" in html


def test_the_404_page_is_one_page_without_a_script() -> None:
    assert render_driver_not_found("en") == render_driver_not_found("en")
    assert "<script" not in render_driver_not_found("en") and "Driver link not valid" in render_driver_not_found()


def test_the_csp_lets_the_page_upload_to_the_bucket_only() -> None:
    csp = driver_csp("https://doorstep-proof.s3.amazonaws.com/")
    assert "connect-src 'self' https://doorstep-proof.s3.amazonaws.com;" in csp
    assert "script-src 'self';" in csp and "style-src 'self';" in csp and "unsafe" not in csp
    assert "connect-src 'self';" in driver_csp(None) and "connect-src 'self';" in driver_csp("javascript:alert(1)")
    assert "connect-src 'self' http://127.0.0.1:5001;" in driver_csp("http://127.0.0.1:5001/doorstep-local-proof")


def test_the_first_load_is_small() -> None:
    assert driver_first_load_bytes(render_driver_page(shell())) < 30 * 1024
