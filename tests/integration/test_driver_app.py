"""The driver web app in process: per-driver links (create, expire, revoke, tamper), the link as the driver's
credential on the driver endpoints, the route of today, the page shell and its CSP, and bad input."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode, urlsplit
from zoneinfo import ZoneInfo

import boto3
import pytest
import requests

from tests.conftest import TEST_ENV
from tests.integration.conftest import Merchant
from tests.integration.helpers import iso, make_driver, make_shipment, now_ms

SECRET = TEST_ENV["DOORSTEP_TOKEN_SECRET"]
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01" + b"\x00" * 500


# --- helpers ---------------------------------------------------------------------------------------


def text(response: Any) -> str:
    body = response.body
    return body.decode() if isinstance(body, bytes) else str(body)


def link_token(url: str) -> str:
    return url.rsplit("/driver/", 1)[1]


def as_driver(merchant: Merchant, token: str, method: str, path: str, body: Any = None, **headers: str) -> Any:
    sent = {"Authorization": f"Bearer {token}", "Content-Type": "application/json", **headers}
    return merchant.client.http.request(method, path, headers=sent,
                                        body=json.dumps(body) if body is not None else b"")


def new_link(merchant: Merchant, driver_id: str, body: Any = None) -> dict[str, Any]:
    r = merchant.call("POST", f"/v1/drivers/{driver_id}/app-link", body)
    assert r.status_code == 201, r.body
    return r.json_body  # type: ignore[no-any-return]


def today_route(merchant: Merchant, shipments: int = 2, tz: str = "UTC", start: bool = True,
                **shipment_extra: Any) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    """A driver with a route of today in the merchant's time zone `tz`."""
    driver = make_driver(merchant)
    ships = [make_shipment(merchant, n, **shipment_extra) for n in range(1, shipments + 1)]
    day = datetime.now(ZoneInfo(tz)).date().isoformat()
    r = merchant.call("POST", "/v1/routes", {"driver_id": driver["id"], "day": day,
                                             "planned_start": iso(now_ms() - 600_000),
                                             "shipment_ids": [s["id"] for s in ships]})
    assert r.status_code == 201, r.body
    route = r.json_body
    if start:
        assert merchant.call("POST", f"/v1/routes/{route['id']}/start").status_code == 200
    return driver, ships, route


def set_time_zone(merchant: Merchant, tz: str) -> None:
    current = merchant.call("GET", "/v1/settings").json_body
    assert merchant.call("PUT", "/v1/settings", {**current, "time_zone": tz}).status_code == 200


def sign(merchant_id: str, driver_id: str, version: int, expires: datetime, secret: str = SECRET) -> str:
    from chalicelib.driver_app.rules import sign_link

    return sign_link(secret, merchant_id, driver_id, version, expires)


DRIVER_CALLS = (
    ("POST", "/v1/driver/pings", lambda sid: {"pings": [{"lat": 47.6, "lng": -122.3, "fix_time": iso(now_ms())}]}),
    ("POST", "/v1/driver/shipments/{sid}/status", lambda sid: {"status": "arrived", "occurred_at": iso(now_ms())}),
    ("POST", "/v1/driver/shipments/{sid}/proof-uploads",
     lambda sid: {"kind": "photo", "content_type": "image/jpeg", "size_bytes": 5000}),
    ("GET", "/v1/driver/route", lambda sid: None),
)


# --- links --------------------------------------------------------------------------------------------


