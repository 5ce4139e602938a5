"""Merchant API behaviour against in-process moto: idempotency, isolation, paging, routes, positions."""

from __future__ import annotations

import json

from openapi_spec_validator import validate

from tests.integration.helpers import (
    iso,
    make_driver,
    make_shipment,
    make_started_route,
    now_ms,
    post_pings,
    shipment_body,
)


def test_idempotent_create_returns_the_first_result(merchant):
    body = shipment_body()
    first = merchant.call("POST", "/v1/shipments", body, **{"Idempotency-Key": "order-1"})
    again = merchant.call("POST", "/v1/shipments", body, **{"Idempotency-Key": "order-1"})
    assert first.status_code == 201 and again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    assert first.json_body["id"] == again.json_body["id"]
    assert first.json_body["tracking_url"] == again.json_body["tracking_url"]
    page = merchant.call("GET", "/v1/shipments").json_body
    assert [s["id"] for s in page["items"]] == [first.json_body["id"]]
    other = merchant.call("POST", "/v1/shipments", shipment_body(2), **{"Idempotency-Key": "order-1"})
    assert other.status_code == 422 and other.json_body["error"]["code"] == "idempotency_key_reused"
    assert len(merchant.call("GET", "/v1/shipments").json_body["items"]) == 1


def test_same_idempotency_key_is_separate_per_merchant(merchant, other_merchant):
    a = merchant.call("POST", "/v1/shipments", shipment_body(), **{"Idempotency-Key": "k"})
    b = other_merchant.call("POST", "/v1/shipments", shipment_body(), **{"Idempotency-Key": "k"})
    assert a.status_code == b.status_code == 201
    assert a.json_body["id"] != b.json_body["id"]


def test_every_id_of_another_merchant_answers_404(merchant, other_merchant):
    driver, ships, route = make_started_route(merchant, shipments=1)
    paths = [
        ("GET", f"/v1/drivers/{driver['id']}"), ("POST", f"/v1/drivers/{driver['id']}/token"),
        ("GET", f"/v1/drivers/{driver['id']}/position"), ("GET", f"/v1/shipments/{ships[0]['id']}"),
        ("POST", f"/v1/shipments/{ships[0]['id']}/cancel"), ("GET", f"/v1/shipments/{ships[0]['id']}/timeline"),
        ("GET", f"/v1/routes/{route['id']}"), ("POST", f"/v1/routes/{route['id']}/start"),
    ]
    for method, path in paths:
        r = other_merchant.call(method, path)
        assert r.status_code == 404, (method, path, r.body)
        assert r.json_body["error"]["code"] == "not_found"
    r = other_merchant.call("POST", "/v1/routes", {"driver_id": driver["id"], "day": "2026-11-21",
                                                   "planned_start": "2026-11-21T08:00:00Z",
                                                   "shipment_ids": [ships[0]["id"]]})
    assert r.status_code == 404
    assert other_merchant.call("GET", "/v1/drivers").json_body["items"] == []
    assert other_merchant.call("GET", "/v1/shipments").json_body["items"] == []
    post_pings(merchant.client, driver["token"], [{"lat": 47.6, "lng": -122.3, "fix_time": iso(now_ms())}])
    assert other_merchant.call("GET", "/v1/drivers/nearby?lat=47.6&lng=-122.3").json_body["items"] == []
    assert len(merchant.call("GET", "/v1/drivers/nearby?lat=47.6&lng=-122.3").json_body["items"]) == 1


def test_list_shipments_by_status_and_date_with_cursor(merchant):
    ids = [make_shipment(merchant, n, delivery_date=f"2026-11-2{n % 2 + 1}")["id"] for n in range(1, 6)]
    seen, cursor = [], None
    while True:
        path = "/v1/shipments?status=created&limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = merchant.call("GET", path).json_body
        seen += [s["id"] for s in page["items"]]
        assert len(page["items"]) <= 2
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert sorted(seen) == sorted(ids)
    day = merchant.call("GET", "/v1/shipments?date_from=2026-11-22&date_to=2026-11-22").json_body["items"]
    assert {s["delivery_date"] for s in day} == {"2026-11-22"} and len(day) == 3
    by_range = merchant.call("GET", "/v1/shipments?status=created&date_from=2026-11-21&date_to=2026-11-21")
    assert len(by_range.json_body["items"]) == 2
    merchant.call("POST", f"/v1/shipments/{ids[0]}/cancel")
    cancelled = merchant.call("GET", "/v1/shipments?status=cancelled").json_body["items"]
    assert [s["id"] for s in cancelled] == [ids[0]]
    # a cursor of one listing is refused by another
    first = merchant.call("GET", "/v1/shipments?status=created&limit=1").json_body["next_cursor"]
    assert merchant.call("GET", f"/v1/shipments?status=cancelled&cursor={first}").status_code == 400


