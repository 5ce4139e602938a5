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
    registered = merchant.call("PUT", f"/v1/drivers/{driver['id']}/device-id", {"device_id": "phone-12345"})
    assert registered.status_code == 204
    r = merchant.client.http.get(f"/osmand?id=phone-12345&lat=47.6&lon=-122.3&timestamp={_now_s() - 10}")
    assert r.status_code == 200
    assert _position(merchant, driver).json_body["lat"] == 47.6
    other = make_driver(other_merchant)
    r = other_merchant.call("PUT", f"/v1/drivers/{other['id']}/device-id", {"device_id": "phone-12345"})
    assert r.status_code == 409  # another merchant cannot take over the device
    assert merchant.call("PUT", "/v1/drivers/drv_nope/device-id", {"device_id": "phone-99"}).status_code == 404


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
