"""Regression tests for the hostile inputs and contract drift the black-box fuzz runs found (issue 12), with the
exact payloads: each reached a 500 (or was silently accepted) before the edge hardening."""

from __future__ import annotations

import base64
import json
import re
import threading
from typing import Any

import pytest

from tests.integration.helpers import iso, make_driver, make_shipment, now_ms, post_pings, shipment_body
from tests.integration.test_errors import assert_error

DEEP_100KB = "[" * 50_000 + "]" * 50_000


def _json_routes() -> list[Any]:
    from chalicelib.http.routes import SPECS

    return [spec for spec in SPECS if spec.reads_body]


def _concrete(path: str, ids: dict[str, str]) -> str:
    return re.sub(r"{(\w+)}", lambda m: ids.get(m.group(1), "x"), path)


def test_deeply_nested_json_is_400_on_every_json_route_and_owntracks(merchant):
    driver = make_driver(merchant)
    ship = make_shipment(merchant)
    ids = {"driver_id": driver["id"], "shipment_id": ship["id"]}
    routes = _json_routes()
    assert len(routes) >= 13
    for spec in routes:
        token = driver["token"] if spec.auth == "driver" else merchant.key
        r = merchant.client.http.request(spec.method, _concrete(spec.path, ids), body=DEEP_100KB, headers={
            "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        error = assert_error(r, 400, "bad_request", "body")
        assert "nested deeper than 32 levels" in error["details"][0]["reason"], (spec.path, error)
    r = merchant.client.http.post("/owntracks", body=DEEP_100KB, headers={
        "Authorization": _basic(driver["id"], driver["token"]), "Content-Type": "application/json"})
    assert_error(r, 400, "bad_request", "body")


def test_a_ping_dynamodb_cannot_store_is_one_rejected_item_not_a_failed_batch(merchant):
    driver = make_driver(merchant)
    t = now_ms() - 60_000
    r = post_pings(merchant.client, driver["token"], [
        {"lat": 1e-200, "lng": -122.33, "fix_time": iso(t)},
        {"lat": 47.61, "lng": -122.33, "fix_time": iso(t + 1000), "accuracy": 1e-200},
        {"lat": 47.61, "lng": -122.33, "fix_time": iso(t + 2000), "speed": 1e300},
        {"lat": 47.61, "lng": -122.33, "fix_time": iso(t + 3000)},
    ])
    assert r.status_code == 200, r.body
    body = r.json_body
    assert (body["accepted"], body["rejected"]) == (1, 3)
    assert [(i["status"], i["field"]) for i in body["items"]] == [
        ("rejected", "lat"), ("rejected", "accuracy"), ("rejected", "speed"), ("accepted", None)]
    # a retry of the same batch is answered the same way, never a 500 the phone would retry forever
    again = post_pings(merchant.client, driver["token"], [{"lat": 1e-200, "lng": -122.33, "fix_time": iso(t)}])
    assert again.status_code == 200 and again.json_body["rejected"] == 1


@pytest.mark.parametrize(("location", "field"), [({"lat": 1e-200, "lng": 1}, "location.lat"),
                                                 ({"lat": 1, "lng": -1e-131}, "location.lng")])
def test_a_shipment_number_dynamodb_cannot_store_is_422_naming_it(merchant, location, field):
    r = merchant.call("POST", "/v1/shipments", shipment_body(location=location))
    error = assert_error(r, 422, "validation_failed", field)
    assert "out of range" in error["details"][0]["reason"]


def test_a_time_window_in_year_1_is_422_naming_the_field(merchant):
    r = merchant.call("POST", "/v1/shipments", shipment_body(
        time_window={"start": "0001-01-01T00:00:00+14:00", "end": "2026-11-21T18:00:00Z"}))
    assert_error(r, 422, "validation_failed", "time_window.start")
    r = merchant.call("POST", "/v1/shipments", shipment_body(
        time_window={"start": "2026-11-21T16:00:00Z", "end": "9999-12-31T23:59:59-14:00"}))
    assert_error(r, 422, "validation_failed", "time_window.end")
    r = merchant.call("POST", "/v1/shipments", shipment_body(delivery_date="0001-01-01"))
    assert_error(r, 422, "validation_failed", "delivery_date")


def test_a_huge_integer_in_notification_settings_is_422_naming_the_field(merchant):
    raw = '{"policy": {"max_age_minutes": {"approaching": 1' + "0" * 400 + "}}}"
    r = merchant.call("PUT", "/v1/notifications/settings", raw)
    error = assert_error(r, 422, "validation_failed", "policy.max_age_minutes.approaching")
    assert "integer out of range" in error["details"][0]["reason"]
    assert merchant.call("GET", "/v1/notifications/settings").json_body["policy"]["max_age_minutes"] == {}


@pytest.mark.parametrize(("body", "field"), [({"policy": 54675663}, "policy"), ({"templates": [1]}, "templates"),
                                             ({"templates": 9100, "policy": -1153}, "policy")])
def test_odd_json_types_in_notification_settings_are_422_naming_the_field(merchant, body, field):
    assert_error(merchant.call("PUT", "/v1/notifications/settings", body), 422, "validation_failed", field)


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_an_owntracks_transition_with_a_lone_surrogate_is_422_and_stores_nothing(merchant):
    driver = make_driver(merchant)
    auth = {"Authorization": _basic(driver["id"], driver["token"]), "Content-Type": "application/json"}
    transition = {"_type": "transition", "event": "enter", "desc": "\ud800", "tst": now_ms() // 1000,
                  "lat": 47.61, "lon": -122.33, "acc": 10}
    r = merchant.client.http.post("/owntracks", headers=auth, body=json.dumps(transition))
    assert_error(r, 422, "validation_failed", "desc")
    events = merchant.call("GET", f"/v1/drivers/{driver['id']}/zone-events").json_body["items"]
    assert events == []
    ok = merchant.client.http.post("/owntracks", headers=auth, body=json.dumps({**transition, "desc": "Depot"}))
    assert ok.status_code == 200


@pytest.mark.parametrize("text", ["\ud800", "a\x00b", "\x1b[2J", "\x7f", "\ufffe"])
def test_text_with_lone_surrogates_or_control_characters_is_422_naming_the_field(merchant, text):
    r = merchant.call("POST", "/v1/shipments", shipment_body(instructions=text))
    assert_error(r, 422, "validation_failed", "instructions")
    r = merchant.call("POST", "/v1/drivers", {"name": "Dana", "external_ref": text})
    assert_error(r, 422, "validation_failed", "external_ref")


def test_multi_line_instructions_are_still_accepted(merchant):
    r = merchant.call("POST", "/v1/shipments", shipment_body(instructions="Gate 1234\r\nRing twice\tthen wait"))
    assert r.status_code == 201, r.body


@pytest.mark.parametrize(("raw", "reason"), [
    ('{"name": "A", "name": "B"}', "appears twice"),
    (b'\xef\xbb\xbf{"name": "A"}', "byte order mark"),
    ('{"name": "A", "phone": NaN}', "NaN"),
    ('{"name": "A"}'.encode("utf-16"), "not UTF-8"),
])
def test_duplicate_keys_a_bom_nan_and_utf16_are_400(merchant, raw, reason):
    error = assert_error(merchant.call("POST", "/v1/drivers", raw), 400, "bad_request", "body")
    assert reason in error["details"][0]["reason"]
    assert merchant.call("GET", "/v1/drivers").json_body["items"] == []


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/json; charset=latin-1"])
def test_a_body_not_declared_as_utf8_json_is_415(merchant, content_type):
    headers = {"Authorization": f"Bearer {merchant.key}"}
    if content_type:
        headers["Content-Type"] = content_type
    r = merchant.client.http.post("/v1/drivers", headers=headers, body=json.dumps({"name": "Dana"}))
    assert_error(r, 415, "unsupported_media_type", "Content-Type")
    driver = make_driver(merchant)
    r = merchant.client.http.post("/v1/driver/pings", headers={"Authorization": f"Bearer {driver['token']}"},
                                  body=json.dumps({"pings": [{"lat": 1, "lng": 1, "fix_time": iso(now_ms())}]}))
    assert_error(r, 415, "unsupported_media_type", "Content-Type")


def test_an_optional_body_may_be_omitted_without_a_content_type(merchant):
    driver = make_driver(merchant)
    r = merchant.client.http.post(f"/v1/drivers/{driver['id']}/app-link",
                                  headers={"Authorization": f"Bearer {merchant.key}"})
    assert r.status_code == 201, r.body


@pytest.mark.parametrize(("query", "field"), [
    ("/v1/shipments?date_to=0", "date_to"), ("/v1/shipments?date_from=1763629200", "date_from"),
    ("/v1/shipments?date_from=0001-01-01", "date_from"), ("/v1/webhook/deliveries?to=0.5", "to"),
    ("/v1/webhook/deliveries?from=1763629200", "from"), ("/v1/webhook/deliveries?from=2026-11-21", "from"),
    ("/v1/shipments?limit=1&limit=2", "limit"), ("/v1/drivers?cursor=a%00b", "cursor"),
    ("/v1/drivers?limit=1.0", "limit"), ("/v1/zones?limit=%2B5", "limit"),
])
def test_query_parameters_are_parsed_strictly(merchant, query, field):
    assert_error(merchant.call("GET", query), 422, "validation_failed", field)
    assert merchant.call("GET", "/v1/shipments?date_from=2026-11-01&date_to=2026-11-30").status_code == 200
    assert merchant.call("GET", "/v1/webhook/deliveries?from=2026-11-21T00:00:00Z").status_code == 200


@pytest.mark.parametrize("method", ["TRACE", "CONNECT", "PROPFIND", "PATCH"])
def test_an_unknown_method_is_the_json_405_with_allow(merchant, method):
    r = merchant.client.http.request(method, "/v1/shipments", headers=merchant.headers())
    assert_error(r, 405, "method_not_allowed")
    assert set(r.headers["Allow"].replace(" ", "").split(",")) == {"GET", "POST"}


def test_chalice_local_answers_trace_with_the_json_405_not_a_501_page(chalice_app):
    import http.client

    from chalice.config import Config
    from chalice.local import ChaliceRequestHandler, LocalDevServer

    from infra.local.api_server import accept_every_method

    class Handler(ChaliceRequestHandler):  # patched alone, so this test leaves chalice's own class as it was
        pass

    def ask(handler: type) -> tuple[int, str, bytes]:
        server = LocalDevServer(chalice_app, Config(), "127.0.0.1", 0, handler_cls=handler)
        thread = threading.Thread(target=server.handle_single_request, daemon=True)
        thread.start()
        connection = http.client.HTTPConnection("127.0.0.1", server.server.server_address[1], timeout=10)
        connection.request("TRACE", "/v1/shipments")
        answer = connection.getresponse()
        result = answer.status, answer.getheader("Content-Type") or "", answer.read()
        connection.close()
        thread.join(10)
        server.server.server_close()
        return result

    status, content_type, _ = ask(Handler)
    assert (status, content_type.split(";")[0]) == (501, "text/html")  # what `chalice local` does alone
    status, content_type, body = ask(accept_every_method(Handler))
    assert (status, content_type) == (405, "application/json")
    assert json.loads(body)["error"]["code"] == "method_not_allowed"


@pytest.mark.parametrize(("body", "field"), [
    ({"status": "failed", "occurred_at": "2026-11-21T16:00:00Z"}, "reason"),
    ({"status": "arrived", "occurred_at": "2026-11-21T16:00:00Z", "reason": "not_home"}, "reason"),
    ({"status": "arrived", "occurred_at": "2026-11-21T16:00:00Z", "recipient_name": "Ada"}, "recipient_name"),
    ({"status": "failed", "occurred_at": "2026-11-21T16:00:00Z", "reason": "refused", "contactless": True},
     "contactless"),
])
def test_a_driver_status_refusal_names_the_field_at_fault(merchant, body, field):
    driver = make_driver(merchant)
    ship = make_shipment(merchant)
    r = merchant.client.http.post(f"/v1/driver/shipments/{ship['id']}/status", body=json.dumps(body), headers={
        "Authorization": f"Bearer {driver['token']}", "Content-Type": "application/json"})
    error = assert_error(r, 422, "validation_failed", field)
    assert [d["field"] for d in error["details"]] == [field]


@pytest.mark.parametrize(("options", "field"), [
    ({"windows": [{"id": "am", "start_time": "12:00", "end_time": "09:00"}]}, "reschedule_options.windows.0.end_time"),
    ({"weekdays": [1, 1]}, "reschedule_options.weekdays"),
    ({"windows": [{"id": "am", "start_time": "08:00", "end_time": "09:00"},
                  {"id": "am", "start_time": "10:00", "end_time": "11:00"}]}, "reschedule_options.windows"),
])
def test_a_settings_refusal_names_the_field_at_fault(merchant, options, field):
    assert_error(merchant.call("PUT", "/v1/settings", {"reschedule_options": options}), 422, "validation_failed",
                 field)


def test_openapi_documents_every_answer_of_the_edge(client):
    from openapi_spec_validator import validate

    doc = json.loads(client.http.get("/openapi.json").body)
    validate(doc)
    paths = doc["paths"]
    assert set(paths["/v1/drivers/{driver_id}/app-link/revoke"]["post"]["responses"]) >= {"204", "404"}
    assert "content" not in paths["/v1/drivers/{driver_id}/app-link/revoke"]["post"]["responses"]["204"]
    assert "204" in paths["/v1/drivers/{driver_id}/device-id"]["put"]["responses"]
    create = paths["/v1/shipments"]["post"]["responses"]
    assert {"200", "201"} <= set(create)
    assert set(create["200"]["headers"]) == {"Location", "Idempotent-Replayed"}
    assert {"200", "201"} <= set(paths["/v1/webhook"]["put"]["responses"])
    for path, operations in paths.items():
        for method, operation in operations.items():
            statuses = set(operation["responses"])
            assert "503" in statuses, (method, path)
            if "security" in operation:
                assert "401" in statuses, (method, path)
            if "requestBody" in operation:
                assert {"400", "413", "415", "422"} <= statuses, (method, path)
            if any(p["in"] == "query" for p in operation.get("parameters", [])):
                assert "422" in statuses, (method, path)
    fix_time = doc["components"]["schemas"]["PingIn"]["properties"]["fix_time"]
    assert {"type": "number", "minimum": 0} | fix_time["anyOf"][1] == fix_time["anyOf"][1]
