"""OsmAnd / Traccar Client and OwnTracks through the app: the same ingest as the native ping API."""

from __future__ import annotations

import base64
import json
import time

from tests.integration.helpers import make_driver


def _now_s() -> int:
    return int(time.time())


def _position(merchant, driver):
    return merchant.call("GET", f"/v1/drivers/{driver['id']}/position")


def test_osmand_query_form_post_form_and_json_store_pings(merchant):
    client = merchant.client
    driver = make_driver(merchant)
    t = _now_s() - 120
    r = client.http.get(f"/osmand?id={driver['token']}&lat=47.6&lon=-122.3&timestamp={t}&speed=10&hdop=8&batt=80")
    assert (r.status_code, r.body) == (200, b"")
    position = _position(merchant, driver).json_body
    assert position["lat"] == 47.6 and abs(position["speed"] - 5.14444) < 1e-3  # knots -> m/s
    r = client.http.post("/osmand", headers={"Content-Type": "application/x-www-form-urlencoded"},
                         body=f"id={driver['token']}&lat=47.601&lon=-122.3&timestamp={t + 30}")
    assert r.status_code == 200
    assert _position(merchant, driver).json_body["lat"] == 47.601
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t + 60))
    body = {"device_id": driver["token"], "location": {
        "timestamp": stamp, "coords": {"latitude": 47.602, "longitude": -122.3, "accuracy": 5, "speed": 3},
        "is_moving": True}}
    r = client.http.post("/osmand", headers={"Content-Type": "application/json"}, body=json.dumps(body))
    assert r.status_code == 200, r.body
    assert _position(merchant, driver).json_body["lat"] == 47.602


def test_osmand_refuses_missing_and_unknown_ids_and_garbage(merchant):
    client = merchant.client
    r = client.http.get("/osmand?lat=47.6&lon=-122.3")
    assert r.status_code == 400 and json.loads(r.body)["error"]["details"][0]["field"] == "id"
    assert client.http.get("/osmand?id=nobody-knows-me&lat=47.6&lon=-122.3").status_code == 400
    driver = make_driver(merchant)
    r = client.http.get(f"/osmand?id={driver['token']}&lat=north&lon=-122.3")
    assert r.status_code == 400 and json.loads(r.body)["error"]["details"][0]["field"] == "lat"
    assert _position(merchant, driver).status_code == 404  # nothing stored


def test_a_registered_device_id_maps_to_its_driver_only(merchant, other_merchant):
    driver = make_driver(merchant)
    device_id = "Qm7x-T2rk-9vWc-LpZ4-h8Ns"
    registered = merchant.call("PUT", f"/v1/drivers/{driver['id']}/device-id", {"device_id": device_id})
    assert registered.status_code == 204
    assert merchant.call("PUT", f"/v1/drivers/{driver['id']}/device-id",
                         {"device_id": device_id}).status_code == 204  # again: a no-op
    r = merchant.client.http.get(f"/osmand?id={device_id}&lat=47.6&lon=-122.3&timestamp={_now_s() - 10}")
    assert r.status_code == 200
    assert _position(merchant, driver).json_body["lat"] == 47.6
    other = make_driver(other_merchant)
    taken = other_merchant.call("PUT", f"/v1/drivers/{other['id']}/device-id", {"device_id": device_id})
    weak = other_merchant.call("PUT", f"/v1/drivers/{other['id']}/device-id", {"device_id": "phone-12345"})
    # Another merchant cannot take the device over, and cannot tell it exists: the answer is an unusable id's.
    assert (taken.status_code, taken.json_body) == (weak.status_code, weak.json_body) == (422, weak.json_body)
    assert weak.json_body["error"]["details"][0]["field"] == "device_id"
    second = make_driver(merchant, "Second Driver")
    r = merchant.call("PUT", f"/v1/drivers/{second['id']}/device-id", {"device_id": device_id})
    assert r.status_code == 409  # the merchant's own other driver: its own data, said plainly
    assert merchant.call("PUT", "/v1/drivers/drv_nope/device-id",
                         {"device_id": "Zr4k-8Pq2-Wn6t-Hy3m-Cx9v"}).status_code == 404


