"""Pings through the stream pipeline: approaching, arrived, dwell and departed once each, even when replayed."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.integration.helpers import iso, make_driver, make_shipment, now_ms, post_pings
from tests.integration.streams import drain, pipeline_runner

STOP = (47.6205, -122.3493)
EVENTS = Path(__file__).resolve().parents[2] / "events"


def offset(lat: float, lng: float, north_m: float, east_m: float) -> tuple[float, float]:
    return lat + north_m / 111_320, lng + east_m / (111_320 * math.cos(math.radians(lat)))


def drive_park_leave(start_ms: int) -> list[dict]:
    """2 km approach at 10 m/s, 5 min parked with 20 m jitter, then away: one fix every 10 s."""
    fixes, t = [], start_ms
    for d in range(2000, 0, -100):
        lat, lng = offset(*STOP, -d, 0)
        fixes.append({"lat": lat, "lng": lng, "fix_time": iso(t), "accuracy": 8, "speed": 10})
        t += 10_000
    for i in range(30):
        lat, lng = offset(*STOP, 20 * math.sin(i), 20 * math.cos(i * 1.3))
        fixes.append({"lat": lat, "lng": lng, "fix_time": iso(t), "accuracy": 12, "speed": 0})
        t += 10_000
    for d in range(100, 1200, 100):
        lat, lng = offset(*STOP, 0, d)
        fixes.append({"lat": lat, "lng": lng, "fix_time": iso(t), "accuracy": 8, "speed": 10})
        t += 10_000
    return fixes


@pytest.fixture()
def runner(chalice_app, tmp_path):
    return pipeline_runner(tmp_path)



def test_a_stop_gets_approaching_arrived_dwell_departed_once(merchant, runner):
    driver = make_driver(merchant)
    target = make_shipment(merchant, 1, location={"lat": STOP[0], "lng": STOP[1]})
    other = make_shipment(merchant, 2, location={"lat": STOP[0] + 0.05, "lng": STOP[1]})
    route = merchant.call("POST", "/v1/routes", {"driver_id": driver["id"], "day": iso(now_ms())[:10],
                                                 "planned_start": iso(now_ms()),
                                                 "shipment_ids": [target["id"], other["id"]]}).json_body
    merchant.call("POST", f"/v1/routes/{route['id']}/start")
    fixes = drive_park_leave(now_ms() - 3_600_000)
    for start in range(0, len(fixes), 10):
        assert post_pings(merchant.client, driver["token"], fixes[start:start + 10]).json_body["rejected"] == 0
    drain(runner)
    timeline = merchant.call("GET", f"/v1/shipments/{target['id']}/timeline").json_body["items"]
    kinds = [e["type"] for e in timeline]
    # the fixes happened before the route was created (they are an hour old), so compare the pipeline's events
    pipeline_kinds = [k for k in kinds if k in ("approaching", "arrived", "dwell", "departed")]
    assert pipeline_kinds == ["approaching", "arrived", "dwell", "departed"], kinds
    assert merchant.call("GET", f"/v1/shipments/{target['id']}").json_body["status"] == "arrived"
    assert merchant.call("GET", f"/v1/shipments/{other['id']}").json_body["status"] == "out_for_delivery"
    # the same stream records delivered again change nothing
    for start in range(0, len(fixes), 10):
        post_pings(merchant.client, driver["token"], fixes[start:start + 10])
    drain(runner)
    again = [e["type"] for e in merchant.call("GET", f"/v1/shipments/{target['id']}/timeline").json_body["items"]]
    assert again == kinds
    assert not (runner.dead_letter_file.exists())


def started_route_to_stop(merchant) -> tuple[dict, dict]:
    """A new driver on a started route of today with one stop at STOP: (driver, that shipment)."""
    driver = make_driver(merchant)
    target = make_shipment(merchant, 1, location={"lat": STOP[0], "lng": STOP[1]})
    route = merchant.call("POST", "/v1/routes", {"driver_id": driver["id"], "day": iso(now_ms())[:10],
                                                 "planned_start": iso(now_ms()),
                                                 "shipment_ids": [target["id"]]}).json_body
    merchant.call("POST", f"/v1/routes/{route['id']}/start")
    return driver, target


def test_replayed_stream_batch_creates_nothing_new(merchant, runner, chalice_app):
    from chalicelib.pipeline.api import stream_pipeline

    driver, target = started_route_to_stop(merchant)
    captured: list[dict] = []
    runner.handler = lambda event, ctx: (captured.append(event), stream_pipeline(event, ctx))[1]
    fixes = drive_park_leave(now_ms() - 3_600_000)
    post_pings(merchant.client, driver["token"], fixes[:60])
    drain(runner)
    before = merchant.call("GET", f"/v1/shipments/{target['id']}/timeline").json_body["items"]
    for event in captured:  # Lambda may deliver a batch twice
        result = stream_pipeline(event, None)
        assert result == {"batchItemFailures": []}
    after = merchant.call("GET", f"/v1/shipments/{target['id']}/timeline").json_body["items"]
    assert after == before and "arrived" in [e["type"] for e in after]
    # keep one real record as the sample event under events/
    chunk_records = [r for e in captured for r in e["Records"]
                     if r["dynamodb"]["Keys"]["SK"]["S"].startswith("POINTS#")]
    assert chunk_records and all(r["eventName"] == "INSERT" for r in chunk_records)
    sample = EVENTS / "dynamodb_stream_fixes_insert.json"
    if not sample.exists():
        sample.write_text(json.dumps({"Records": chunk_records[:1]}, indent=2) + "\n")


@pytest.mark.parametrize(("name", "spoil"), [
    ("dynamodb_stream_fixes_insert.json", ("f", {"S": "1795209143023,not a number"})),
    ("dynamodb_stream_ping_insert.json", ("lat", {"S": "not a number"})),  # the one-item-per-fix format
])
def test_a_bad_record_fails_alone(chalice_app, name, spoil):
    from chalicelib.pipeline.api import stream_pipeline

    sample = json.loads((EVENTS / name).read_text())
    good = sample["Records"][0]
    bad = json.loads(json.dumps(good))
    bad["dynamodb"]["SequenceNumber"] = "999"
    bad["dynamodb"]["NewImage"][spoil[0]] = spoil[1]
    result = stream_pipeline({"Records": [good, bad]}, None)
    assert result == {"batchItemFailures": [{"itemIdentifier": "999"}]}


def test_remaining_stops_get_eta_windows_and_a_late_one_is_delayed_once(merchant, runner):
    driver = make_driver(merchant)
    start = now_ms() - 3_600_000
    late = make_shipment(merchant, 1, location={"lat": STOP[0] + 0.03, "lng": STOP[1]},
                         time_window={"start": iso(start - 7_200_000), "end": iso(start - 3_600_000)})
    on_time = make_shipment(merchant, 2, location={"lat": STOP[0] + 0.04, "lng": STOP[1]},
                            time_window={"start": iso(start), "end": iso(start + 86_400_000)})
    route = merchant.call("POST", "/v1/routes", {"driver_id": driver["id"], "day": iso(now_ms())[:10],
                                                 "planned_start": iso(start),
                                                 "shipment_ids": [late["id"], on_time["id"]]}).json_body
    merchant.call("POST", f"/v1/routes/{route['id']}/start")
    fixes = drive_park_leave(start)[:20]  # driving towards STOP, still kilometres from both shipments
    for chunk in range(0, len(fixes), 10):
        post_pings(merchant.client, driver["token"], fixes[chunk:chunk + 10])
    drain(runner)
    eta = merchant.call("GET", f"/v1/shipments/{on_time['id']}").json_body["eta"]  # the engine's own window
    assert eta is not None and eta["earliest"] <= eta["expected"] <= eta["latest"]
    assert eta["expected"] > fixes[-1]["fix_time"]
    # the fixes are an hour old, so that window has passed: the recipient reads "later today", not past times
    token = on_time["tracking_url"].rsplit("/", 1)[1]
    shown = merchant.client.http.get(f"/v1/track/{token}").json_body["eta"]
    assert shown["later_today"] is True and shown["earliest"] is None
    late_events = merchant.call("GET", f"/v1/shipments/{late['id']}/timeline").json_body["items"]
    on_time_events = merchant.call("GET", f"/v1/shipments/{on_time['id']}/timeline").json_body["items"]
    assert [e["type"] for e in late_events].count("delayed") == 1
    assert "delayed" not in [e["type"] for e in on_time_events]
    # more pings later: still one delayed event
    more = drive_park_leave(start)[20:30]
    post_pings(merchant.client, driver["token"], more)
    drain(runner)
    late_events = merchant.call("GET", f"/v1/shipments/{late['id']}/timeline").json_body["items"]
    assert [e["type"] for e in late_events].count("delayed") == 1