def test_a_link_opens_the_page_and_works_as_the_drivers_credential(merchant: Merchant) -> None:
    driver, ships, _ = today_route(merchant, 2)
    before = datetime.now(UTC)
    r = merchant.client.http.post(f"/v1/drivers/{driver['id']}/app-link",
                                  headers={"Authorization": f"Bearer {merchant.key}"})  # no body: the defaults
    assert r.status_code == 201, r.body
    link = r.json_body
    assert link["driver_id"] == driver["id"] and link["url"].startswith("http://testserver/driver/dl1.")
    expires = datetime.fromisoformat(link["expires_at"])
    assert timedelta(hours=15, minutes=59) < expires - before <= timedelta(hours=16, seconds=1)
    token = link_token(link["url"])
    assert token not in json.dumps(merchant.call("GET", f"/v1/drivers/{driver['id']}").json_body)

    page = merchant.client.http.get(urlsplit(link["url"]).path, headers={"Accept-Language": "en-US"})
    assert page.status_code == 200
    html = text(page)
    assert f'data-token="{token}"' in html and f'data-driver="{driver["id"]}"' in html
    # nothing inline: every script has a src, no style attributes, no event-handler attributes
    assert all(" src=" in tag for tag in re.findall(r"<script[^>]*>", html))
    assert not re.search(r"<[^>]*\s(style|on[a-z]+)=", html)
    assert 'capture="environment"' in html and 'accept="image/*"' in html and "<canvas" in html
    for label in ("Arrived", "Delivered", "Failed", "Confirm delivery", "Report failed delivery"):
        assert label in html
    csp = page.headers["Content-Security-Policy"]
    connect = next(d for d in csp.split("; ") if d.startswith("connect-src"))
    assert connect.startswith("connect-src 'self' ") and ".s3.amazonaws.com" in connect  # the bucket's origin
    assert "script-src 'self';" in csp and "unsafe-inline" not in csp and "img-src 'self' data: blob:" in csp
    assert page.headers["Referrer-Policy"] == "no-referrer" and page.headers["Cache-Control"] == "no-store"

    # the same token is the driver's credential on every driver endpoint
    sid = ships[0]["id"]
    for method, path, body in DRIVER_CALLS:
        r = as_driver(merchant, token, method, path.format(sid=sid), body(sid))
        assert r.status_code in (200, 201), (path, r.body)
    upload = as_driver(merchant, token, "POST", f"/v1/driver/shipments/{sid}/proof-uploads",
                       {"kind": "photo", "content_type": "image/jpeg", "size_bytes": len(JPEG)}).json_body
    assert requests.post(upload["url"], data=upload["fields"], files={"file": ("p.jpg", JPEG, "image/jpeg")},
                         timeout=10).status_code in (200, 204)
    done = as_driver(merchant, token, "POST", f"/v1/driver/shipments/{sid}/status",
                     {"status": "delivered", "occurred_at": iso(now_ms()), "proof_keys": [upload["key"]],
                      "location": ships[0]["location"]}, **{"Idempotency-Key": "d-1"})
    assert done.status_code == 200, done.body
    proof = merchant.call("GET", f"/v1/shipments/{sid}/proof").json_body
    assert proof["distance_m"] == 0 and [i["kind"] for i in proof["images"]] == ["photo"]
    # the driver's own token keeps working next to the link
    assert as_driver(merchant, driver["token"], "GET", "/v1/driver/route").status_code == 200


