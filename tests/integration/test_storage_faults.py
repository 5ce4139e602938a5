"""Storage faults on every route family: 503 with Retry-After and the error shape, never a 500; a commit whose
answer was lost answers what it did.

Each case prepares fresh state (no faults), then sends one request while `tests.faults.inject` makes DynamoDB
fail. `test_every_call_site_answers_503` fails each storage call of each route in turn (and every later one,
retries included, as a paused storage does); `test_every_failure_class_on_every_route` fails the route's last
storage call with each failure class; slow-commit tests let the write happen and lose its answer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import pytest

from chalicelib.fleet.rules import generate_device_id
from tests.faults.inject import (
    PROVISIONED,
    READ_TIMEOUT,
    SLOW_COMMIT,
    TRANSIENT,
    WRITE_OPERATIONS,
    Injector,
    cancelled,
    injected,
    own_table,
)
from tests.integration.conftest import Merchant, new_merchant
from tests.integration.helpers import iso, make_driver, make_shipment, make_started_route, now_ms, shipment_body

Json = dict[str, Any]


@dataclass
class Req:
    method: str
    path: str
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    merchant_auth: bool = True
    html: bool = False  # errors come back as a page

    def send(self, merchant: Merchant) -> Any:
        headers = {**(merchant.headers() if self.merchant_auth else {}), **self.headers}
        body = self.body if isinstance(self.body, (str, bytes)) or self.body is None else json.dumps(self.body)
        return merchant.client.http.request(self.method, self.path, headers=headers, body=body or b"")


@dataclass(frozen=True)
class Case:
    name: str
    family: str
    prepare: Callable[[Merchant], Req]

    @property
    def reads_only(self) -> bool:
        """A failed attempt changes nothing, so one prepared state serves every attempt."""
        return ROUTE_OF[self.name].startswith("GET ") and "/osmand" not in ROUTE_OF[self.name]


# --- preparing state ----------------------------------------------------------------------------


def _driver_auth(driver: Json) -> dict[str, str]:
    return {"Authorization": f"Bearer {driver['token']}", "Content-Type": "application/json"}


def _token(shipment: Json) -> str:
    return str(shipment["tracking_url"].rsplit("/", 1)[1])


def _planned_route(m: Merchant) -> str:
    driver = make_driver(m)
    ships = [make_shipment(m, n) for n in (1, 2)]
    r = m.call("POST", "/v1/routes", {"driver_id": driver["id"], "day": "2026-11-21",
                                      "planned_start": "2026-11-21T15:00:00Z",
                                      "shipment_ids": [s["id"] for s in ships]})
    assert r.status_code == 201, r.body
    return str(r.json_body["id"])


def _failed_shipment(m: Merchant) -> str:
    """A shipment whose one delivery attempt failed (reschedulable and redirectable)."""
    driver, ships, _ = make_started_route(m, 1)
    r = m.client.http.post(f"/v1/driver/shipments/{ships[0]['id']}/status", headers=_driver_auth(driver),
                           body=json.dumps({"status": "failed", "reason": "not_home",
                                            "occurred_at": iso(now_ms() - 1000)}))
    assert r.status_code == 200, r.body
    return str(ships[0]["id"])


def _route_edit(m: Merchant) -> Req:
    route = m.call("GET", f"/v1/routes/{_planned_route(m)}").json_body
    ids = [s["shipment_id"] for s in route["stops"]]
    return Req("PATCH", f"/v1/routes/{route['id']}", {"version": route["version"], "shipment_ids": ids[::-1]})


def _stop_move(m: Merchant) -> Req:
    source, target = _planned_route(m), _planned_route(m)
    stop = m.call("GET", f"/v1/routes/{source}").json_body["stops"][0]["shipment_id"]
    return Req("POST", f"/v1/routes/{source}/stops/{stop}/move", {"route_id": target})


def _exception(m: Merchant) -> str:
    """An open exception of the merchant (a driver gone offline, as presence reports it)."""
    from chalicelib.exceptions.service import on_driver_event
    from chalicelib.storage import get_repository

    on_driver_event(get_repository(), m.id, make_driver(m)["id"], "driver_offline", datetime.now(UTC), "no_fixes")
    r = m.call("GET", "/v1/exceptions?state=open")
    assert r.status_code == 200 and r.json_body["items"], r.body
    return str(r.json_body["items"][0]["id"])


def _later_day() -> str:
    return (datetime.now(UTC).date() + timedelta(days=3)).isoformat()


def _with_position(m: Merchant) -> Json:
    driver = make_driver(m)
    r = m.client.http.post("/v1/driver/pings", headers=_driver_auth(driver), body=json.dumps(
        {"pings": [{"lat": 47.61, "lng": -122.33, "fix_time": iso(now_ms() - 5000)}]}))
    assert r.status_code == 200, r.body
    return driver


def _app_link(m: Merchant, driver: Json) -> str:
    r = m.call("POST", f"/v1/drivers/{driver['id']}/app-link")
    assert r.status_code == 201, r.body
    return str(r.json_body["url"].rsplit("/driver/", 1)[1])


def _csrf(m: Merchant, token: str) -> str:
    page = m.client.http.get(f"/track/{token}").body
    found = re.search(r'name="csrf" value="([^"]+)"', page.decode() if isinstance(page, bytes) else page)
    assert found
    return found.group(1)


def _webhook(m: Merchant) -> None:
    r = m.call("PUT", "/v1/webhook", {"url": f"https://hooks.example.com/faults/{m.id}"})
    assert r.status_code == 201, r.body


def _zone(m: Merchant) -> str:
    r = m.call("POST", "/v1/zones", {"name": "Depot", "kind": "depot", "geometry": _SQUARE})
    assert r.status_code == 201, r.body
    return str(r.json_body["id"])


_SQUARE = {"type": "Polygon", "coordinates": [[[-122.341, 47.609], [-122.339, 47.609], [-122.339, 47.611],
                                               [-122.341, 47.611], [-122.341, 47.609]]]}
_FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def _status_update(m: Merchant) -> Req:
    driver, ships, _ = make_started_route(m, 1)
    return Req("POST", f"/v1/driver/shipments/{ships[0]['id']}/status",
               {"status": "arrived", "occurred_at": iso(now_ms() - 1000)},
               {**_driver_auth(driver), "Idempotency-Key": "k-1"}, merchant_auth=False)


def _delivered(m: Merchant) -> str:
    driver, ships, _ = make_started_route(m, 1)
    r = Req("POST", f"/v1/driver/shipments/{ships[0]['id']}/status",
            {"status": "delivered", "occurred_at": iso(now_ms() - 1000)}, _driver_auth(driver),
            merchant_auth=False).send(m)
    assert r.status_code == 200, r.body
    return str(ships[0]["id"])


def _custody_driver_call(m: Merchant, what: str, body: Json) -> Req:
    driver, ships, _ = make_started_route(m, 1)
    return Req("POST", f"/v1/driver/shipments/{ships[0]['id']}/{what}", body, _driver_auth(driver),
               merchant_auth=False)


def _pin_unlock(m: Merchant) -> Req:
    """The dispatcher's unlock of a PIN with one attempt spent (a wrong PIN from the driver first)."""
    driver, ships, _ = make_started_route(m, 1)
    m.client.http.post(f"/v1/driver/shipments/{ships[0]['id']}/pin", headers=_driver_auth(driver),
                       body=json.dumps({"pin": "000000"}))
    return Req("POST", f"/v1/shipments/{ships[0]['id']}/pin/unlock")


