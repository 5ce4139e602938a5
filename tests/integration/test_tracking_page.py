"""The recipient's tracking link end to end in process: page, status JSON, assets, forms, privacy, expiry."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import pytest

from tests.integration.conftest import Merchant
from tests.integration.helpers import iso, make_driver, make_shipment, make_started_route, now_ms, post_pings

FORM = "application/x-www-form-urlencoded"
NOT_FOUND_TITLE = "Tracking link not found"


# --- helpers ---------------------------------------------------------------------------------------


def token_of(shipment: dict[str, Any]) -> str:
    return str(shipment["tracking_url"].rsplit("/", 1)[1])


def text(response: Any) -> str:
    body = response.body
    return body.decode() if isinstance(body, bytes) else str(body)


def page(client: Any, token: str, **headers: str) -> Any:
    return client.http.get(f"/track/{token}", headers=headers)


def csrf(client: Any, token: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', text(page(client, token)))
    assert found, "the page has no form"
    return found.group(1)


def post_form(client: Any, token: str, action: str, fields: dict[str, str], **headers: str) -> Any:
    return client.http.post(f"/track/{token}/{action}", headers={"Content-Type": FORM, **headers},
                            body=urlencode(fields))


def submit(client: Any, token: str, action: str, **fields: str) -> Any:
    return post_form(client, token, action, {"csrf": csrf(client, token), **fields})


def driver_update(client: Any, driver: dict[str, Any], shipment_id: str, status: str, occurred_ms: int | None = None,
                  **extra: Any) -> Any:
    body = {"status": status, "occurred_at": iso(occurred_ms or now_ms() - 1000), **extra}
    return client.http.post(f"/v1/driver/shipments/{shipment_id}/status",
                            headers={"Authorization": f"Bearer {driver['token']}", "Content-Type": "application/json"},
                            body=json.dumps(body))


def put_settings(merchant: Merchant, **changes: Any) -> dict[str, Any]:
    current = merchant.call("GET", "/v1/settings").json_body
    r = merchant.call("PUT", "/v1/settings", {**current, **changes})
    assert r.status_code == 200, r.body
    return r.json_body  # type: ignore[no-any-return]


def delivered(merchant: Merchant, occurred_ms: int | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    driver, ships, _ = make_started_route(merchant, shipments=1)
    r = driver_update(merchant.client, driver, ships[0]["id"], "delivered", occurred_ms)
    assert r.status_code == 200, r.body
    return driver, ships[0]


def assert_message(response: Any, status: int, title: str) -> None:
    assert response.status_code == status, text(response)
    assert response.headers["Content-Type"].startswith("text/html")
    assert f"<h1>{title}</h1>" in text(response)
    assert "Content-Security-Policy" in response.headers


# --- the page and its assets -------------------------------------------------------------------------


def test_page_renders_server_side_with_strict_headers(merchant: Merchant) -> None:
    shipment = make_shipment(merchant)
    r = page(merchant.client, token_of(shipment))
    assert r.status_code == 200
    h = r.headers
    assert h["Content-Type"] == "text/html; charset=utf-8"
    csp = h["Content-Security-Policy"]
    for directive in ("default-src 'none'", "script-src 'self'", "style-src 'self'", "connect-src 'self'",
                      "form-action 'self'", "frame-ancestors 'none'", "base-uri 'none'"):
        assert directive in csp
    assert "unsafe-inline" not in csp
    assert h["Referrer-Policy"] == "no-referrer"
    assert h["X-Robots-Tag"].startswith("noindex")
    assert h["Cache-Control"] == "no-store"
    assert h["X-Content-Type-Options"] == "nosniff"
    html = text(r)
    assert "Hi Ada," in html and "Delivering to Seattle" in html and "Order received" in html
    assert "Your delivery from Test Merchant" in html
    for private in ("Lovelace", "+1415", "ada@example.com", "Main St", "Gate code 1234", "98101"):
        assert private not in html
    token = token_of(shipment)
    assert f'data-status-url="/track/{token}/status"' in html
    assert f'action="/track/{token}/instructions"' in html
    assert re.search(r'<script src="/static/track\.js\?v=[0-9a-f]{12}" defer></script>', html)
    assert "<script>" not in html and "style=" not in html


def test_static_assets_are_whitelisted_and_cached_for_a_year(client: Any) -> None:
    js = client.http.get("/static/track.js")
    assert js.status_code == 200
    assert js.headers["Content-Type"].startswith("text/javascript")
    assert js.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert "use strict" in text(js)
    leaflet = client.http.get("/static/leaflet.js")
    assert leaflet.status_code == 200 and len(text(leaflet)) > 100_000
    assert client.http.get("/static/leaflet.css").headers["Content-Type"].startswith("text/css")
    for name in ("app.py", "..%2Fapp.py", "vendor", "track.js.map", "LICENSE"):
        missing = client.http.get(f"/static/{name}")
        assert missing.status_code == 404
        assert NOT_FOUND_TITLE in text(missing)


def test_theme_css_carries_the_merchants_validated_colours(merchant: Merchant) -> None:
    shipment = make_shipment(merchant)
    put_settings(merchant, branding={"name": "Acme Parcels", "primary_colour": "#0B5394", "accent_colour": "#b45309",
                                     "logo_url": "https://cdn.acme.example/logo.png",
                                     "support_email": "help@acme.example", "support_phone": "+49 30 1234 5678"})
    token = token_of(shipment)
    css = merchant.client.http.get(f"/track/{token}/theme.css")
    assert css.status_code == 200 and css.headers["Content-Type"].startswith("text/css")
    assert "--brand:#0b5394" in text(css) and "--accent:#b45309" in text(css)
    r = page(merchant.client, token)
    html = text(r)
    assert "Acme Parcels" in html and 'src="https://cdn.acme.example/logo.png"' in html
    assert 'href="mailto:help@acme.example"' in html and 'href="tel:+493012345678"' in html
    assert "img-src 'self' data: https://cdn.acme.example" in r.headers["Content-Security-Policy"]
    assert f'href="/track/{token}/theme.css?v=' in html


def test_merchant_settings_validate_branding_expiry_visibility_and_reschedule_offers(merchant: Merchant) -> None:
    defaults = merchant.call("GET", "/v1/settings").json_body
    assert defaults["link_expiry_days"] == 7 and defaults["driver_visible_stops"] == 1
    assert defaults["time_zone"] == "UTC" and defaults["locale"] == "en"
    assert defaults["reschedule_options"]["days_ahead"] == 5
    assert defaults["branding"]["primary_colour"] == "#1d4ed8"
    bad = [
        ({"branding": {"primary_colour": "blue"}}, "branding.primary_colour"),
        ({"branding": {"logo_url": "http://cdn.example/logo.png"}}, "branding.logo_url"),
        ({"branding": {"logo_url": "javascript:alert(1)"}}, "branding.logo_url"),
        ({"branding": {"support_email": "not-an-email"}}, "branding.support_email"),
        ({"link_expiry_days": 0}, "link_expiry_days"),
        ({"driver_visible_stops": -1}, "driver_visible_stops"),
        ({"time_zone": "Mars/Olympus_Mons"}, "time_zone"),
        ({"locale": "english"}, "locale"),
        ({"reschedule_options": {"windows": [{"id": "am", "start_time": "12:00", "end_time": "09:00"}]}},
         "reschedule_options.windows.0.end_time"),
        ({"reschedule_options": {"windows": [{"id": "am", "start_time": "9:00", "end_time": "12:00"}]}},
         "reschedule_options.windows.0.start_time"),
        ({"reschedule_options": {"weekdays": [8]}}, "reschedule_options.weekdays.0"),
    ]
    for body, field in bad:
        r = merchant.call("PUT", "/v1/settings", body)
        assert r.status_code == 422, (body, r.body)
        assert any(d["field"] == field for d in r.json_body["error"]["details"]), (body, r.json_body)


def test_recipient_time_zone_and_locale_are_validated_on_create(merchant: Merchant) -> None:
    from tests.integration.helpers import shipment_body

    body = shipment_body(1)
    body["recipient"]["time_zone"] = "Europe/Atlantis"
    r = merchant.call("POST", "/v1/shipments", body)
    assert r.status_code == 422
    assert r.json_body["error"]["details"][0]["field"] == "recipient.time_zone"
    body["recipient"]["time_zone"] = "Europe/Berlin"
    body["recipient"]["locale"] = "de"
    created = merchant.call("POST", "/v1/shipments", body).json_body
    assert created["recipient"]["time_zone"] == "Europe/Berlin"
    html = text(page(merchant.client, token_of(created)))
    assert '<html lang="de"' in html and "Hallo Ada," in html
    assert "17:00\u201319:00 Uhr" in html  # the window 16:00-18:00 UTC, in Berlin (en dash)


def test_language_follows_the_recipient_then_the_browser_then_the_merchant(merchant: Merchant) -> None:
    shipment = make_shipment(merchant)
    token = token_of(shipment)
    assert '<html lang="en"' in text(page(merchant.client, token))
    assert '<html lang="de"' in text(page(merchant.client, token, **{"Accept-Language": "de-DE,de;q=0.9"}))
    put_settings(merchant, locale="de")
    assert '<html lang="de"' in text(page(merchant.client, token))
    assert '<html lang="en"' in text(page(merchant.client, token, **{"Accept-Language": "en-GB"}))


# --- the one 404 -------------------------------------------------------------------------------------


def test_unknown_malformed_expired_and_revoked_links_get_the_same_404_after_the_same_reads(
        merchant: Merchant, monkeypatch: pytest.MonkeyPatch) -> None:
    put_settings(merchant, link_expiry_days=1)
    _, expired = delivered(merchant, now_ms() - 2 * 86_400_000)
    revoked = make_shipment(merchant, 2)
    r = merchant.call("POST", f"/v1/shipments/{revoked['id']}/tracking-link/revoke")
    assert r.status_code == 200, r.body
    cases = {"unknown": "A" * 43, "malformed": "not-a-token", "long": "x" * 500, "expired": token_of(expired),
             "revoked": token_of(revoked)}

    from chalicelib.storage import repository

    reads: list[str] = []
    real_get = repository._get

    def counting_get(model: Any, pk: str, sk: str, **options: Any) -> Any:
        reads.append(model.__name__)
        return real_get(model, pk, sk, **options)

    monkeypatch.setattr(repository, "_get", counting_get)
    seen: dict[str, tuple[int, str, list[str]]] = {}
    for case, token in cases.items():
        reads.clear()
        r = page(merchant.client, token)
        headers = {k: v for k, v in r.headers.items() if k.lower() != "content-length"}
        seen[case] = (r.status_code, text(r) + json.dumps(sorted(headers.items())), list(reads))
    statuses = {s for s, _, _ in seen.values()}
    bodies = {b for _, b, _ in seen.values()}
    assert statuses == {404}
    assert len(bodies) == 1, "every dead link answers the same bytes"
    assert NOT_FOUND_TITLE in next(iter(bodies))
    work = {case: tuple(r) for case, (_, _, r) in seen.items()}
    assert len(set(work.values())) == 1, work
    assert next(iter(work.values())) == ("TrackingTokenItem", "ShipmentItem", "MerchantItem")
    # the JSON view and the polled status answer the one JSON 404 for all of them
    for token in cases.values():
        for path in (f"/v1/track/{token}", f"/track/{token}/status"):
            r = merchant.client.http.get(path)
            assert r.status_code == 404 and r.json_body["error"]["code"] == "not_found", path
        r = post_form(merchant.client, token, "rating", {"rating": "5"})
        assert r.status_code == 404 and NOT_FOUND_TITLE in text(r)


def test_a_link_lives_until_expiry_days_after_the_final_status(merchant: Merchant) -> None:
    put_settings(merchant, link_expiry_days=3)
    delivered_ms = now_ms() - 2 * 86_400_000
    _, recent = delivered(merchant, delivered_ms)
    assert page(merchant.client, token_of(recent)).status_code == 200
    shown = merchant.call("GET", f"/v1/shipments/{recent['id']}").json_body
    assert shown["final_at"] is not None
    # final_at is when it was delivered (the driver's time), not when it was recorded
    assert abs(datetime.fromisoformat(shown["final_at"]).timestamp() * 1000 - delivered_ms) < 1000
    put_settings(merchant, link_expiry_days=1)
    assert page(merchant.client, token_of(recent)).status_code == 404
    # a cancelled shipment starts the clock too; an open one never expires
    open_one = make_shipment(merchant, 3)
    cancelled = merchant.call("POST", f"/v1/shipments/{open_one['id']}/cancel").json_body
    assert cancelled["final_at"] is not None
    assert page(merchant.client, token_of(cancelled)).status_code == 200


def test_revoking_issues_a_new_link_and_kills_the_old_one(merchant: Merchant, other_merchant: Merchant) -> None:
    shipment = make_shipment(merchant)
    old = token_of(shipment)
    assert other_merchant.call("POST", f"/v1/shipments/{shipment['id']}/tracking-link/revoke").status_code == 404
    r = merchant.call("POST", f"/v1/shipments/{shipment['id']}/tracking-link/revoke")
    assert r.status_code == 200
    assert r.json_body["shipment_id"] == shipment["id"]
    new = r.json_body["tracking_url"].rsplit("/", 1)[1]
    assert new != old and len(new) >= 43  # 256-bit token, base64url
    assert page(merchant.client, old).status_code == 404
    assert page(merchant.client, new).status_code == 200
    assert merchant.call("GET", f"/v1/shipments/{shipment['id']}").json_body["tracking_url"].endswith(new)
    kinds = [e["type"] for e in merchant.call("GET", f"/v1/shipments/{shipment['id']}/timeline").json_body["items"]]
    assert "tracking_link_revoked" in kinds
    assert "tracking_link_revoked" not in text(page(merchant.client, new))  # merchant-only event
    assert merchant.call("POST", "/v1/shipments/shp_nope/tracking-link/revoke").status_code == 404


# --- polled status --------------------------------------------------------------------------------------


def test_status_json_answers_304_while_nothing_changed(merchant: Merchant) -> None:
    driver, ships, _ = make_started_route(merchant, shipments=1)
    token = token_of(ships[0])
    first = merchant.client.http.get(f"/track/{token}/status")
    assert first.status_code == 200
    etag = first.headers["ETag"]
    assert etag == f'"{first.json_body["version"]}"'
    assert first.headers["Cache-Control"] == "no-cache, private"
    assert first.json_body["status"] == "out_for_delivery" and first.json_body["stops_before"] == 0
    same = merchant.client.http.get(f"/track/{token}/status", headers={"If-None-Match": etag})
    assert same.status_code == 304 and not same.body and same.headers["ETag"] == etag
    post_pings(merchant.client, driver["token"], [{"lat": 47.61, "lng": -122.31, "fix_time": iso(now_ms() - 500)}])
    moved = merchant.client.http.get(f"/track/{token}/status", headers={"If-None-Match": etag})
    assert moved.status_code == 200 and moved.headers["ETag"] != etag
    assert moved.json_body["driver"] == {"lat": 47.61, "lng": -122.31, "first_name": "Dana"}
    # the page embeds the same version, so the script's first poll is a 304
    assert f'data-version="{moved.json_body["version"]}"' in text(page(merchant.client, token))


# --- privacy: who sees the driver -----------------------------------------------------------------------


def test_stops_before_and_driver_visibility_follow_the_route(merchant: Merchant) -> None:
    driver, ships, _ = make_started_route(merchant, shipments=3)
    post_pings(merchant.client, driver["token"], [{"lat": 47.6, "lng": -122.29, "fix_time": iso(now_ms() - 500)}])

    def status(i: int) -> dict[str, Any]:
        return merchant.client.http.get(f"/track/{token_of(ships[i])}/status").json_body  # type: ignore[no-any-return]

    assert [status(i)["stops_before"] for i in range(3)] == [0, 1, 2]
    assert status(0)["driver"] is not None and status(1)["driver"] is None and status(2)["driver"] is None
    assert status(0)["stops_before_text"] == "You are the next stop!"
    assert status(2)["stops_before_text"] == "2 stops before yours"
    json_view = merchant.client.http.get(f"/v1/track/{token_of(ships[2])}").json_body
    assert json_view["stops_before"] == 2 and json_view["driver"] is None
    # the driver's first name only, never their position outside the rule, nor a phone number
    html = text(page(merchant.client, token_of(ships[2])))
    assert "Your driver today is Dana." in html and "data-driver=" not in html and "+1415555" not in html

    put_settings(merchant, driver_visible_stops=3)
    assert status(2)["driver"] is not None
    assert "data-driver=" in text(page(merchant.client, token_of(ships[2])))
    put_settings(merchant, driver_visible_stops=1)
    assert driver_update(merchant.client, driver, ships[0]["id"], "delivered").status_code == 200
    assert [status(i)["stops_before"] for i in (1, 2)] == [0, 1]
    assert status(1)["driver"] is not None and status(2)["driver"] is None
    assert status(0)["driver"] is None and status(0)["stops_before"] is None  # delivered: nothing live
    put_settings(merchant, driver_visible_stops=0)
    assert status(1)["driver"] is None


# --- recipient actions --------------------------------------------------------------------------------------


def test_instructions_are_saved_for_the_driver_and_never_echoed(merchant: Merchant) -> None:
    shipment = make_shipment(merchant)
    token = token_of(shipment)
    r = submit(merchant.client, token, "instructions", gate_code="4711#", leave_at_door="1",
               note="Blue door, ring twice")
    assert r.status_code == 303, text(r)
    assert r.headers["Location"] == f"http://testserver/track/{token}"
    shown = merchant.call("GET", f"/v1/shipments/{shipment['id']}").json_body
    given = shown["recipient_instructions"]
    assert (given["gate_code"], given["leave_at_door"], given["note"]) == ("4711#", True, "Blue door, ring twice")
    assert shown["instructions"] == "Gate code 1234"  # the merchant's own text is untouched
    events = merchant.call("GET", f"/v1/shipments/{shipment['id']}/timeline").json_body["items"]
    assert any(e["type"] == "instructions_updated" and e["source"] == "recipient" for e in events)
    html = text(page(merchant.client, token))
    assert "Your instructions are saved." in html and "Delivery instructions updated" in html
    for secret in ("4711", "Blue door"):
        assert secret not in html
        assert secret not in text(merchant.client.http.get(f"/track/{token}/status"))
        assert secret not in text(merchant.client.http.get(f"/v1/track/{token}"))
    # sending again replaces them
    assert submit(merchant.client, token, "instructions", note="Side gate").status_code == 303
    again = merchant.call("GET", f"/v1/shipments/{shipment['id']}").json_body["recipient_instructions"]
    assert (again["gate_code"], again["leave_at_door"], again["note"]) == (None, False, "Side gate")


def test_forms_refuse_forgery_cross_site_posts_and_bad_values(merchant: Merchant) -> None:
    shipment = make_shipment(merchant)
    other = make_shipment(merchant, 2)
    token = token_of(shipment)
    good = csrf(merchant.client, token)
    cases = [
        ({"gate_code": "1"}, {}, 403, "Please try again"),  # no CSRF token
        ({"csrf": "1700000000.forged", "gate_code": "1"}, {}, 403, "Please try again"),
        ({"csrf": csrf(merchant.client, token_of(other)), "gate_code": "1"}, {}, 403, "Please try again"),
        ({"csrf": good, "gate_code": "1"}, {"Origin": "https://evil.example"}, 403, "Please try again"),
        ({"csrf": good, "gate_code": "1"}, {"Sec-Fetch-Site": "cross-site"}, 403, "Please try again"),
        ({"csrf": good, "note": "x" * 501}, {}, 422, "Please check your entry"),
        ({"csrf": good, "gate_code": "1" * 33}, {}, 422, "Please check your entry"),
    ]
    for fields, headers, status, title in cases:
        assert_message(post_form(merchant.client, token, "instructions", fields, **headers), status, title)
    # a same-origin post passes both checks
    ok = post_form(merchant.client, token, "instructions", {"csrf": good, "gate_code": "1"},
                   Origin="http://testserver", **{"Sec-Fetch-Site": "same-origin"})
    assert ok.status_code == 303
    wrong_type = merchant.client.http.post(f"/track/{token}/instructions", headers={"Content-Type": "application/json"},
                                           body=json.dumps({"csrf": good}))
    assert_message(wrong_type, 415, "Please check your entry")
    too_big = post_form(merchant.client, token, "instructions", {"csrf": good, "note": "x" * 20_000})
    assert_message(too_big, 413, "Please check your entry")
    # the message page keeps the merchant's look and links back to the page
    refused = post_form(merchant.client, token, "instructions", {"gate_code": "1"})
    assert f'href="/track/{token}"' in text(refused) and "Test Merchant" in text(refused)
    assert merchant.call("GET", f"/v1/shipments/{shipment['id']}").json_body["recipient_instructions"]["gate_code"] \
        == "1"


def test_reschedule_to_an_offered_window_moves_the_date_indexes(merchant: Merchant) -> None:
    put_settings(merchant, time_zone="America/Los_Angeles",
                 reschedule_options={"days_ahead": 3, "weekdays": [1, 2, 3, 4, 5, 6, 7],
                                     "windows": [{"id": "morning", "start_time": "08:00", "end_time": "12:00"}]})
    shipment = make_shipment(merchant)
    token = token_of(shipment)
    html = text(page(merchant.client, token))
    options = re.findall(r'name="option" type="radio" value="([^"]+)"', html)
    today = datetime.now(UTC).astimezone(ZoneInfo("America/Los_Angeles")).date()
    assert options == [f"{today + timedelta(days=d)}_morning" for d in (1, 2, 3)]
    chosen = options[-1]
    r = submit(merchant.client, token, "reschedule", option=chosen)
    assert r.status_code == 303, text(r)
    new_day = chosen.split("_")[0]
    shown = merchant.call("GET", f"/v1/shipments/{shipment['id']}").json_body
    assert shown["status"] == "rescheduled" and shown["delivery_date"] == new_day
    start = datetime.fromisoformat(shown["time_window"]["start"])
    assert start.astimezone(ZoneInfo("America/Los_Angeles")).strftime("%H:%M") == "08:00"
    events = merchant.call("GET", f"/v1/shipments/{shipment['id']}/timeline").json_body["items"]
    assert any(e["type"] == "rescheduled" and e["source"] == "recipient" and e["from_status"] == "created"
               and e["to_status"] == "rescheduled" for e in events)
    # the status and date indexes follow
    by_status = merchant.call("GET", f"/v1/shipments?status=rescheduled&date_from={new_day}&date_to={new_day}")
    assert [s["id"] for s in by_status.json_body["items"]] == [shipment["id"]]
    assert shipment["id"] not in [s["id"] for s in merchant.call("GET", "/v1/shipments?status=created")
                                  .json_body["items"]]
    by_date = merchant.call("GET", f"/v1/shipments?date_from={new_day}&date_to={new_day}").json_body["items"]
    assert [s["id"] for s in by_date] == [shipment["id"]]
    old_day = shipment["delivery_date"]
    assert shipment["id"] not in [s["id"] for s in merchant.call(
        "GET", f"/v1/shipments?date_from={old_day}&date_to={old_day}").json_body["items"]]
    page_after = text(page(merchant.client, token))
    assert "Delivery rescheduled" in page_after
    # the current window is not offered again, the others still are
    assert chosen not in re.findall(r'name="option" type="radio" value="([^"]+)"', page_after)
    # an option that is not offered is refused
    assert_message(submit(merchant.client, token, "reschedule", option="2099-01-01_morning"), 409,
                   "Not possible any more")
    assert_message(submit(merchant.client, token, "reschedule", option=""), 422, "Please check your entry")


def test_an_assigned_shipment_leaves_its_route_and_can_be_planned_again(merchant: Merchant) -> None:
    driver = make_driver(merchant)
    ships = [make_shipment(merchant, n) for n in (1, 2)]
    route = merchant.call("POST", "/v1/routes", {"driver_id": driver["id"], "day": "2026-11-21",
                                                 "planned_start": "2026-11-21T15:00:00Z",
                                                 "shipment_ids": [s["id"] for s in ships]}).json_body
    token = token_of(ships[0])
    option = re.findall(r'name="option" type="radio" value="([^"]+)"', text(page(merchant.client, token)))[0]
    assert submit(merchant.client, token, "reschedule", option=option).status_code == 303
    moved = merchant.call("GET", f"/v1/shipments/{ships[0]['id']}").json_body
    assert moved["status"] == "rescheduled" and moved["route_id"] is None and moved["driver_id"] is None
    started = merchant.call("POST", f"/v1/routes/{route['id']}/start")
    assert started.status_code == 200
    assert merchant.call("GET", f"/v1/shipments/{ships[0]['id']}").json_body["status"] == "rescheduled"
    assert merchant.call("GET", f"/v1/shipments/{ships[1]['id']}").json_body["status"] == "out_for_delivery"
    again = merchant.call("POST", "/v1/routes", {"driver_id": driver["id"], "day": moved["delivery_date"],
                                                 "planned_start": moved["time_window"]["start"],
                                                 "shipment_ids": [ships[0]["id"]]})
    assert again.status_code == 201, again.body
    assert merchant.call("GET", f"/v1/shipments/{ships[0]['id']}").json_body["status"] == "assigned"


def test_no_rescheduling_once_out_for_delivery_or_when_the_merchant_offers_nothing(merchant: Merchant) -> None:
    _, ships, _ = make_started_route(merchant, shipments=1)
    token = token_of(ships[0])
    html = text(page(merchant.client, token))
    assert "/reschedule" not in html
    tomorrow = (datetime.now(UTC).date() + timedelta(days=1)).isoformat()
    assert_message(submit(merchant.client, token, "reschedule", option=f"{tomorrow}_morning"), 409,
                   "Not possible any more")
    assert merchant.call("GET", f"/v1/shipments/{ships[0]['id']}").json_body["status"] == "out_for_delivery"
    put_settings(merchant, reschedule_options={"days_ahead": 0})
    assert "/reschedule" not in text(page(merchant.client, token_of(make_shipment(merchant, 2))))


def test_rating_once_after_delivery(merchant: Merchant) -> None:
    driver, ships, _ = make_started_route(merchant, shipments=1)
    token = token_of(ships[0])
    assert_message(submit(merchant.client, token, "rating", rating="5"), 409, "Not possible any more")
    assert driver_update(merchant.client, driver, ships[0]["id"], "delivered").status_code == 200
    html = text(page(merchant.client, token))
    assert "How was your delivery?" in html and "Proof of delivery" in html and 'id="map"' not in html
    assert "/instructions" not in html  # closed once delivered
    for bad in ({"rating": "6"}, {"rating": "0"}, {"rating": ""}, {"rating": "4", "comment": "x" * 501}):
        assert_message(submit(merchant.client, token, "rating", **bad), 422, "Please check your entry")
    form_token = csrf(merchant.client, token)
    first = post_form(merchant.client, token, "rating", {"csrf": form_token, "rating": "4", "comment": "Friendly"})
    assert first.status_code == 303
    second = post_form(merchant.client, token, "rating", {"csrf": form_token, "rating": "1"})
    assert_message(second, 409, "Already rated")
    rating = merchant.call("GET", f"/v1/shipments/{ships[0]['id']}").json_body["rating"]
    assert (rating["score"], rating["comment"]) == (4, "Friendly")
    assert "You rated this delivery 4 out of 5" in text(page(merchant.client, token))
    events = merchant.call("GET", f"/v1/shipments/{ships[0]['id']}/timeline").json_body["items"]
    assert [e["type"] for e in events].count("rated") == 1


def test_a_failure_inside_a_page_route_is_a_500_page_not_a_stack_trace(merchant: Merchant,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from chalicelib.recipient import service as recipient_service

    shipment = make_shipment(merchant)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(recipient_service, "tracking_page", broken)
    r = page(merchant.client, token_of(shipment))
    assert_message(r, 500, "Something went wrong")
    assert "boom" not in text(r)
    status = merchant.client.http.get(f"/track/{token_of(shipment)}/status")
    assert status.status_code == 500 and status.json_body["error"]["code"] == "server_error"


def test_openapi_lists_the_json_view_and_revocation_but_not_the_html_routes(client: Any) -> None:
    paths = json.loads(client.http.get("/openapi.json").body)["paths"]
    assert "/v1/track/{token}" in paths and "/v1/shipments/{shipment_id}/tracking-link/revoke" in paths
    assert not [p for p in paths if p.startswith(("/track", "/static"))]