def test_expired_revoked_tampered_and_unknown_links_get_one_404_page_and_401s(merchant: Merchant) -> None:
    driver, ships, _ = today_route(merchant, 1)
    sid = ships[0]["id"]
    revoked = link_token(new_link(merchant, driver["id"])["url"])
    assert merchant.call("POST", f"/v1/drivers/{driver['id']}/app-link/revoke").status_code == 204
    fresh = link_token(new_link(merchant, driver["id"], {"expires_in_hours": 1})["url"])
    now = datetime.now(UTC)
    payload, signature = fresh.split(".")[1:]
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    dead = {
        "expired": sign(merchant.id, driver["id"], 1, now - timedelta(seconds=1)),
        "revoked": revoked,
        "tampered signature": f"dl1.{payload}.{flipped}",
        "tampered payload": f"dl1.{payload[:-2]}x{payload[-1]}.{signature}",
        "other secret": sign(merchant.id, driver["id"], 1, now + timedelta(hours=1), secret="x" * 40),
        "unknown driver": sign(merchant.id, "drv_nobody", 0, now + timedelta(hours=1)),
        "other merchant's key space": sign("mer_nobody", driver["id"], 1, now + timedelta(hours=1)),
        "garbage": "dl1.%%%.***",
        "too long": "dl1." + "A" * 500 + ".B",
    }
    bodies = set()
    for case, token in dead.items():
        page = merchant.client.http.get(f"/driver/{token}")
        assert page.status_code == 404, case
        assert "Driver link not valid" in text(page) and page.headers["Cache-Control"] == "no-store"
        bodies.add(text(page))
        for method, path, body in DRIVER_CALLS:
            r = as_driver(merchant, token, method, path.format(sid=sid), body(sid))
            assert r.status_code == 401, (case, path, r.body)
            assert r.json_body["error"]["code"] == "unauthorized"
    assert len(bodies) == 1  # the same page whatever is wrong with the link
    assert merchant.client.http.get(f"/driver/{fresh}").status_code == 200
    assert as_driver(merchant, fresh, "GET", "/v1/driver/route").status_code == 200
    # revoking again ends the fresh link too; nothing the shipment has was touched by the refused calls
    assert merchant.call("POST", f"/v1/drivers/{driver['id']}/app-link/revoke").status_code == 204
    assert as_driver(merchant, fresh, "GET", "/v1/driver/route").status_code == 401
    assert merchant.call("GET", f"/v1/shipments/{sid}").json_body["status"] == "out_for_delivery"
    assert merchant.call("GET", f"/v1/drivers/{driver['id']}/position").status_code == 404


def test_a_link_reaches_only_its_own_drivers_shipments(merchant: Merchant, other_merchant: Merchant) -> None:
    driver, _, _ = today_route(merchant, 1)
    _, other_ships, _ = today_route(merchant, 1)
    token = link_token(new_link(merchant, driver["id"])["url"])
    r = as_driver(merchant, token, "POST", f"/v1/driver/shipments/{other_ships[0]['id']}/status",
                  {"status": "arrived", "occurred_at": iso(now_ms())})
    assert r.status_code == 404
    # another merchant cannot make or revoke links for this driver
    assert other_merchant.call("POST", f"/v1/drivers/{driver['id']}/app-link", {}).status_code == 404
    assert other_merchant.call("POST", f"/v1/drivers/{driver['id']}/app-link/revoke").status_code == 404
    assert as_driver(merchant, token, "GET", "/v1/driver/route").status_code == 200


@pytest.mark.parametrize(("body", "field"), [
    ({"expires_in_hours": 0}, "expires_in_hours"),
    ({"expires_in_hours": 73}, "expires_in_hours"),
    ({"expires_in_hours": "5"}, "expires_in_hours"),
    ({"expires_in_hours": 1.5}, "expires_in_hours"),
    ({"expires_in_hours": None}, "expires_in_hours"),
    ({"expires_in_days": 1}, "expires_in_days"),
])
def test_bad_link_requests_are_422_naming_the_field(merchant: Merchant, body: dict[str, Any], field: str) -> None:
    driver = make_driver(merchant)
    r = merchant.call("POST", f"/v1/drivers/{driver['id']}/app-link", body)
    assert r.status_code == 422, r.body
    assert [d["field"] for d in r.json_body["error"]["details"]] == [field]


def test_other_bad_link_requests(merchant: Merchant) -> None:
    driver = make_driver(merchant)
    path = f"/v1/drivers/{driver['id']}/app-link"
    assert merchant.call("POST", path, "{not json").status_code == 400
    assert merchant.call("POST", path, "[]").status_code == 422
    r = merchant.client.http.post(path, headers={"Authorization": f"Bearer {merchant.key}",
                                                 "Content-Type": "text/plain"}, body="hours=5")
    assert r.status_code == 415
    assert merchant.call("POST", "/v1/drivers/drv_nobody/app-link", {}).status_code == 404
    assert merchant.call("POST", "/v1/drivers/drv_nobody/app-link/revoke").status_code == 404
    assert merchant.client.http.post(path, body=b"{}").status_code == 401
    assert new_link(merchant, driver["id"], {"expires_in_hours": 72})["url"]
    # a driver's token is not a merchant key
    assert merchant.client.http.post(path, headers={"Authorization": f"Bearer {driver['token']}"}).status_code == 401