def _instructions(m: Merchant) -> Req:
    token = _token(make_shipment(m))
    return Req("POST", f"/track/{token}/instructions",
               urlencode({"csrf": _csrf(m, token), "gate_code": "42"}), _FORM, merchant_auth=False, html=True)


_LOOKUP_SLUGS = iter(range(1, 10**9))


def _lookup(m: Merchant, ref: str | None = None) -> str:
    """A lookup page of its own for the merchant (and, with `ref`, a shipment holding that order number)."""
    slug = f"faults-{next(_LOOKUP_SLUGS)}-{m.id[-10:].lower()}"
    assert m.call("PUT", "/v1/lookup/settings", {"slug": slug}).status_code == 200
    if ref is not None:
        make_shipment(m, 1, external_ref=ref)
    return slug


def _preference_links(m: Merchant) -> tuple[str, str]:
    """(unsubscribe, preferences) paths of a fresh shipment of the merchant."""
    from chalicelib.core.config import get_settings
    from chalicelib.notifications.preferences import preferences_url, unsubscribe_url
    from chalicelib.notifications.rules import Channel

    shipment, secret = make_shipment(m, 1), get_settings().token_secret
    return (unsubscribe_url("", secret, m.id, shipment["id"], Channel.EMAIL),
            preferences_url("", secret, m.id, shipment["id"]))
def _messaging_stop(m: Merchant) -> tuple[Json, str]:
    """A driver and the shipment of its started route, with one message from the recipient in its conversation."""
    driver, ships, _ = make_started_route(m, 1)
    r = m.call("POST", f"/v1/shipments/{ships[0]['id']}/messages", {"text": "Hello"})
    assert r.status_code == 201, r.body
    return driver, str(ships[0]["id"])
def _recipient_message(m: Merchant) -> Req:
    token = _token(make_shipment(m))
    return Req("POST", f"/track/{token}/messages", urlencode({"csrf": _csrf(m, token), "text": "I'm home"}), _FORM,
               merchant_auth=False, html=True)


def _console(m: Merchant) -> tuple[dict[str, str], str]:
    """A signed-in console session of the merchant: (its Cookie header, its CSRF token)."""
    r = m.client.http.post("/console/session", headers=_FORM, body=urlencode({"api_key": m.key}))
    assert r.status_code == 303, r.body
    cookie = {"Cookie": r.headers["Set-Cookie"].split(";", 1)[0]}
    found = re.search(r'data-csrf="([^"]+)"', m.client.http.get("/console", headers=cookie).body.decode())
    assert found
    return cookie, found.group(1)


def _console_call(m: Merchant) -> Req:
    cookie, csrf = _console(m)
    return Req("POST", "/v1/drivers", {"name": "Cookie"}, {**cookie, "X-CSRF-Token": csrf,
                                                           "Content-Type": "application/json"}, merchant_auth=False)