def test_route_lifecycle_and_timeline(merchant):
    driver, ships, route = make_started_route(merchant, shipments=3)
    assert route["status"] == "active" and [s["shipment_id"] for s in route["stops"]] == [s["id"] for s in ships]
    shipment = merchant.call("GET", f"/v1/shipments/{ships[1]['id']}").json_body
    assert shipment["status"] == "out_for_delivery"
    assert shipment["route_id"] == route["id"] and shipment["stop_index"] == 1
    assert shipment["driver_id"] == driver["id"]
    timeline = merchant.call("GET", f"/v1/shipments/{ships[1]['id']}/timeline").json_body["items"]
    assert [e["to_status"] for e in timeline] == ["created", "assigned", "out_for_delivery"]
    again = merchant.call("POST", f"/v1/routes/{route['id']}/start")
    assert again.status_code == 409 and again.json_body["error"]["details"][0]["field"] == "status"
    # a shipment already on a route cannot join another
    r = merchant.call("POST", "/v1/routes", {"driver_id": driver["id"], "day": "2026-11-21",
                                             "planned_start": "2026-11-21T08:00:00Z",
                                             "shipment_ids": [ships[0]["id"]]})
    assert r.status_code == 409
    assert r.json_body["error"]["details"][0]["field"] == "shipment_ids[0]"


def test_cancel_rules(merchant):
    shipment = make_shipment(merchant)
    r = merchant.call("POST", f"/v1/shipments/{shipment['id']}/cancel")
    assert r.status_code == 200 and r.json_body["status"] == "cancelled"
    r = merchant.call("POST", f"/v1/shipments/{shipment['id']}/cancel")
    assert r.status_code == 409 and "cancelled" in r.json_body["error"]["message"]


def test_driver_token_rotation(merchant):
    driver = make_driver(merchant)
    fix = [{"lat": 47.6, "lng": -122.3, "fix_time": iso(now_ms() - 1000)}]
    assert post_pings(merchant.client, driver["token"], fix).status_code == 200
    rotated = merchant.call("POST", f"/v1/drivers/{driver['id']}/token").json_body
    assert rotated["token"] != driver["token"]
    assert post_pings(merchant.client, driver["token"], fix).status_code == 401
    assert post_pings(merchant.client, rotated["token"], fix).json_body["duplicates"] == 1
    listed = merchant.call("GET", "/v1/drivers").json_body["items"]
    assert [d["id"] for d in listed] == [driver["id"]] and "token" not in listed[0]


def test_pings_are_idempotent_ordered_and_position_only_moves_forward(merchant):
    driver = make_driver(merchant)
    t = now_ms() - 60_000
    batch = [{"lat": 47.6 + i * 1e-4, "lng": -122.3, "fix_time": iso(t + i * 5000), "accuracy": 8, "speed": 3.2,
              "heading": 90, "battery": 80} for i in range(10)]
    first = post_pings(merchant.client, driver["token"], batch).json_body
    assert (first["accepted"], first["duplicates"], first["rejected"]) == (10, 0, 0)
    retry = post_pings(merchant.client, driver["token"], batch).json_body
    assert (retry["accepted"], retry["duplicates"]) == (0, 10)
    newest = merchant.call("GET", f"/v1/drivers/{driver['id']}/position").json_body
    assert newest["lat"] == batch[-1]["lat"] and newest["battery"] == 80
    # an older fix arriving late is stored but does not move the latest position back
    late = post_pings(merchant.client, driver["token"], [{"lat": 47.5, "lng": -122.3, "fix_time": iso(t - 30_000)}])
    assert late.json_body["accepted"] == 1
    assert merchant.call("GET", f"/v1/drivers/{driver['id']}/position").json_body["lat"] == batch[-1]["lat"]
    from chalicelib.storage import get_repository

    history = get_repository().ping_history(driver["id"], t - 60_000, t + 60_000, 100)
    assert [int(p.fix_ms) for p in history] == sorted(int(p.fix_ms) for p in history)
    assert len(history) == 11 and all(p.cell and p.expires_at for p in history)