def test_openapi_lists_the_driver_app_routes() -> None:
    from chalicelib.http.routes import SPECS

    paths = {s.path: s for s in SPECS}
    assert {"/v1/drivers/{driver_id}/app-link", "/v1/drivers/{driver_id}/app-link/revoke",
            "/v1/driver/route"} <= set(paths)
    from chalicelib.http.openapi import build_openapi

    doc = build_openapi(SPECS)
    create = doc["paths"]["/v1/drivers/{driver_id}/app-link"]["post"]
    assert create["requestBody"]["required"] is False
    assert doc["paths"]["/v1/driver/route"]["get"]["security"] == [{"driverToken": []}]
    assert "/driver/{token}" not in doc["paths"]


# --- the route of today ------------------------------------------------------------------------------


def submit_instructions(merchant: Merchant, shipment: dict[str, Any], **fields: str) -> None:
    token = shipment["tracking_url"].rsplit("/", 1)[1]
    html = text(merchant.client.http.get(f"/track/{token}"))
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found
    r = merchant.client.http.post(f"/track/{token}/instructions",
                                  headers={"Content-Type": "application/x-www-form-urlencoded"},
                                  body=urlencode({"csrf": found.group(1), **fields}))
    assert r.status_code == 303, r.body


def test_the_route_of_today_lists_stops_in_order_with_what_the_driver_needs(merchant: Merchant) -> None:
    tz = "Pacific/Kiritimati"  # UTC+14: its today is often not the UTC date
    set_time_zone(merchant, tz)
    driver, ships, route = today_route(merchant, 3, tz=tz)
    submit_instructions(merchant, ships[0], gate_code="4711#", leave_at_door="1", note="Blue door")
    from chalicelib.storage import get_repository
    from chalicelib.storage.tables import ROUTE_ETA_SK, RouteEtaItem, encode_etas, route_eta_pk

    eta = now_ms() + 1_800_000  # the pipeline's route ETA item: stop 1 only
    get_repository().put_route_eta(RouteEtaItem(
        route_eta_pk(route["id"]), ROUTE_ETA_SK, merchant_id=merchant.id, route_id=route["id"], at_ms=now_ms(),
        base_ms=0, etas=encode_etas(0, {1: (eta - 300_000, eta, eta + 600_000)}, 3),
        expires_at=datetime.now(ZoneInfo("UTC")) + timedelta(days=1)))

    token = link_token(new_link(merchant, driver["id"])["url"])
    view = as_driver(merchant, token, "GET", "/v1/driver/route")
    assert view.status_code == 200 and view.headers["Cache-Control"] == "no-store"
    data = view.json_body
    assert data["day"] == datetime.now(ZoneInfo(tz)).date().isoformat() and data["time_zone"] == tz
    assert data["route"]["id"] == route["id"] and data["route"]["status"] == "active"
    assert [s["shipment_id"] for s in data["stops"]] == [s["id"] for s in ships]
    assert [s["sequence"] for s in data["stops"]] == [0, 1, 2]
    first, second = data["stops"][0], data["stops"][1]
    assert data["next_shipment_id"] == ships[0]["id"] and first["is_next"] and not second["is_next"]
    assert first["recipient_first_name"] == "Ada" and "Lovelace" not in json.dumps(data)  # first name only
    assert "phone" not in json.dumps(data) and "email" not in json.dumps(data)
    assert first["address"] == ships[0]["address"] and first["location"] == ships[0]["location"]
    assert first["time_window"] == ships[0]["time_window"] and first["status"] == "out_for_delivery"
    assert first["instructions"] == "Gate code 1234"
    assert first["recipient_instructions"] == {"gate_code": "4711#", "leave_at_door": True, "note": "Blue door"}
    assert first["eta"] is None and second["recipient_instructions"] is None
    assert datetime.fromisoformat(second["eta"]["expected"]).timestamp() * 1000 == pytest.approx(eta, abs=1000)

    # the next stop moves on as stops are served, whichever credential reports them
    for sid, body in ((ships[0]["id"], {"status": "delivered"}), (ships[1]["id"], {"status": "failed",
                                                                                    "reason": "not_home"})):
        r = as_driver(merchant, driver["token"], "POST", f"/v1/driver/shipments/{sid}/status",
                      {**body, "occurred_at": iso(now_ms())})
        assert r.status_code == 200, r.body
    data = as_driver(merchant, token, "GET", "/v1/driver/route").json_body
    assert [s["status"] for s in data["stops"]] == ["delivered", "failed", "out_for_delivery"]
    assert data["next_shipment_id"] == ships[2]["id"] and [s["is_next"] for s in data["stops"]] == [0, 0, 1]


