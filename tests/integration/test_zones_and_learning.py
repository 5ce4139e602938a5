"""Merchant settings, polygon zones, and what the pipeline learns: speeds per cell, service time per merchant."""

from __future__ import annotations

import math
from datetime import datetime

import boto3
import pytest

from tests.conftest import TEST_ENV
from tests.integration.helpers import iso, make_driver, make_shipment, now_ms, post_pings
from tests.integration.test_pipeline import STOP, drain, drive_park_leave, offset, runner  # noqa: F401

DEPOT = (47.6100, -122.3400)


def square(center: tuple[float, float], half_m: float) -> dict:
    (s, w), (n, e) = offset(*center, -half_m, -half_m), offset(*center, half_m, half_m)
    return {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]}


def start_route(merchant, driver, shipments, start_ms: int) -> dict:
    route = merchant.call("POST", "/v1/routes", {"driver_id": driver["id"], "day": iso(now_ms())[:10],
                                                 "planned_start": iso(start_ms),
                                                 "shipment_ids": [s["id"] for s in shipments]}).json_body
    assert merchant.call("POST", f"/v1/routes/{route['id']}/start").status_code == 200
    return route


def send(merchant, driver, fixes) -> None:
    for start in range(0, len(fixes), 10):
        assert post_pings(merchant.client, driver["token"], fixes[start:start + 10]).json_body["rejected"] == 0


def timeline_kinds(merchant, shipment_id: str) -> list[str]:
    return [e["type"] for e in merchant.call("GET", f"/v1/shipments/{shipment_id}/timeline").json_body["items"]]


# --- settings ------------------------------------------------------------------------


def test_settings_default_replace_and_refuse_bad_values(merchant, other_merchant):
    defaults = merchant.call("GET", "/v1/settings").json_body
    pipeline = {k: defaults[k] for k in ("stop_radius_m", "dwell_after_s", "approach_minutes", "approach_metres")}
    assert pipeline == {"stop_radius_m": 75.0, "dwell_after_s": 120.0, "approach_minutes": 5.0,
                        "approach_metres": 500.0}
    assert defaults["link_expiry_days"] == 7  # tracking page settings: tests/integration/test_tracking_page.py
    assert defaults["early_arrival"] == "deliver"  # drivers deliver before a window opens unless told to wait
    patched = merchant.call("PATCH", "/v1/settings", {"early_arrival": "at_noon"})
    assert patched.status_code == 422 and patched.json_body["error"]["details"][0]["field"] == "early_arrival"
    r = merchant.call("PUT", "/v1/settings", {"stop_radius_m": 120, "approach_minutes": 0})
    assert r.status_code == 200 and r.json_body["stop_radius_m"] == 120 and r.json_body["approach_metres"] == 500
    assert merchant.call("GET", "/v1/settings").json_body == r.json_body
    assert other_merchant.call("GET", "/v1/settings").json_body == defaults  # per merchant
    for body, field in (({"stop_radius_m": 5}, "stop_radius_m"), ({"approach_minutes": -1}, "approach_minutes"),
                        ({"dwell_after_s": "long"}, "dwell_after_s"), ({"radius": 50}, "radius"),
                        ({"early_arrival": "sometimes"}, "early_arrival"), ({"early_arrival": None}, "early_arrival")):
        bad = merchant.call("PUT", "/v1/settings", body)
        assert bad.status_code == 422, body
        assert bad.json_body["error"]["details"][0]["field"] == field
    assert merchant.call("GET", "/v1/settings").json_body == r.json_body  # nothing changed by the refusals


def test_shipment_geofence_radius_is_kept_and_checked(merchant):
    shipment = make_shipment(merchant, 1, geofence_radius_m=150)
    assert shipment["geofence_radius_m"] == 150
    assert merchant.call("GET", f"/v1/shipments/{shipment['id']}").json_body["geofence_radius_m"] == 150
    from tests.integration.helpers import shipment_body

    bad = merchant.call("POST", "/v1/shipments", shipment_body(2, geofence_radius_m=5))
    assert bad.status_code == 422 and bad.json_body["error"]["details"][0]["field"] == "geofence_radius_m"


# --- zones ---------------------------------------------------------------------------