def test_the_api_generates_a_device_id_once_and_the_tracker_app_uses_it(merchant):
    driver = make_driver(merchant)
    r = merchant.client.http.post(f"/v1/drivers/{driver['id']}/device-id", headers=merchant.headers(), body="")
    assert r.status_code == 201 and r.headers["Cache-Control"] == "no-store", r.body
    generated = r.json_body["device_id"]
    assert r.json_body["driver_id"] == driver["id"]
    assert len(generated.replace("-", "")) == 20  # 100 bits of base32
    again = merchant.call("POST", f"/v1/drivers/{driver['id']}/device-id").json_body["device_id"]
    assert again != generated  # each call makes a new one; both work
    for device_id, lat, age in ((generated, 47.61, 20), (again, 47.6101, 10)):
        r = merchant.client.http.get(f"/osmand?id={device_id}&lat={lat}&lon=-122.3&timestamp={_now_s() - age}")
        assert r.status_code == 200, r.body
    assert _position(merchant, driver).json_body["lat"] == 47.6101
    assert merchant.call("POST", "/v1/drivers/drv_nope/device-id").status_code == 404


def test_short_or_patterned_device_ids_are_refused_naming_device_id(merchant):
    driver = make_driver(merchant)
    for weak in ("1234", "123456", "356938035643809", "phone-12345", "abababababababababababab",
                 "0123456789abcdef0123"):
        r = merchant.call("PUT", f"/v1/drivers/{driver['id']}/device-id", {"device_id": weak})
        assert r.status_code == 422, weak
        assert r.json_body["error"]["details"][0]["field"] == "device_id", r.json_body


def test_ids_too_weak_to_register_stand_for_nobody_even_if_stored_before(merchant):
    """A short id registered before the rule (stored by the old code) no longer works: it is refused unread."""
    from chalicelib.core.security import hash_secret
    from chalicelib.storage import get_repository

    driver = make_driver(merchant)
    assert get_repository().register_device(merchant.id, driver["id"], hash_secret("4711")) is None
    r = merchant.client.http.get(f"/osmand?id=4711&lat=47.6&lon=-122.3&timestamp={_now_s() - 10}")
    assert r.status_code == 400
    assert _position(merchant, driver).status_code == 404


def test_failed_tracker_attempts_are_limited_per_source(merchant, monkeypatch):
    from chalice.local import LambdaEventConverter

    from chalicelib.fleet import service
    from chalicelib.fleet.rules import TRACKER_FAILURES

    client = merchant.client
    driver = make_driver(merchant)
    # The container's memory of blocked sources outlives the table: the DynamoDB Local run of this test, minutes
    # earlier in the session and within the same window, blocked this address already.
    monkeypatch.setattr(service, "_BLOCKED", {})
    monkeypatch.setattr(LambdaEventConverter, "LOCAL_SOURCE_IP", "198.51.100.7")
    answers = [client.http.get(f"/osmand?id=unknown-{n:04d}-{'x' * 20}&lat=47.6&lon=-122.3").status_code
               for n in range(TRACKER_FAILURES.failures + 3)]
    assert answers == [400] * TRACKER_FAILURES.failures + [429] * 3
    r = client.http.get("/osmand?id=one-more-unknown-id-xxxxxxxxxxxx&lat=47.6&lon=-122.3")
    assert r.status_code == 429 and 1 <= int(r.headers["Retry-After"]) <= TRACKER_FAILURES.window_s
    assert json.loads(r.body)["error"]["code"] == "too_many_failures"
    wrong = {"Authorization": _basic(driver["id"], "wrong"), "Content-Type": "application/json"}
    assert client.http.post("/owntracks", headers=wrong, body="{}").status_code == 429
    # A valid id from the same (shared, carrier-NAT) address still works: only failures are limited.
    r = client.http.get(f"/osmand?id={driver['token']}&lat=47.6&lon=-122.3&timestamp={_now_s() - 10}")
    assert r.status_code == 200
    # Another address is not affected.
    monkeypatch.setattr(LambdaEventConverter, "LOCAL_SOURCE_IP", "198.51.100.8")
    assert client.http.get("/osmand?id=another-unknown-id-xxxxxxxxxxxxx&lat=1&lon=2").status_code == 400


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_owntracks_locations_transitions_and_answers(merchant):
    client = merchant.client
    driver = make_driver(merchant)
    auth = {"Authorization": _basic(driver["id"], driver["token"]), "Content-Type": "application/json"}
    location = {"_type": "location", "lat": "47.61", "lon": -122.33, "tst": _now_s() - 60, "acc": 12, "vel": 36}
    r = client.http.post("/owntracks", headers=auth, body=json.dumps(location))
    assert (r.status_code, r.body) == (200, b"[]") and r.headers["Content-Type"] == "application/json"
    position = _position(merchant, driver).json_body
    assert position["lat"] == 47.61 and position["speed"] == 10.0  # km/h -> m/s
    assert client.http.post("/owntracks", headers=auth, body="").body == b"[]"  # zero-length: ignored
    transition = {"_type": "transition", "event": "enter", "desc": "Depot", "tst": _now_s() - 30,
                  "lat": 47.61, "lon": -122.33, "acc": 10}
    assert client.http.post("/owntracks", headers=auth, body=json.dumps(transition)).status_code == 200
    events = merchant.call("GET", f"/v1/drivers/{driver['id']}/zone-events").json_body["items"]
    assert [(e["type"], e["zone_name"]) for e in events] == [("enter", "Depot")]
    assert client.http.post("/owntracks", headers=auth, body="{not json").status_code == 400