def test_no_route_today_a_planned_route_and_another_day(merchant: Merchant) -> None:
    driver = make_driver(merchant)
    token = link_token(new_link(merchant, driver["id"])["url"])
    empty = as_driver(merchant, token, "GET", "/v1/driver/route").json_body
    assert empty["route"] is None and empty["stops"] == [] and empty["next_shipment_id"] is None
    ship = make_shipment(merchant, 1)
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    r = merchant.call("POST", "/v1/routes", {"driver_id": driver["id"], "day": tomorrow,
                                             "planned_start": iso(now_ms()), "shipment_ids": [ship["id"]]})
    assert r.status_code == 201
    assert as_driver(merchant, token, "GET", "/v1/driver/route").json_body["route"] is None  # not today
    planned_driver, _, planned = today_route(merchant, 1, start=False)
    data = as_driver(merchant, planned_driver["token"], "GET", "/v1/driver/route").json_body
    assert data["route"]["id"] == planned["id"] and data["route"]["status"] == "planned"
    assert data["stops"][0]["status"] == "assigned" and data["next_shipment_id"] is None  # nothing to act on yet


# --- the bucket's CORS rule for the page's uploads -------------------------------------------------------


def test_the_local_bucket_gets_the_templates_cors_rule_for_the_apps_origin(aws: None) -> None:
    from infra.local.resources import bucket_cors_rules, create_bucket

    s3 = boto3.client("s3")
    create_bucket(s3, "doorstep-cors-check", cors_origins=["http://127.0.0.1:8000"])
    rules = s3.get_bucket_cors(Bucket="doorstep-cors-check")["CORSRules"]
    assert rules == bucket_cors_rules(["http://127.0.0.1:8000"])
    assert rules[0]["AllowedMethods"] == ["POST"] and rules[0]["AllowedOrigins"] == ["http://127.0.0.1:8000"]
    # the emulator answers a browser's preflight from the rule: the app's origin may POST, others may not
    url = s3.generate_presigned_post(Bucket="doorstep-cors-check", Key="k", ExpiresIn=60)["url"]
    asked = {"Access-Control-Request-Method": "POST"}
    allowed = requests.options(url, headers={"Origin": "http://127.0.0.1:8000", **asked}, timeout=10)
    assert allowed.status_code == 200
    assert allowed.headers["Access-Control-Allow-Origin"] == "http://127.0.0.1:8000"
    assert requests.options(url, headers={"Origin": "https://evil.example", **asked}, timeout=10).status_code == 403
    s3.delete_bucket(Bucket="doorstep-cors-check")  # test_infra lists the session's buckets


def test_package_defaults_the_public_origin_to_the_stages(tmp_path: Any) -> None:
    from infra.package import PROJECT_DIR, set_public_origin, stage_public_origin

    assert stage_public_origin(PROJECT_DIR, "prod") == "https://track.example.com"
    assert stage_public_origin(PROJECT_DIR, "local") is None  # the local stack passes its own
    template = tmp_path / "sam.json"
    template.write_text(json.dumps({"Parameters": {"PublicOrigin": {"Type": "String"}}, "Resources": {}}))
    set_public_origin(template, "https://track.example.com")
    assert json.loads(template.read_text())["Parameters"]["PublicOrigin"]["Default"] == "https://track.example.com"