def test_zone_create_list_get_delete_and_tenant_isolation(merchant, other_merchant):
    r = merchant.call("POST", "/v1/zones", {"name": "North depot", "kind": "depot", "geometry": square(DEPOT, 150)})
    assert r.status_code == 201, r.body
    zone = r.json_body
    assert zone["id"].startswith("zon_") and zone["kind"] == "depot" and zone["cells"] >= 1
    assert r.headers["Location"] == f"/v1/zones/{zone['id']}"
    assert merchant.call("GET", f"/v1/zones/{zone['id']}").json_body == zone
    assert [z["id"] for z in merchant.call("GET", "/v1/zones").json_body["items"]] == [zone["id"]]
    assert other_merchant.call("GET", f"/v1/zones/{zone['id']}").status_code == 404
    assert other_merchant.call("DELETE", f"/v1/zones/{zone['id']}").status_code == 404
    assert merchant.call("DELETE", f"/v1/zones/{zone['id']}").status_code == 204
    assert merchant.call("GET", f"/v1/zones/{zone['id']}").status_code == 404
    assert merchant.call("GET", "/v1/zones").json_body["items"] == []


@pytest.mark.parametrize(("geometry", "field"), [
    ({"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [0, 0]]]}, "geometry.coordinates.0"),  # 2 distinct points
    ({"type": "Polygon", "coordinates": [[[0, 95], [1, 1], [2, 0], [0, 95]]]},
     "geometry.coordinates.0.0"),  # latitude out of range
    ({"type": "Point", "coordinates": [0, 0]}, "geometry.type"),
    ({"type": "Polygon", "coordinates": [[[-10, -10], [10, -10], [10, 10], [-10, 10]]]},
     "geometry.coordinates.0"),  # not closed
    ({"type": "Polygon", "coordinates": [[[-10, -10], [10, -10], [10, 10], [-10, 10], [-10, -10]]]},
     "geometry"),  # a country
])
def test_bad_zone_geometry_is_422_naming_the_field(merchant, geometry, field):
    r = merchant.call("POST", "/v1/zones", {"name": "bad", "geometry": geometry})
    assert r.status_code == 422, r.body
    assert r.json_body["error"]["details"][0]["field"] == field


def test_a_driver_without_route_gets_zone_enter_dwell_exit_once(merchant, runner):  # noqa: F811
    zone = merchant.call("POST", "/v1/zones", {"name": "North depot", "kind": "depot",
                                               "geometry": square(DEPOT, 150)}).json_body
    driver = make_driver(merchant)
    t = now_ms() - 3_600_000
    fixes = []
    for d in range(1000, -1, -100):  # drive in from 1 km south, park 5 minutes, drive out east
        fixes.append({"lat": offset(*DEPOT, -d, 0)[0], "lng": DEPOT[1], "fix_time": iso(t), "accuracy": 8})
        t += 10_000
    for i in range(30):
        lat, lng = offset(*DEPOT, 20 * math.sin(i), 20 * math.cos(i))
        fixes.append({"lat": lat, "lng": lng, "fix_time": iso(t), "accuracy": 10})
        t += 10_000
    for d in range(100, 1100, 100):
        lat, lng = offset(*DEPOT, 0, d)
        fixes.append({"lat": lat, "lng": lng, "fix_time": iso(t), "accuracy": 8})
        t += 10_000
    send(merchant, driver, fixes)
    drain(runner)
    events = merchant.call("GET", f"/v1/drivers/{driver['id']}/zone-events").json_body["items"]
    assert [e["type"] for e in events] == ["exit", "dwell", "enter"]  # newest first
    assert {e["zone_id"] for e in events} == {zone["id"]} and events[0]["zone_name"] == "North depot"
    send(merchant, driver, fixes)  # the phone retries everything: duplicates, nothing new
    drain(runner)
    assert merchant.call("GET", f"/v1/drivers/{driver['id']}/zone-events").json_body["items"] == events


# --- approaching by the merchant's minutes or metres --------------------------------


def _approach_after_s(merchant, runner, settings: dict) -> float | None:  # noqa: F811
    """Seconds from the start of the drive to the 'approaching' event, None if it never came."""
    assert merchant.call("PUT", "/v1/settings", settings).status_code == 200
    driver = make_driver(merchant)
    start = now_ms() - 3_600_000
    target = make_shipment(merchant, 1, location={"lat": STOP[0], "lng": STOP[1]})
    start_route(merchant, driver, [target], start)
    send(merchant, driver, drive_park_leave(start))
    drain(runner)
    events = merchant.call("GET", f"/v1/shipments/{target['id']}/timeline").json_body["items"]
    kinds = [e["type"] for e in events]
    assert kinds.count("arrived") == 1
    approach = [e["occurred_at"] for e in events if e["type"] == "approaching"]
    assert len(approach) <= 1
    if not approach:
        return None
    return (datetime.fromisoformat(approach[0]).timestamp() * 1000 - start) / 1000


def test_approaching_follows_the_merchants_minutes_or_metres(client, runner, monkeypatch):  # noqa: F811
    from dataclasses import replace

    from chalicelib.pipeline import service as pipeline
    from tests.integration.conftest import new_merchant

    # The drive's fixes are an hour old, older than the shipment: events are then dated at the stop's floor
    # (docs/eta.md, "One clock"). This test measures when the thresholds fire along the drive, so it reads
    # the fix times themselves: no floor here.
    unfloored = pipeline.build_route_stops
    monkeypatch.setattr(pipeline, "build_route_stops", lambda *a, **k: replace(unfloored(*a, **k), floor_ms={}))

    by_metres = _approach_after_s(new_merchant(client), runner, {"approach_minutes": 0, "approach_metres": 500})
    by_minutes = _approach_after_s(new_merchant(client), runner, {"approach_minutes": 3, "approach_metres": 0})
    never = _approach_after_s(new_merchant(client), runner, {"approach_minutes": 0, "approach_metres": 0})
    assert never is None  # arrived straight from out_for_delivery
    assert by_metres is not None and by_minutes is not None
    # the drive is 2 km at 10 m/s: 500 m out is 150 s after the start; 3 minutes by ETA is farther out
    assert by_metres == 150
    assert by_minutes < by_metres


# --- learned statistics ----------------------------------------------------------------


def _items(pk: str) -> list[dict]:
    ddb = boto3.client("dynamodb")
    return ddb.query(TableName=TEST_ENV["DOORSTEP_TABLE_NAME"], KeyConditionExpression="PK = :pk",
                     ExpressionAttributeValues={":pk": {"S": pk}})["Items"]


def test_the_stream_learns_speeds_per_cell_and_the_merchants_service_time(merchant, runner):  # noqa: F811
    import h3

    before = sum(float(i["n"]["N"]) for i in _items("SPEED#*"))
    driver = make_driver(merchant)
    start = now_ms() - 3_600_000
    target = make_shipment(merchant, 1, location={"lat": STOP[0], "lng": STOP[1]})
    start_route(merchant, driver, [target], start)
    fixes = drive_park_leave(start)
    send(merchant, driver, fixes)
    drain(runner)
    after = sum(float(i["n"]["N"]) for i in _items("SPEED#*"))
    assert after - before >= 20  # the 10 m/s segments; parked ones (service time) are not speeds
    on_the_way = offset(*STOP, -1500, 0)
    (row,) = _items(f"SPEED#{h3.latlng_to_cell(*on_the_way, 8)}")
    assert 8.0 < float(row["m"]["N"]) / float(row["s"]["N"]) < 12.0  # ~10 m/s was driven there
    (service,) = [i for i in _items(f"MERCHANT#{merchant.id}") if i["SK"]["S"] == "STATS#SERVICE"]
    assert float(service["n"]["N"]) == 1
    dwell_s = math.exp(float(service["logsum"]["N"]))
    assert 250 <= dwell_s <= 400  # parked 5 minutes (30 fixes 10 s apart), give or take the fence's edge
    # replaying the same records teaches nothing twice
    send(merchant, driver, fixes)
    drain(runner)
    (service_again,) = [i for i in _items(f"MERCHANT#{merchant.id}") if i["SK"]["S"] == "STATS#SERVICE"]
    assert service_again == service


def test_stored_speeds_come_back_as_the_route_table(chalice_app):
    from chalicelib.geo.eta import SpeedTable, hour_of_week
    from chalicelib.geo.geofence import GeoFix
    from chalicelib.pipeline.store import load_speed_table, speed_counters
    from chalicelib.storage.repository import Repository

    table = SpeedTable()
    t0 = 1_760_000_000_000
    lat, lng = -33.45, -70.66  # somewhere no other test drives
    for i in range(60):  # 5 m/s north for 10 minutes
        a = GeoFix("d", t0 + i * 10_000, lat + i * 50 / 111_320, lng)
        b = GeoFix("d", t0 + (i + 1) * 10_000, lat + (i + 1) * 50 / 111_320, lng)
        table.observe(a, b)
    repo = Repository()
    repo.add_to_counters(speed_counters(table, shard=0))
    cell = table.cell(lat + 0.01, lng)
    loaded = load_speed_table(repo, [cell], [hour_of_week(t0)])
    assert 4.5 < loaded.speed_at(lat + 0.01, lng, t0) < table.default_speed_mps  # observed 5 m/s, shrunk a little
    # the cell's own sums come back exactly (the global ones also hold what other tests drove)
    assert loaded.segments(cell) == table.segments(cell) > 0
    assert loaded.metres(cell) == pytest.approx(table.metres(cell), abs=0.01)
    assert loaded.segments(f"{cell}@{hour_of_week(t0)}") == table.segments(f"{cell}@{hour_of_week(t0)}")


def test_a_delivered_stop_moves_the_next_stops_eta_without_a_new_ping(merchant, runner):  # noqa: F811
    from chalicelib.pipeline.store import service_time_counter
    from chalicelib.storage.repository import Repository

    # this merchant's stops have taken ~10 minutes each so far (learned), so an early delivery matters
    Repository().add_to_counters([service_time_counter(merchant.id, math.log(600))] * 50)
    driver = make_driver(merchant)
    start = now_ms() - 3_600_000
    first = make_shipment(merchant, 1, location={"lat": STOP[0], "lng": STOP[1]})
    second = make_shipment(merchant, 2, location={"lat": STOP[0] + 0.02, "lng": STOP[1]})
    start_route(merchant, driver, [first, second], start)
    fixes = drive_park_leave(start)[:25]  # arrived at the first stop, parked
    send(merchant, driver, fixes)
    drain(runner)
    eta_before = merchant.call("GET", f"/v1/shipments/{second['id']}").json_body
    # the engine's own window (the merchant API): these fixes are an hour old, so the recipient's view of
    # that window reads "later today" (docs/eta.md, "The window people see")
    before = eta_before["eta"]["expected"]
    r = merchant.client.http.post(f"/v1/driver/shipments/{first['id']}/status",
                                  headers={"Authorization": f"Bearer {driver['token']}",
                                           "Content-Type": "application/json"},
                                  body=f'{{"status": "delivered", "occurred_at": "{fixes[-1]["fix_time"]}"}}')
    assert r.status_code == 200, r.body
    drain(runner)
    after = merchant.call("GET", f"/v1/shipments/{second['id']}").json_body["eta"]["expected"]
    assert eta_before["status"] == "out_for_delivery"
    # while the first stop was being served its ~8 learned minutes came first; delivered, they do not
    gained_s = (datetime.fromisoformat(before) - datetime.fromisoformat(after)).total_seconds()
    assert 200 < gained_s < 600


def test_a_vague_fix_moves_nothing_in_the_pipeline(merchant, runner):  # noqa: F811
    """A 300 m fix (Wi-Fi positioning) passes ingest screening but announces, moves and recomputes nothing."""
    driver = make_driver(merchant)
    start = now_ms() - 3_600_000
    target = make_shipment(merchant, 1, location={"lat": STOP[0], "lng": STOP[1]})
    start_route(merchant, driver, [target], start)
    far = offset(*STOP, -3000, 0)
    send(merchant, driver, [{"lat": far[0], "lng": far[1], "fix_time": iso(start), "accuracy": 8}])
    drain(runner)
    token = target["tracking_url"].rsplit("/", 1)[1]
    eta_far = merchant.client.http.get(f"/v1/track/{token}").json_body["eta"]
    # 2 minutes later the phone claims to be at the door, give or take 300 m
    send(merchant, driver, [{"lat": STOP[0], "lng": STOP[1], "fix_time": iso(start + 120_000), "accuracy": 300}])
    drain(runner)
    assert timeline_kinds(merchant, target["id"]).count("approaching") == 0
    assert merchant.client.http.get(f"/v1/track/{token}").json_body["eta"] == eta_far


def test_a_vague_fix_is_stored_but_never_becomes_the_latest_position(merchant):
    driver = make_driver(merchant)
    t = now_ms() - 60_000
    good = {"lat": STOP[0], "lng": STOP[1], "fix_time": iso(t), "accuracy": 10}
    vague = {"lat": STOP[0] + 0.002, "lng": STOP[1], "fix_time": iso(t + 30_000), "accuracy": 300}
    result = post_pings(merchant.client, driver["token"], [good, vague]).json_body
    assert result["accepted"] == 2  # kept as history
    position = merchant.call("GET", f"/v1/drivers/{driver['id']}/position").json_body
    assert (position["lat"], position["accuracy"]) == (STOP[0], 10)