def test_owntracks_wrong_credentials_are_401_and_store_nothing(merchant):
    client = merchant.client
    driver = make_driver(merchant)
    other = make_driver(merchant, "Other Driver")
    location = json.dumps({"_type": "location", "lat": 47.61, "lon": -122.33, "tst": _now_s() - 60})
    for header in (_basic(driver["id"], "wrong"), _basic(other["id"], driver["token"]), "Basic !!!", "Bearer x", None):
        headers = {"Content-Type": "application/json", **({"Authorization": header} if header else {})}
        r = client.http.post("/owntracks", headers=headers, body=location)
        assert r.status_code == 401 and "Basic" in r.headers.get("WWW-Authenticate", ""), header
    assert _position(merchant, driver).status_code == 404


def test_bad_device_ids_are_422_naming_the_field(merchant):
    driver = make_driver(merchant)
    for body in ({"device_id": "abc"}, {"device_id": "has space"}, {"device": "phone-1"}, {"device_id": 12345}):
        r = merchant.call("PUT", f"/v1/drivers/{driver['id']}/device-id", body)
        assert r.status_code == 422, body
        assert r.json_body["error"]["details"][0]["field"] in ("device_id", "device"), r.json_body


def test_no_token_or_device_id_reaches_the_app_logs(merchant, capsys, caplog):
    """Every tracker path, with every way of carrying the secret, answered or refused: the captured app output
    and log records never contain the driver's token or a device id (the local stack's own access log is
    checked in tests/e2e/test_log_redaction.py)."""
    import logging

    caplog.set_level(logging.DEBUG)
    client = merchant.client
    driver = make_driver(merchant)
    device = merchant.call("POST", f"/v1/drivers/{driver['id']}/device-id").json_body["device_id"]
    unknown = "Unknown-Device-7f3k-9q2m-x8w4"
    t = _now_s()
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    for secret in (driver["token"], device, unknown):
        client.http.get(f"/osmand?id={secret}&lat=47.61&lon=-122.33&timestamp={t - 30}")
        client.http.get(f"/osmand?deviceid={secret}&lat=47.61&lon=-122.33&timestamp={t - 29}")
        client.http.post(f"/osmand?id={secret}&lat=47.61&lon=-122.33&timestamp={t - 28}", headers=form, body="")
        client.http.post("/osmand", headers=form, body=f"id={secret}&lat=47.61&lon=-122.33&timestamp={t - 27}")
        client.http.post("/osmand", headers={"Content-Type": "application/json"}, body=json.dumps(
            {"device_id": secret, "location": {"timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t - 26)),
                                               "coords": {"latitude": 47.61, "longitude": -122.33}}}))
        client.http.get(f"/osmand?id={secret}&lat=north&lon=-122.33")  # refused: a 400 naming lat
        client.http.post("/owntracks", headers={"Authorization": _basic(driver["id"], secret),
                                                "Content-Type": "application/json"},
                         body=json.dumps({"_type": "location", "lat": 47.61, "lon": -122.33, "tst": t - 25}))
    client.http.post("/v1/driver/pings", headers={"Authorization": f"Bearer {driver['token']}",
                                                  "Content-Type": "application/json"},
                     body=json.dumps({"pings": [{"lat": 47.61, "lng": -122.33, "fix_time": t - 24}]}))
    captured = capsys.readouterr()
    logged = "\n".join([captured.out, captured.err, caplog.text, *(repr(r.__dict__) for r in caplog.records)])
    assert "/osmand" in logged  # the requests were logged (by route), ...
    for secret in (driver["token"], device, unknown):
        assert secret not in logged  # ... without the secrets