def test_partial_acceptance_reports_each_item(merchant):
    driver = make_driver(merchant)
    t = now_ms()
    r = post_pings(merchant.client, driver["token"], [
        {"lat": 47.6, "lng": -122.3, "fix_time": iso(t - 2000)},
        {"lat": 95, "lng": -122.3, "fix_time": iso(t - 1000)},
        {"lat": 47.6, "lng": -122.3, "fix_time": iso(t + 600_000)},
        {"lat": 47.6, "lng": -122.3, "fix_time": iso(t - 2000)},
    ])
    assert r.status_code == 200
    body = r.json_body
    assert [(i["status"], i["field"]) for i in body["items"]] == [
        ("accepted", None), ("rejected", "lat"), ("rejected", "fix_time"), ("duplicate", None)]
    assert (body["accepted"], body["rejected"], body["duplicates"]) == (1, 2, 1)


def test_nearby_is_exact_and_nearest_first(merchant):
    drivers = [make_driver(merchant, f"D{i}") for i in range(3)]
    t = iso(now_ms() - 1000)
    spots = [(47.6100, -122.3300), (47.6000, -122.3300), (47.7000, -122.3300)]  # ~1.1 km, 0 km, ~11 km
    for driver, (lat, lng) in zip(drivers, spots, strict=True):
        r = post_pings(merchant.client, driver["token"], [{"lat": lat, "lng": lng, "fix_time": t}])
        assert r.status_code == 200
    near = merchant.call("GET", "/v1/drivers/nearby?lat=47.6&lng=-122.33&radius_m=2000").json_body["items"]
    assert [d["driver_id"] for d in near] == [drivers[1]["id"], drivers[0]["id"]]
    assert near[0]["distance_m"] < 1 and 1000 < near[1]["distance_m"] < 1200
    far = merchant.call("GET", "/v1/drivers/nearby?lat=47.6&lng=-122.33&radius_m=20000").json_body["items"]
    assert len(far) == 3


def test_tracking_shows_driver_only_while_out_for_delivery(merchant):
    driver = make_driver(merchant)
    shipment = make_shipment(merchant)
    token = shipment["tracking_url"].rsplit("/", 1)[1]
    post_pings(merchant.client, driver["token"], [{"lat": 47.6, "lng": -122.3, "fix_time": iso(now_ms() - 1000)}])
    view = merchant.client.http.get(f"/v1/track/{token}")
    assert view.status_code == 200 and view.json_body["driver"] is None
    assert view.headers["Referrer-Policy"] == "no-referrer"
    body = view.body.decode() if isinstance(view.body, bytes) else view.body
    for private in ("Lovelace", "+1415", "ada@example.com", "Main St", "Gate code"):
        assert private not in body
    assert view.json_body["shipment"]["recipient_first_name"] == "Ada"
    driver2, ships, _ = make_started_route(merchant, shipments=1)
    post_pings(merchant.client, driver2["token"], [{"lat": 47.61, "lng": -122.31, "fix_time": iso(now_ms() - 500)}])
    token2 = ships[0]["tracking_url"].rsplit("/", 1)[1]
    live = merchant.client.http.get(f"/v1/track/{token2}").json_body
    assert live["status"] == "out_for_delivery" and live["driver"]["lat"] == 47.61
    merchant.call("POST", f"/v1/shipments/{ships[0]['id']}/cancel")
    assert merchant.client.http.get(f"/v1/track/{token2}").json_body["driver"] is None


def test_openapi_document_is_valid_3_1(client):
    r = client.http.get("/openapi.json")
    assert r.status_code == 200
    doc = json.loads(r.body)
    assert doc["openapi"].startswith("3.1")
    validate(doc)
    assert "/v1/driver/pings" in doc["paths"] and "/v1/shipments" in doc["paths"]
    ping_body = doc["paths"]["/v1/driver/pings"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert ping_body == {"$ref": "#/components/schemas/PingBatch"}
    assert doc["components"]["schemas"]["PingBatch"]["properties"]["pings"]["maxItems"] == 500
    # Every route that answers CSV says so, and takes the Accept header that asks for it.
    for path in ("/v1/analytics/deliveries", "/v1/drivers/{driver_id}/reports/trips",
                 "/v1/drivers/{driver_id}/reports/stops", "/v1/drivers/{driver_id}/reports/summary",
                 "/v1/drivers/{driver_id}/behaviour-events", "/v1/reports/scorecard", "/v1/opt-outs"):
        operation = doc["paths"][path]["get"]
        assert set(operation["responses"]["200"]["content"]) == {"application/json", "text/csv"}, path
        if path != "/v1/opt-outs":  # that one asks with ?format=csv
            assert {"name": "Accept", "in": "header", "required": False, "schema": {"type": "string"}} in \
                operation["parameters"], path


def test_cli_creates_merchant_and_prints_key_once(client, capsys):
    from chalicelib import cli

    assert cli.main(["create-merchant", "--name", "CLI Shop", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    r = client.http.get("/v1/drivers", headers={"Authorization": f"Bearer {out['api_key']}"})
    assert r.status_code == 200