CASES = [
    # driver presence and the fleet view
    Case("fleet view", "presence", lambda m: (_with_position(m), Req("GET", "/v1/fleet"))[1]),
    Case("shift", "presence", lambda m: Req("POST", "/v1/driver/shift", {"action": "start"},
                                            _driver_auth(make_driver(m)), merchant_auth=False)),
    Case("app status", "presence", lambda m: Req("POST", "/v1/driver/app-status", {
        "battery": 40, "location_permission": "granted", "app_state": "foreground"}, _driver_auth(make_driver(m)),
        merchant_auth=False)),
    # exceptions
    Case("list exceptions", "exceptions", lambda m: (_exception(m), Req("GET", "/v1/exceptions"))[1]),
    Case("acknowledge exception", "exceptions",
         lambda m: Req("POST", f"/v1/exceptions/{_exception(m)}/acknowledge", {"note": "on it"})),
    Case("resolve exception", "exceptions", lambda m: Req("POST", f"/v1/exceptions/{_exception(m)}/resolve", {})),
    # driver reports
    Case("report trips", "reports", lambda m: Req("GET", f"/v1/drivers/{make_driver(m)['id']}/reports/trips"
                                                   "?from=2026-12-01&to=2026-12-02")),
    Case("report stops", "reports", lambda m: Req("GET", f"/v1/drivers/{make_driver(m)['id']}/reports/stops"
                                                   "?from=2026-12-01&to=2026-12-02")),
    Case("report summary", "reports", lambda m: Req("GET", f"/v1/drivers/{make_driver(m)['id']}/reports/summary"
                                                     "?from=2026-12-01&to=2026-12-02")),
    Case("behaviour events", "reports", lambda m: Req(
        "GET", f"/v1/drivers/{make_driver(m)['id']}/behaviour-events?from=2026-12-01&to=2026-12-02",
        headers={"Accept": "text/csv"})),
    Case("scorecard", "reports", lambda m: Req("GET", "/v1/reports/scorecard?week=2026-W49")),
    Case("get report settings", "reports", lambda m: Req("GET", "/v1/reports/settings")),
    Case("put report settings", "reports", lambda m: Req("PUT", "/v1/reports/settings", {"speeding_kmh": 100})),
    Case("delivery analytics", "analytics", lambda m: Req(
        "GET", "/v1/analytics/deliveries?from=2026-01-01&to=2026-01-07&group_by=driver")),
    Case("console sign-in link", "console", lambda m: Req("POST", "/v1/console/sign-in-links")),
    Case("console link sign-in", "console", lambda m: Req(
        "GET", "/" + m.call("POST", "/v1/console/sign-in-links").json_body["url"].split("/", 3)[3],
        merchant_auth=False, html=True)),
    # the dispatcher console: its page, sign-in and sign-out, a /v1 call with its cookie, its search
    Case("console page", "console", lambda m: Req("GET", "/console", headers=_console(m)[0], merchant_auth=False,
                                                  html=True)),
    Case("console sign-in", "console", lambda m: Req("POST", "/console/session", urlencode({"api_key": m.key}),
                                                     _FORM, merchant_auth=False, html=True)),
    Case("console sign-out", "console", lambda m: (lambda c: Req(
        "POST", "/console/session/end", urlencode({"csrf": c[1]}), {**_FORM, **c[0]}, merchant_auth=False,
        html=True))(_console(m))),
    Case("console sign-out by script", "console", lambda m: (lambda c: Req(
        "DELETE", "/console/session", headers={**c[0], "X-CSRF-Token": c[1]}, merchant_auth=False))(_console(m))),
    Case("console cookie call", "console", _console_call),
    Case("shipment search", "shipments", lambda m: Req(
        "GET", f"/v1/shipments/search?q={make_shipment(m)['recipient']['phone'].replace('+', '%2B')}")),
    # drivers
    Case("create driver", "drivers", lambda m: Req("POST", "/v1/drivers", {"name": "Dana"})),
    Case("list drivers", "drivers", lambda m: (make_driver(m), Req("GET", "/v1/drivers"))[1]),
    Case("get driver", "drivers", lambda m: Req("GET", f"/v1/drivers/{make_driver(m)['id']}")),
    Case("rotate token", "drivers", lambda m: Req("POST", f"/v1/drivers/{make_driver(m)['id']}/token")),
    Case("position", "drivers", lambda m: Req("GET", f"/v1/drivers/{_with_position(m)['id']}/position")),
    Case("nearby", "drivers", lambda m: (_with_position(m),
                                         Req("GET", "/v1/drivers/nearby?lat=47.61&lng=-122.33&radius_m=500"))[1]),
    Case("zone events", "drivers", lambda m: Req("GET", f"/v1/drivers/{make_driver(m)['id']}/zone-events")),
    Case("generate device id", "drivers", lambda m: Req("POST", f"/v1/drivers/{make_driver(m)['id']}/device-id")),
    Case("register device id", "drivers", lambda m: Req("PUT", f"/v1/drivers/{make_driver(m)['id']}/device-id",
                                                        {"device_id": generate_device_id()})),
    # shipments
    Case("create shipment", "shipments", lambda m: Req("POST", "/v1/shipments", shipment_body(),
                                                       {"Idempotency-Key": "create-1"})),
    Case("list shipments", "shipments", lambda m: (make_shipment(m), Req("GET", "/v1/shipments"))[1]),
    Case("get shipment", "shipments", lambda m: Req("GET", f"/v1/shipments/{make_shipment(m)['id']}")),
    Case("cancel shipment", "shipments", lambda m: Req("POST", f"/v1/shipments/{make_shipment(m)['id']}/cancel")),
    Case("revoke tracking link", "shipments",
         lambda m: Req("POST", f"/v1/shipments/{make_shipment(m)['id']}/tracking-link/revoke")),
    Case("timeline", "shipments", lambda m: Req("GET", f"/v1/shipments/{make_shipment(m)['id']}/timeline")),
    Case("proof", "shipments", lambda m: Req("GET", f"/v1/shipments/{make_shipment(m)['id']}/proof")),
    Case("patch shipment", "shipments", lambda m: Req("PATCH", f"/v1/shipments/{make_shipment(m)['id']}",
                                                      {"instructions": "Ring twice"})),
    Case("reschedule shipment", "shipments", lambda m: Req("POST", f"/v1/shipments/{_failed_shipment(m)}/reschedule",
                                                           {"delivery_date": _later_day()})),
    Case("redirect shipment", "shipments", lambda m: Req("POST", f"/v1/shipments/{_failed_shipment(m)}/redirect",
                                                         {"kind": "safe_place", "note": "Porch"})),
    # routes
    Case("create route", "routes", lambda m: (lambda d, s: Req("POST", "/v1/routes", {
        "driver_id": d["id"], "day": "2026-11-21", "planned_start": "2026-11-21T15:00:00Z",
        "shipment_ids": [s["id"]]}))(make_driver(m), make_shipment(m))),
    Case("get route", "routes", lambda m: Req("GET", f"/v1/routes/{_planned_route(m)}")),
    Case("start route", "routes", lambda m: Req("POST", f"/v1/routes/{_planned_route(m)}/start")),
    Case("list routes", "routes", lambda m: (_planned_route(m), Req("GET", "/v1/routes"))[1]),
    Case("edit route", "routes", _route_edit),
    Case("reassign route", "routes", lambda m: (lambda rid, d: Req("POST", f"/v1/routes/{rid}/reassign",
                                                                    {"driver_id": d["id"]}))(_planned_route(m),
                                                                                            make_driver(m))),
    Case("move stop", "routes", _stop_move),
    Case("optimize route", "routes", lambda m: Req("POST", f"/v1/routes/{_planned_route(m)}/optimize", {})),
    Case("complete route", "routes", lambda m: Req("POST", f"/v1/routes/{make_started_route(m, 1)[2]['id']}/complete")),
    # pings
    Case("post pings", "pings", lambda m: Req("POST", "/v1/driver/pings", {"pings": [
        {"lat": 47.61, "lng": -122.33, "fix_time": iso(now_ms() - 3000)}]}, _driver_auth(make_driver(m)),
        merchant_auth=False)),
    # tracker apps
    Case("osmand", "trackers", lambda m: Req(
        "GET", f"/osmand?id={make_driver(m)['token']}&lat=47.61&lon=-122.33&timestamp={now_ms() // 1000 - 5}",
        merchant_auth=False)),
    Case("osmand unknown id", "trackers", lambda m: Req(
        "GET", "/osmand?id=nobody-has-this-device-id-0000&lat=47.61&lon=-122.33", merchant_auth=False)),
    Case("owntracks", "trackers", lambda m: (lambda d: Req("POST", "/owntracks", json.dumps(
        {"_type": "location", "lat": 47.61, "lon": -122.33, "tst": now_ms() // 1000 - 5}), {
        "Content-Type": "application/json", "Authorization": "Basic " + __import__("base64").b64encode(
            f"{d['id']}:{d['token']}".encode()).decode()}, merchant_auth=False))(make_driver(m))),
    # the tracking page: JSON and HTML
    Case("tracking JSON", "tracking", lambda m: Req("GET", f"/v1/track/{_token(make_shipment(m))}",
                                                    merchant_auth=False)),
    Case("tracking status JSON", "tracking", lambda m: Req("GET", f"/track/{_token(make_shipment(m))}/status",
                                                           merchant_auth=False)),
    Case("tracking page", "tracking", lambda m: Req("GET", f"/track/{_token(make_shipment(m))}",
                                                    merchant_auth=False, html=True)),
    Case("tracking theme", "tracking", lambda m: Req("GET", f"/track/{_token(make_shipment(m))}/theme.css",
                                                     merchant_auth=False, html=True)),
    Case("tracking instructions form", "tracking", _instructions),
    # the driver app
    Case("driver app page", "driver app", lambda m: Req("GET", f"/driver/{_app_link(m, make_driver(m))}",
                                                        merchant_auth=False, html=True)),
    Case("driver route", "driver app", lambda m: Req("GET", "/v1/driver/route", headers={
        "Authorization": f"Bearer {_app_link(m, make_driver(m))}"}, merchant_auth=False)),
    Case("app link", "driver app", lambda m: Req("POST", f"/v1/drivers/{make_driver(m)['id']}/app-link")),
    Case("revoke app links", "driver app",
         lambda m: Req("POST", f"/v1/drivers/{make_driver(m)['id']}/app-link/revoke")),
    Case("driver status update", "driver app", _status_update),
    Case("proof upload", "driver app", lambda m: (lambda d, s: Req(
        "POST", f"/v1/driver/shipments/{s[0]['id']}/proof-uploads",
        {"kind": "photo", "content_type": "image/jpeg", "size_bytes": 1000}, _driver_auth(d),
        merchant_auth=False))(*make_started_route(m, 1)[:2])),
    # messaging
    Case("shipment messages", "messages", lambda m: Req("GET", f"/v1/shipments/{_messaging_stop(m)[1]}/messages")),
    Case("post shipment message", "messages",
         lambda m: Req("POST", f"/v1/shipments/{make_shipment(m)['id']}/messages", {"text": "Hi"})),
    Case("driver messages", "messages", lambda m: Req("GET", f"/v1/drivers/{make_driver(m)['id']}/messages")),
    Case("post driver message", "messages",
         lambda m: Req("POST", f"/v1/drivers/{make_driver(m)['id']}/messages", {"text": "Hi"})),
    Case("broadcast message", "messages", lambda m: (lambda d: (
        m.client.http.post("/v1/driver/shift", headers=_driver_auth(d), body=json.dumps({"action": "start"})),
        Req("POST", "/v1/drivers/messages/broadcast", {"text": "Hi all"}))[1])(make_driver(m))),
    Case("driver dispatch thread", "messages", lambda m: Req("GET", "/v1/driver/messages",
                                                             headers=_driver_auth(make_driver(m)),
                                                             merchant_auth=False)),
    Case("driver posts to dispatch", "messages", lambda m: Req("POST", "/v1/driver/messages", {"text": "OK"},
                                                               _driver_auth(make_driver(m)), merchant_auth=False)),
    Case("driver unread", "messages", lambda m: Req("GET", "/v1/driver/messages/unread",
                                                    headers=_driver_auth(_messaging_stop(m)[0]),
                                                    merchant_auth=False)),
    Case("driver stop thread", "messages", lambda m: (lambda d, sid: Req(
        "GET", f"/v1/driver/shipments/{sid}/messages", headers=_driver_auth(d), merchant_auth=False))(
        *_messaging_stop(m))),
    Case("driver posts to stop", "messages", lambda m: (lambda d, sid: Req(
        "POST", f"/v1/driver/shipments/{sid}/messages", {"text": "At the door"}, _driver_auth(d),
        merchant_auth=False))(*_messaging_stop(m))),
    Case("recipient messages JSON", "messages", lambda m: Req("GET", f"/track/{_token(make_shipment(m))}/messages",
                                                              merchant_auth=False)),
    Case("recipient message form", "messages", _recipient_message),
    Case("two-way sms number", "messages", lambda m: Req("PUT", "/v1/messaging/sms-number",
                                                         {"number": f"+1415555{now_ms() % 10000:04d}"})),
    # chain of custody
    Case("custody chain", "custody", lambda m: Req("GET", f"/v1/shipments/{make_shipment(m)['id']}/custody")),
    Case("receipt", "custody", lambda m: Req("GET", f"/v1/shipments/{_delivered(m)}/receipt")),
    Case("receipt keys", "custody", lambda m: (_delivered(m), Req(
        "GET", "/.well-known/doorstep-receipt-keys.json", merchant_auth=False))[1]),
    Case("pin check", "custody", lambda m: _custody_driver_call(m, "pin", {"pin": "123456"})),
    Case("pin unlock", "custody", _pin_unlock),
    Case("parcel scan", "custody", lambda m: _custody_driver_call(
        m, "scans", {"stage": "load", "barcodes": ["P1"], "occurred_at": iso(now_ms() - 1000)})),
    # webhooks config
    Case("put webhook", "webhooks", lambda m: Req("PUT", "/v1/webhook",
                                                  {"url": f"https://hooks.example.com/faults/{m.id}"})),
    Case("get webhook", "webhooks", lambda m: (_webhook(m), Req("GET", "/v1/webhook"))[1]),
    Case("delete webhook", "webhooks", lambda m: (_webhook(m), Req("DELETE", "/v1/webhook"))[1]),
    Case("rotate webhook secret", "webhooks", lambda m: (_webhook(m), Req("POST", "/v1/webhook/secret"))[1]),
    Case("resume webhook", "webhooks", lambda m: (_webhook(m), Req("POST", "/v1/webhook/resume"))[1]),
    Case("webhook deliveries", "webhooks", lambda m: (_webhook(m), Req("GET", "/v1/webhook/deliveries"))[1]),
    # settings
    Case("get settings", "settings", lambda m: Req("GET", "/v1/settings")),
    Case("put settings", "settings", lambda m: Req("PUT", "/v1/settings", {})),
    Case("patch settings", "settings", lambda m: Req("PATCH", "/v1/settings", {"branding": {"name": "Acme"}})),
    Case("get notification settings", "settings", lambda m: Req("GET", "/v1/notifications/settings")),
    Case("put notification settings", "settings", lambda m: Req("PUT", "/v1/notifications/settings",
                                                                {"policy": {"quiet_hours": None}})),
    # zones
    # the lookup page: its settings, the page, the form post (a match and a miss), the frame, the theme
    Case("get lookup settings", "lookup", lambda m: (_lookup(m), Req("GET", "/v1/lookup/settings"))[1]),
    Case("put lookup settings", "lookup", lambda m: Req("PUT", "/v1/lookup/settings", {
        "slug": f"put-{next(_LOOKUP_SLUGS)}-{m.id[-10:].lower()}", "allowed_origins": ["https://shop.example"]})),
    Case("lookup page", "lookup", lambda m: Req("GET", f"/lookup/{_lookup(m)}", merchant_auth=False, html=True)),
    Case("lookup embed", "lookup", lambda m: Req("GET", f"/lookup/{_lookup(m)}/embed", merchant_auth=False,
                                                 html=True)),
    Case("lookup theme", "lookup", lambda m: Req("GET", f"/lookup/{_lookup(m)}/theme.css", merchant_auth=False,
                                                 html=True)),
    Case("lookup match", "lookup", lambda m: Req("POST", f"/lookup/{_lookup(m, 'F-1')}",
                                                 urlencode({"order": "F-1", "check": "98101"}), _FORM,
                                                 merchant_auth=False, html=True)),
    Case("lookup miss", "lookup", lambda m: Req("POST", f"/lookup/{_lookup(m, 'F-2')}",
                                                urlencode({"order": "F-2", "check": "00000"}), _FORM,
                                                merchant_auth=False, html=True)),
    # the recipient's preferences and one-click unsubscribe, the merchant's opt-out list
    Case("list opt-outs", "preferences", lambda m: Req("GET", "/v1/opt-outs")),
    Case("export opt-outs", "preferences", lambda m: Req("GET", "/v1/opt-outs?format=csv")),
    Case("preferences page", "preferences", lambda m: Req("GET", _preference_links(m)[1], merchant_auth=False,
                                                          html=True)),
    Case("preferences theme", "preferences", lambda m: Req("GET", f"{_preference_links(m)[1]}/theme.css",
                                                           merchant_auth=False, html=True)),
    Case("preferences form", "preferences", lambda m: Req("POST", _preference_links(m)[1],
                                                          urlencode({"sms": "delivery", "email": "merchant"}),
                                                          _FORM, merchant_auth=False, html=True)),
    Case("unsubscribe page", "preferences", lambda m: Req("GET", _preference_links(m)[0], merchant_auth=False,
                                                          html=True)),
    Case("one-click unsubscribe", "preferences", lambda m: Req("POST", _preference_links(m)[0],
                                                               "List-Unsubscribe=One-Click", _FORM,
                                                               merchant_auth=False, html=True)),
    Case("create zone", "zones", lambda m: Req("POST", "/v1/zones", {"name": "Depot", "kind": "depot",
                                                                      "geometry": _SQUARE})),
    Case("list zones", "zones", lambda m: (_zone(m), Req("GET", "/v1/zones"))[1]),
    Case("get zone", "zones", lambda m: Req("GET", f"/v1/zones/{_zone(m)}")),
    Case("delete zone", "zones", lambda m: Req("DELETE", f"/v1/zones/{_zone(m)}")),
]
FAMILIES = sorted({c.family for c in CASES})


@pytest.fixture(autouse=True)
def fresh_table(aws: None) -> Iterator[str]:
    """A table per test (see `own_table`): this module makes a few thousand transactions."""
    with own_table() as name:
        yield name


@pytest.fixture()
def faults(client: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Injector]:
    with injected(Injector(), monkeypatch) as injector:
        yield injector


def assert_unavailable(r: Any, req: Req, what: str) -> None:
    assert r.status_code == 503, f"{what}: {r.status_code} {r.body[:300]!r}"
    assert int(r.headers["Retry-After"]) >= 1, what
    if req.html:
        assert r.headers["Content-Type"].startswith("text/html"), what
    else:
        error = json.loads(r.body)["error"]
        assert error["code"] == "service_unavailable" and error["message"] and error["details"] == [], what


def clean_run(case: Case, merchant: Merchant, faults: Injector) -> tuple[int, list[str]]:
    """(status, operations) of the request without faults (for a merchant of its own)."""
    merchant = new_merchant(merchant.client)
    req = case.prepare(merchant)
    faults.reset()
    r = req.send(merchant)
    assert r.status_code < 500, f"{case.name}: {r.status_code} {r.body[:300]!r}"
    return r.status_code, list(faults.operations)


ROUTE_OF = {
    "create driver": "POST /v1/drivers", "list drivers": "GET /v1/drivers", "get driver": "GET /v1/drivers/{driver_id}",
    "rotate token": "POST /v1/drivers/{driver_id}/token", "position": "GET /v1/drivers/{driver_id}/position",
    "nearby": "GET /v1/drivers/nearby", "zone events": "GET /v1/drivers/{driver_id}/zone-events",
    "generate device id": "POST /v1/drivers/{driver_id}/device-id",
    "register device id": "PUT /v1/drivers/{driver_id}/device-id", "create shipment": "POST /v1/shipments",
    "list shipments": "GET /v1/shipments", "get shipment": "GET /v1/shipments/{shipment_id}",
    "cancel shipment": "POST /v1/shipments/{shipment_id}/cancel",
    "revoke tracking link": "POST /v1/shipments/{shipment_id}/tracking-link/revoke",
    "timeline": "GET /v1/shipments/{shipment_id}/timeline", "proof": "GET /v1/shipments/{shipment_id}/proof",
    "create route": "POST /v1/routes", "get route": "GET /v1/routes/{route_id}",
    "start route": "POST /v1/routes/{route_id}/start", "list routes": "GET /v1/routes",
    "edit route": "PATCH /v1/routes/{route_id}", "reassign route": "POST /v1/routes/{route_id}/reassign",
    "move stop": "POST /v1/routes/{route_id}/stops/{shipment_id}/move",
    "optimize route": "POST /v1/routes/{route_id}/optimize",
    "complete route": "POST /v1/routes/{route_id}/complete", "patch shipment": "PATCH /v1/shipments/{shipment_id}",
    "reschedule shipment": "POST /v1/shipments/{shipment_id}/reschedule",
    "redirect shipment": "POST /v1/shipments/{shipment_id}/redirect", "list exceptions": "GET /v1/exceptions",
    "delivery analytics": "GET /v1/analytics/deliveries",
    "fleet view": "GET /v1/fleet", "console sign-in link": "POST /v1/console/sign-in-links",
    "console link sign-in": "GET /console/link/{token}", "shift": "POST /v1/driver/shift",
    "app status": "POST /v1/driver/app-status",
    "acknowledge exception": "POST /v1/exceptions/{exception_id}/acknowledge",
    "resolve exception": "POST /v1/exceptions/{exception_id}/resolve", "post pings": "POST /v1/driver/pings",
    "osmand": "GET /osmand", "osmand unknown id": "GET /osmand", "owntracks": "POST /owntracks",
    "tracking JSON": "GET /v1/track/{token}", "tracking status JSON": "GET /track/{token}/status",
    "tracking page": "GET /track/{token}", "tracking theme": "GET /track/{token}/theme.css",
    "tracking instructions form": "POST /track/{token}/instructions", "driver app page": "GET /driver/{token}",
    "driver route": "GET /v1/driver/route", "app link": "POST /v1/drivers/{driver_id}/app-link",
    "revoke app links": "POST /v1/drivers/{driver_id}/app-link/revoke",
    "driver status update": "POST /v1/driver/shipments/{shipment_id}/status",
    "proof upload": "POST /v1/driver/shipments/{shipment_id}/proof-uploads", "put webhook": "PUT /v1/webhook",
    "get webhook": "GET /v1/webhook", "delete webhook": "DELETE /v1/webhook",
    "rotate webhook secret": "POST /v1/webhook/secret", "resume webhook": "POST /v1/webhook/resume",
    "webhook deliveries": "GET /v1/webhook/deliveries", "get settings": "GET /v1/settings",
    "put settings": "PUT /v1/settings", "patch settings": "PATCH /v1/settings",
    "get notification settings": "GET /v1/notifications/settings",
    "put notification settings": "PUT /v1/notifications/settings", "create zone": "POST /v1/zones",
    "list zones": "GET /v1/zones", "get zone": "GET /v1/zones/{zone_id}", "delete zone": "DELETE /v1/zones/{zone_id}",
    "console page": "GET /console", "console sign-in": "POST /console/session",
    "console sign-out": "POST /console/session/end", "console sign-out by script": "DELETE /console/session",
    "console cookie call": "POST /v1/drivers", "shipment search": "GET /v1/shipments/search",
    "get lookup settings": "GET /v1/lookup/settings", "put lookup settings": "PUT /v1/lookup/settings",
    "lookup page": "GET /lookup/{slug}", "lookup embed": "GET /lookup/{slug}/embed",
    "lookup theme": "GET /lookup/{slug}/theme.css", "lookup match": "POST /lookup/{slug}",
    "lookup miss": "POST /lookup/{slug}", "list opt-outs": "GET /v1/opt-outs", "export opt-outs": "GET /v1/opt-outs",
    "preferences page": "GET /preferences/{token}", "preferences form": "POST /preferences/{token}",
    "preferences theme": "GET /preferences/{token}/theme.css",
    "unsubscribe page": "GET /unsubscribe/{token}", "one-click unsubscribe": "POST /unsubscribe/{token}",
    "report trips": "GET /v1/drivers/{driver_id}/reports/trips",
    "report stops": "GET /v1/drivers/{driver_id}/reports/stops",
    "report summary": "GET /v1/drivers/{driver_id}/reports/summary",
    "behaviour events": "GET /v1/drivers/{driver_id}/behaviour-events", "scorecard": "GET /v1/reports/scorecard",
    "get report settings": "GET /v1/reports/settings", "put report settings": "PUT /v1/reports/settings",
    "shipment messages": "GET /v1/shipments/{shipment_id}/messages",
    "post shipment message": "POST /v1/shipments/{shipment_id}/messages",
    "driver messages": "GET /v1/drivers/{driver_id}/messages",
    "post driver message": "POST /v1/drivers/{driver_id}/messages",
    "broadcast message": "POST /v1/drivers/messages/broadcast", "driver dispatch thread": "GET /v1/driver/messages",
    "driver posts to dispatch": "POST /v1/driver/messages", "driver unread": "GET /v1/driver/messages/unread",
    "driver stop thread": "GET /v1/driver/shipments/{shipment_id}/messages",
    "driver posts to stop": "POST /v1/driver/shipments/{shipment_id}/messages",
    "two-way sms number": "PUT /v1/messaging/sms-number", "recipient messages JSON": "GET /track/{token}/messages",
    "recipient message form": "POST /track/{token}/messages",
    "custody chain": "GET /v1/shipments/{shipment_id}/custody", "receipt": "GET /v1/shipments/{shipment_id}/receipt",
    "receipt keys": "GET /.well-known/doorstep-receipt-keys.json",
    "pin check": "POST /v1/driver/shipments/{shipment_id}/pin",
    "pin unlock": "POST /v1/shipments/{shipment_id}/pin/unlock",
    "parcel scan": "POST /v1/driver/shipments/{shipment_id}/scans",
}
# Routes without a case of their own: no storage (documents, assets), or the same code path as a case
# (the other tracking forms go through the form handling and a transaction like the instructions; the
# webhook delivery reads and replays through the same store as the deliveries list; POST /osmand as GET).
NOT_CASES = {"GET /openapi.json", "GET /health", "GET /static/{name}", "POST /track/{token}/reschedule",
             "POST /track/{token}/redirect",
             "POST /track/{token}/rating", "GET /v1/webhook/deliveries/{delivery_id}",
             "POST /v1/webhook/deliveries/{delivery_id}/replay", "POST /v1/webhook/replay", "POST /osmand",
             "GET /lookup/{slug}/embed.js"}


def test_the_cases_cover_every_route() -> None:
    import app as app_module

    routes = {f"{method} {path}" for path, methods in app_module.app.routes.items() for method in methods}
    assert {c.name for c in CASES} == set(ROUTE_OF)
    assert set(ROUTE_OF.values()) | NOT_CASES == routes
    assert set(FAMILIES) == {"drivers", "shipments", "routes", "pings", "trackers", "tracking", "driver app",
                             "webhooks", "settings", "zones", "console", "exceptions", "presence", "lookup",
                             "preferences", "reports", "messages", "analytics", "custody"}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_every_call_site_answers_503(case: Case, merchant: Merchant, faults: Injector) -> None:
    """The storage fails from the k-th call of the request on, for every k: 503, never a 500."""
    status, operations = clean_run(case, merchant, faults)
    unavailable = 0
    prepared = (merchant, case.prepare(merchant)) if case.reads_only else None
    for k in range(1, len(operations) + 1):
        fault = TRANSIENT[(k + len(case.name)) % len(TRANSIENT)]
        if prepared is None:  # each attempt from the same state
            m = new_merchant(merchant.client)
            req = case.prepare(m)
        else:
            m, req = prepared
        faults.from_attempt(k, fault)
        r = req.send(m)
        faults.reset()
        what = f"{case.name}, {fault.name} from call {k} ({operations[k - 1]})"
        assert r.status_code != 500, what
        if r.status_code == 503:
            assert_unavailable(r, req, what)
            unavailable += 1
        else:  # a call whose failure the route may survive (none today): then it answers as without faults
            assert r.status_code == status, what
    assert unavailable >= 1, case.name


# One route per family, its main read or write: each failure class there.
REPRESENTATIVES = [c for c in CASES if c.name in {
    "create driver", "create shipment", "start route", "post pings", "osmand", "tracking page",
    "driver status update", "put webhook", "get settings", "create zone", "tracking status JSON"}]


@pytest.mark.parametrize("case", REPRESENTATIVES, ids=[c.name for c in REPRESENTATIVES])
def test_every_failure_class_on_every_route_family(case: Case, merchant: Merchant, faults: Injector) -> None:
    """Each failure class at the route's last storage call (its main read or write) answers 503."""
    _, operations = clean_run(case, merchant, faults)
    prepared = (merchant, case.prepare(merchant)) if case.reads_only else None
    for fault in TRANSIENT:
        m, req = prepared or (lambda fresh: (fresh, case.prepare(fresh)))(new_merchant(merchant.client))
        faults.from_attempt(len(operations), fault)
        r = req.send(m)
        faults.reset()
        assert_unavailable(r, req, f"{case.name}: {fault.name} at {operations[-1]}")


TRANSACTIONAL = [c for c in CASES if c.name in {
    "create driver", "create shipment", "cancel shipment", "revoke tracking link", "start route", "rotate token",
    "driver status update", "tracking instructions form"}]
CANCELLATIONS = [cancelled("TransactionConflict", "None"), cancelled("None", "ThrottlingError"),
                 cancelled("ProvisionedThroughputExceeded"), cancelled("None", "TransactionConflict", "None")]


@pytest.mark.parametrize("fault", CANCELLATIONS, ids=[f.name for f in CANCELLATIONS])
@pytest.mark.parametrize("case", TRANSACTIONAL, ids=[c.name for c in TRANSACTIONAL])
def test_transactions_cancelled_for_capacity_or_conflict_answer_503(case: Case, fault: Any, merchant: Merchant,
                                                                    faults: Injector) -> None:
    req = case.prepare(merchant)
    faults.from_attempt(1, fault, frozenset({"TransactWriteItems"}))
    r = req.send(merchant)
    assert faults.injected, f"{case.name} wrote no transaction"
    assert_unavailable(r, req, f"{case.name}: {fault.name}")


def test_a_cancelled_transaction_for_a_condition_stays_a_domain_answer(merchant: Merchant, faults: Injector) -> None:
    """A failed condition is business, not a fault: the revoke answers its 409, not 503 or 500."""
    req = CASES[[c.name for c in CASES].index("revoke tracking link")].prepare(merchant)
    faults.from_attempt(1, cancelled("ConditionalCheckFailed", "None", "None", "None"),
                        frozenset({"TransactWriteItems"}))
    r = req.send(merchant)
    assert r.status_code == 409 and json.loads(r.body)["error"]["code"] == "conflict"


# --- a commit whose answer is lost ----------------------------------------------------------------

MUTATING = [c for c in CASES if c.name in {
    "create driver", "rotate token", "generate device id", "register device id", "create shipment",
    "cancel shipment", "revoke tracking link", "create route", "start route", "post pings", "osmand", "owntracks",
    "tracking instructions form", "revoke app links", "driver status update", "put webhook", "delete webhook",
    "rotate webhook secret", "resume webhook", "put settings", "patch settings", "put notification settings",
    "create zone",
    "delete zone"}]


@pytest.mark.parametrize("case", MUTATING, ids=[c.name for c in MUTATING])
def test_a_slow_commit_answers_what_the_first_attempt_did(case: Case, merchant: Merchant, faults: Injector) -> None:
    """Each write of the request is applied but its answer lost (botocore retries it): same status as without
    the fault, never a 500 or 409."""
    status, operations = clean_run(case, merchant, faults)
    writes = [op for op in operations if op in WRITE_OPERATIONS]
    assert writes, case.name
    for j in range(1, len(writes) + 1):
        m = new_merchant(merchant.client)
        req = case.prepare(m)
        faults.once(SLOW_COMMIT, j, WRITE_OPERATIONS)
        r = req.send(m)
        injected_at = list(faults.injected)
        faults.reset()
        assert injected_at, f"{case.name}: write {j} was not reached"
        assert r.status_code == status, f"{case.name}, slow commit of write {j} ({writes[j - 1]}): " \
                                        f"{r.status_code} {r.body[:300]!r}"


def test_starting_a_route_whose_commits_were_slow_answers_the_active_route(merchant: Merchant,
                                                                          faults: Injector) -> None:
    for write in (1, 2):  # the route's status update, then the shipments' transaction
        route_id = _planned_route(merchant)
        faults.once(SLOW_COMMIT, write, WRITE_OPERATIONS)
        r = merchant.call("POST", f"/v1/routes/{route_id}/start")
        faults.reset()
        assert r.status_code == 200, r.body
        assert r.json_body["status"] == "active" and r.json_body["started_at"]
        route = merchant.call("GET", f"/v1/routes/{route_id}").json_body
        assert route["status"] == "active" and route["started_at"] == r.json_body["started_at"]
        for stop in route["stops"]:
            sid = stop["shipment_id"]
            assert merchant.call("GET", f"/v1/shipments/{sid}").json_body["status"] == "out_for_delivery"
            kinds = [e["type"] for e in merchant.call("GET", f"/v1/shipments/{sid}/timeline").json_body["items"]]
            assert kinds.count("out_for_delivery") == 1


def test_creating_drivers_and_shipments_whose_commits_were_slow_answers_201_once(merchant: Merchant,
                                                                                faults: Injector) -> None:
    faults.once(SLOW_COMMIT, 1, WRITE_OPERATIONS)
    r = merchant.call("POST", "/v1/drivers", {"name": "Slow Commit"})
    assert r.status_code == 201, r.body
    driver = r.json_body
    faults.reset()
    names = [d["name"] for d in merchant.call("GET", "/v1/drivers").json_body["items"]]
    assert names.count("Slow Commit") == 1
    pinged = merchant.client.http.post("/v1/driver/pings", headers=_driver_auth(driver), body=json.dumps(
        {"pings": [{"lat": 47.61, "lng": -122.33, "fix_time": iso(now_ms() - 1000)}]}))
    assert pinged.status_code == 200  # its token works
    for key in (None, "slow-create-1"):
        faults.once(SLOW_COMMIT, 1, WRITE_OPERATIONS)
        r = merchant.call("POST", "/v1/shipments", shipment_body(7, external_ref=f"slow-{key}"),
                          **({"Idempotency-Key": key} if key else {}))
        faults.reset()
        assert r.status_code == 201, r.body
        listed = merchant.call("GET", "/v1/shipments?limit=100").json_body["items"]
        assert [s["id"] for s in listed if s["external_ref"] == f"slow-{key}"] == [r.json_body["id"]]


def test_a_revoke_whose_commit_was_slow_is_not_answered_as_revoked_meanwhile(merchant: Merchant,
                                                                            faults: Injector) -> None:
    shipment = make_shipment(merchant)
    faults.once(SLOW_COMMIT, 1, frozenset({"TransactWriteItems"}))
    r = merchant.call("POST", f"/v1/shipments/{shipment['id']}/tracking-link/revoke")
    faults.reset()
    assert r.status_code == 200, r.body
    assert merchant.client.http.get(f"/v1/track/{_token(shipment)}").status_code == 404
    assert merchant.client.http.get(f"/v1/track/{r.json_body['tracking_url'].rsplit('/', 1)[1]}").status_code == 200
    kinds = [e["type"] for e in merchant.call("GET", f"/v1/shipments/{shipment['id']}/timeline").json_body["items"]]
    assert kinds.count("tracking_link_revoked") == 1


def test_the_webhook_secret_of_a_slow_first_put_is_still_answered_once(merchant: Merchant, faults: Injector) -> None:
    faults.once(SLOW_COMMIT, 1, frozenset({"PutItem"}))
    r = merchant.call("PUT", "/v1/webhook", {"url": f"https://hooks.example.com/faults/{merchant.id}"})
    faults.reset()
    assert r.status_code == 201 and r.json_body["secret"], r.body


def test_every_transaction_carries_a_token_derived_from_its_items(merchant: Merchant, faults: Injector,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """botocore's retry of a transaction sends the same ClientRequestToken (what lets DynamoDB recognise it);
    two different transactions never share one."""
    sent: list[str] = []

    def spy(request: Any, **_: Any) -> None:
        if request.headers.get("X-Amz-Target", b"").endswith(b"TransactWriteItems"):
            sent.append(json.loads(request.body)["ClientRequestToken"])

    from tests.faults.inject import storage_clients

    for c in storage_clients():
        c.meta.events.register_first("before-send.dynamodb", spy, unique_id="test-token-spy")
    try:
        faults.from_attempt(1, PROVISIONED, frozenset({"TransactWriteItems"}))
        assert merchant.call("POST", "/v1/drivers", {"name": "Throttled"}).status_code == 503
        faults.reset()
        assert len(sent) == 3 and len(set(sent)) == 1 and 1 <= len(sent[0]) <= 36  # 3 attempts, one token
        assert merchant.call("POST", "/v1/drivers", {"name": "Throttled"}).status_code == 201
        assert len(set(sent)) == 2
    finally:
        for c in storage_clients():
            c.meta.events.unregister("before-send.dynamodb", unique_id="test-token-spy")


def test_a_timeout_under_a_conditional_put_is_503_not_an_attribute_error(merchant: Merchant,
                                                                        faults: Injector) -> None:
    """The bug of repository._save_if: PutError wrapping a timeout (its cause has no response dict)."""
    from botocore.exceptions import ReadTimeoutError
    from pynamodb.exceptions import PutError

    from chalicelib.storage.repository import _condition_failed

    assert _condition_failed(PutError("x", ReadTimeoutError(endpoint_url="http://x"))) is False
    driver = make_driver(merchant)
    faults.from_attempt(1, READ_TIMEOUT, frozenset({"PutItem"}))
    r = merchant.client.http.post("/v1/driver/pings", headers=_driver_auth(driver), body=json.dumps(
        {"pings": [{"lat": 47.61, "lng": -122.33, "fix_time": iso(now_ms() - 1000)}]}))
    assert r.status_code == 503, r.body  # advance_position's conditional put timed out
