"""Driver reports end to end: the stream pipeline writes trips, stops, behaviour events and day/week totals
exactly once (a duplicated batch, a rerun after a lost state write), and the API answers them as JSON and CSV,
tenant-scoped, with 422 naming the field."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest

from infra.local.streams import StreamRunner
from tests.conftest import TEST_ENV
from tests.integration.helpers import iso, make_driver, now_ms, post_pings
from tests.integration.streams import record_collector

ORIGIN = (47.55, -122.33)
M_PER_DEG = 111_195.0


def fix(ms: int, metres: float, speed: float, accuracy: float = 5.0) -> dict[str, Any]:
    return {"lat": round(ORIGIN[0] + metres / M_PER_DEG, 7), "lng": ORIGIN[1], "fix_time": iso(ms),
            "accuracy": accuracy, "speed": speed}


def scenario(start: int) -> list[dict[str, Any]]:
    """Parked 200 s; 108 km/h for 200 s (speeding); a hard brake 30 -> 24 m/s in 1 s (0.61 g); 24 m/s for
    30 s; parked 300 s from 10 s later: one stop, one trip of ~6.7 km, one speeding episode, one harsh braking."""
    out = [fix(start + s * 1000, 0, 0.0) for s in range(0, 200, 5)]
    at = 0.0
    for s in range(200, 400, 2):
        out.append(fix(start + s * 1000, at, 30.0))
        at += 60
    out.append(fix(start + 399_000, at - 33, 24.0))  # 27 m in the braking second
    at += -33 + 24
    for s in range(400, 430, 2):
        out.append(fix(start + s * 1000, at, 24.0))
        at += 48
    out += [fix(start + s * 1000, at, 0.0) for s in range(440, 740, 5)]  # 10 s later: too far apart to judge
    return out


@pytest.fixture()
def capture(chalice_app: Any, tmp_path: Any) -> tuple[StreamRunner, list[dict[str, Any]]]:
    """A stream runner that only collects records (the test hands them to the function itself)."""
    return record_collector(tmp_path)


def chunks_of(run: StreamRunner, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    while run.poll_once():
        pass
    return [r for r in records if r["eventName"] == "INSERT" and r["dynamodb"]["Keys"]["SK"]["S"].startswith("POINTS#")]


def report_items(merchant_id: str, driver_id: str) -> dict[str, dict[str, Any]]:
    items = boto3.client("dynamodb").query(
        TableName=TEST_ENV["DOORSTEP_TABLE_NAME"], KeyConditionExpression="PK = :pk",
        ExpressionAttributeValues={":pk": {"S": f"REPORT#{merchant_id}#{driver_id}"}})["Items"]
    return {i["SK"]["S"]: i for i in items}


def local_day(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).date().isoformat()  # the test merchant's zone is UTC


@pytest.fixture()
def driven(merchant: Any, capture: Any) -> tuple[dict[str, Any], int, list[dict[str, Any]]]:
    """A driver whose scenario went through the pipeline once; the chunk records kept for replays."""
    from chalicelib.pipeline.api import stream_pipeline

    run, records = capture
    driver = make_driver(merchant)
    start = now_ms() - 2 * 3_600_000
    start -= start % 1000
    fixes = scenario(start)
    for i in range(0, len(fixes), 50):
        answer = post_pings(merchant.client, driver["token"], fixes[i:i + 50]).json_body
        assert answer["accepted"] == len(fixes[i:i + 50]), answer
    batch = chunks_of(run, records)
    assert stream_pipeline({"Records": batch}, None) == {"batchItemFailures": []}
    return driver, start, batch


def kinds(items: dict[str, dict[str, Any]]) -> list[str]:
    return sorted(sk.split("#")[0] + ("#" + sk.split("#")[2] if sk.startswith("BEHAVIOUR#") else "") for sk in items)


def test_the_pipeline_writes_reports_exactly_once(merchant: Any, driven: Any) -> None:
    from chalicelib.pipeline.api import stream_pipeline

    driver, start, batch = driven
    first = report_items(merchant.id, driver["id"])
    assert kinds(first) == ["BEHAVIOUR#harsh_braking", "BEHAVIOUR#speeding", "DAY", "STOP", "TRIP"]
    day = first[f"DAY#{local_day(start + 440_000)}"]
    assert day["trips"]["N"] == "1" and day["stops"]["N"] == "1"
    assert day["events"]["S"] == '{"harsh_braking":1,"speeding":1}'
    # the same batch again: nothing new, nothing written twice
    assert stream_pipeline({"Records": batch}, None) == {"batchItemFailures": []}
    assert report_items(merchant.id, driver["id"]) == first
    # a rerun after the state write was lost (the state item gone): the same items, the same totals
    table = TEST_ENV["DOORSTEP_TABLE_NAME"]
    boto3.client("dynamodb").delete_item(TableName=table, Key={"PK": {"S": f"DRIVER#{driver['id']}"},
                                                               "SK": {"S": "GEOFENCE"}})
    assert stream_pipeline({"Records": list(reversed(batch))}, None) == {"batchItemFailures": []}
    again = report_items(merchant.id, driver["id"])
    assert {k: {a: v for a, v in i.items() if a != "expires_at"} for k, i in again.items()} \
        == {k: {a: v for a, v in i.items() if a != "expires_at"} for k, i in first.items()}
    week = boto3.client("dynamodb").query(
        TableName=table, KeyConditionExpression="PK = :pk",
        ExpressionAttributeValues={":pk": {"S": f"REPORTWEEK#{merchant.id}#"
                                                + datetime.fromtimestamp(start / 1000, UTC).strftime("%G-W%V")}})
    [row] = week["Items"]  # the day's totals under its own attribute: [day, distance, driving, stopped, trips, ...]
    assert [json.loads(v["S"])[4] for k, v in row.items() if k.startswith("day_")] == [1]


def test_reports_api_json_and_csv(merchant: Any, driven: Any) -> None:
    driver, start, _ = driven
    day = local_day(start)
    base = f"/v1/drivers/{driver['id']}"
    trips = merchant.call("GET", f"{base}/reports/trips?from={day}&to={local_day(start + 800_000)}")
    assert trips.status_code == 200, trips.body
    [trip] = trips.json_body["items"]
    assert 6000 < trip["distance_m"] < 7000 and trip["max_speed_kmh"] == 108.0
    stops = merchant.call("GET", f"{base}/reports/stops?from={day}&to={day}").json_body["items"]
    assert len(stops) == 1 and stops[0]["start_at"].startswith(iso(start)[:19])
    events = merchant.call("GET", f"{base}/behaviour-events?from={day}&to={day}").json_body["items"]
    assert [e["kind"] for e in events] == ["speeding", "harsh_braking"]
    assert events[1]["value"] == pytest.approx(0.61, abs=0.01)
    only = merchant.call("GET", f"{base}/behaviour-events?from={day}&to={day}&kind=speeding").json_body["items"]
    assert [e["kind"] for e in only] == ["speeding"]
    summary = merchant.call("GET", f"{base}/reports/summary?from={day}&to={day}")
    assert summary.status_code == 200, summary.body
    [row] = summary.json_body["days"]
    assert row["trips"] == 1 and row["behaviour"] == {"speeding": 1, "harsh_braking": 1, "harsh_acceleration": 0,
                                                      "long_idle": 0}
    # CSV: the same rows, nested objects flattened
    answer = merchant.call("GET", f"{base}/behaviour-events?from={day}&to={day}", Accept="text/csv")
    assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(answer.body.decode() if isinstance(answer.body, bytes) else answer.body)))
    assert [r["kind"] for r in rows] == ["speeding", "harsh_braking"]
    answer = merchant.call("GET", f"{base}/reports/summary?from={day}&to={day}", Accept="text/csv")
    text = answer.body.decode() if isinstance(answer.body, bytes) else answer.body
    header = text.splitlines()[0].split(",")
    assert "behaviour_speeding" in header and "hours_on_duty" in header
    empty = merchant.call("GET", f"{base}/reports/trips?from=2020-01-01&to=2020-01-02", Accept="text/csv")
    body = empty.body.decode() if isinstance(empty.body, bytes) else empty.body
    assert body.startswith("start_at,end_at,") and len(body.splitlines()) == 1
    week = datetime.fromtimestamp(start / 1000, UTC).strftime("%G-W%V")
    card = merchant.call("GET", f"/v1/reports/scorecard?week={week}")
    assert card.status_code == 200, card.body
    [mine] = card.json_body["items"]
    assert mine["driver_id"] == driver["id"] and mine["trips"] == 1 and mine["score"] is None  # under 10 km
    csv_card = merchant.call("GET", f"/v1/reports/scorecard?week={week}", Accept="text/csv")
    assert driver["id"] in (csv_card.body.decode() if isinstance(csv_card.body, bytes) else csv_card.body)


def test_reports_are_tenant_scoped(merchant: Any, other_merchant: Any, driven: Any) -> None:
    driver, start, _ = driven
    day = local_day(start)
    for path in ("reports/trips", "reports/stops", "reports/summary", "behaviour-events"):
        answer = other_merchant.call("GET", f"/v1/drivers/{driver['id']}/{path}?from={day}&to={day}")
        assert answer.status_code == 404, (path, answer.body)
    week = datetime.fromtimestamp(start / 1000, UTC).strftime("%G-W%V")
    other_rows = other_merchant.call("GET", f"/v1/reports/scorecard?week={week}").json_body["items"]
    assert driver["id"] not in [r["driver_id"] for r in other_rows]


def test_the_scorecard_lists_every_driver_a_page_at_a_time(merchant: Any, driven: Any) -> None:
    driver, start, _ = driven
    idle = make_driver(merchant, "Ida Idle")
    week = datetime.fromtimestamp(start / 1000, UTC).strftime("%G-W%V")
    first = merchant.call("GET", f"/v1/reports/scorecard?week={week}&limit=1").json_body
    assert len(first["items"]) == 1 and first["next_cursor"]
    second = merchant.call("GET", f"/v1/reports/scorecard?week={week}&limit=1&cursor={first['next_cursor']}")
    rows = {r["driver_id"]: r for r in first["items"] + second.json_body["items"]}
    assert rows[idle["id"]]["name"] == "Ida Idle" and rows[idle["id"]]["distance_km"] == 0
    assert rows[idle["id"]]["score"] is None and rows[driver["id"]]["trips"] == 1


def test_default_ranges(merchant: Any, driven: Any) -> None:
    driver, start, _ = driven
    recent = merchant.call("GET", f"/v1/drivers/{driver['id']}/reports/summary").json_body["days"]
    assert len(recent) == 7 and recent[-1]["day"] == datetime.now(UTC).date().isoformat()
    week = merchant.call("GET", "/v1/reports/scorecard").json_body
    assert week["week"] == datetime.now(UTC).strftime("%G-W%V")
    from_only = merchant.call("GET", f"/v1/drivers/{driver['id']}/reports/trips?from={local_day(start)}").json_body
    assert len(from_only["items"]) == 1


@pytest.mark.parametrize(("query", "field"), [
    ("to=2026-01", "to"), ("from=2026-01-02&to=2026-01-01", "to"), ("from=2026-01-01&to=2026-06-01", "to"),
    ("from=2026-13-01&to=2026-01-01", "from"), ("from=2026-01-01&to=2026-01-01&limit=0", "limit"),
    ("from=2026-01-01&to=2026-01-01&kind=nap", "kind"),
])
def test_bad_ranges_answer_422_naming_the_field(merchant: Any, query: str, field: str) -> None:
    driver = make_driver(merchant)
    answer = merchant.call("GET", f"/v1/drivers/{driver['id']}/behaviour-events?{query}")
    assert answer.status_code == 422, answer.body
    assert field in [d["field"] for d in answer.json_body["error"]["details"]]


@pytest.mark.parametrize("week", ["2026-W54", "2026W01", "1969-W01", "2026-W00"])
def test_a_bad_week_answers_422(merchant: Any, week: str) -> None:
    answer = merchant.call("GET", f"/v1/reports/scorecard?week={week}")
    assert answer.status_code == 422, answer.body
    assert [d["field"] for d in answer.json_body["error"]["details"]] == ["week"]


def test_settings_and_hours_on_duty(merchant: Any) -> None:
    from chalicelib.fleet.presence import end_duty, start_duty
    from chalicelib.storage import get_repository

    assert merchant.call("GET", "/v1/reports/settings").json_body["speeding_kmh"] == 90.0
    put = merchant.call("PUT", "/v1/reports/settings", {"speeding_kmh": 80, "long_idle_minutes": 20})
    assert put.status_code == 200 and put.json_body["speeding_kmh"] == 80
    assert merchant.call("GET", "/v1/reports/settings").json_body["long_idle_minutes"] == 20
    bad = merchant.call("PUT", "/v1/reports/settings", {"harsh_braking_g": 5})
    assert bad.status_code == 422 and bad.json_body["error"]["details"][0]["field"] == "harsh_braking_g"

    driver = make_driver(merchant)
    repo = get_repository()
    began = now_ms() - 90 * 60_000
    start_duty(repo, merchant.id, driver["id"], began, 10)
    assert end_duty(repo, merchant.id, driver["id"])
    end_duty(repo, merchant.id, driver["id"])  # already off duty: no shift under way, none recorded again
    today = datetime.now(UTC).date()
    days = f"from={(today - timedelta(days=1)).isoformat()}&to={today.isoformat()}"
    summary = merchant.call("GET", f"/v1/drivers/{driver['id']}/reports/summary?{days}").json_body
    assert sum(d["hours_on_duty"] for d in summary["days"]) == pytest.approx(1.5, abs=0.01)
    week = datetime.now(UTC).strftime("%G-W%V")
    rows = merchant.call("GET", f"/v1/reports/scorecard?week={week}").json_body["items"]
    mine = [r for r in rows if r["driver_id"] == driver["id"]]
    assert sum(r["hours_on_duty"] for r in mine) == pytest.approx(1.5, abs=0.01)


class _Transport:
    """Records every webhook POST and answers 200."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []

    def post(self, url: str, body: bytes, headers: Any) -> Any:
        from chalicelib.webhooks.transport import Answer

        self.bodies.append(json.loads(body))
        return Answer(200, 4, None, b"ok")


def test_behaviour_events_go_out_as_webhooks_once(merchant: Any, client: Any, capture: Any) -> None:
    """The pipeline puts each behaviour event as a driver event too; the webhook sender posts its INSERT once,
    and a rerun's put of the same key (a MODIFY) posts nothing."""
    from chalicelib.notifications.senders import Notifier
    from chalicelib.pipeline.api import stream_pipeline
    from chalicelib.storage import get_repository
    from chalicelib.webhooks import delivery as webhook_delivery
    from chalicelib.webhooks.store import WebhookStore

    run, records = capture
    put = merchant.call("PUT", "/v1/webhook", {"url": f"https://hooks.example.com/reports/{merchant.id}",
                                               "events": ["driver_speeding", "driver_harsh_braking"]})
    assert put.status_code == 201, put.body
    transport = _Transport()
    webhook_delivery.use(webhook_delivery.Deliverer(WebhookStore(get_repository().client), get_repository(),
                                                    transport, Notifier()))
    try:
        driver = make_driver(merchant)
        start = now_ms() - 2 * 3_600_000
        start -= start % 1000
        fixes = scenario(start)
        for i in range(0, len(fixes), 50):
            post_pings(merchant.client, driver["token"], fixes[i:i + 50])
        batch = chunks_of(run, records)
        seen = len(records)
        assert stream_pipeline({"Records": batch}, None) == {"batchItemFailures": []}
        boto3.client("dynamodb").delete_item(TableName=TEST_ENV["DOORSTEP_TABLE_NAME"], Key={
            "PK": {"S": f"DRIVER#{driver['id']}"}, "SK": {"S": "GEOFENCE"}})
        assert stream_pipeline({"Records": batch}, None) == {"batchItemFailures": []}  # a rerun from scratch
        while run.poll_once():
            pass
        driver_events = [r for r in records[seen:] if r["dynamodb"]["Keys"]["PK"]["S"] == f"DRIVER#{driver['id']}"
                         and r["dynamodb"]["Keys"]["SK"]["S"].startswith("EVENT#")]
        # the rerun's puts are MODIFYs (moto), or nothing at all when the item is unchanged (DynamoDB)
        assert [r["eventName"] for r in driver_events].count("INSERT") == 2
        answer = client.lambda_.invoke("webhook_sender", {"Records": driver_events}).payload
        assert answer == {"batchItemFailures": []}
        assert sorted(b["type"] for b in transport.bodies) == ["driver_harsh_braking", "driver_speeding"]
        speeding = next(b for b in transport.bodies if b["type"] == "driver_speeding")
        assert speeding["data"]["driver_id"] == driver["id"] and speeding["data"]["details"]["value"] == 108.0
    finally:
        webhook_delivery.use(None)
        from chalicelib.webhooks.store import WebhookStore as Store

        Store(get_repository().client).delete_endpoint(merchant.id)


def test_the_seattle_ridealong_trace_through_the_real_pipeline(merchant: Any, capture: Any) -> None:
    """test1.gpx posted as the phone would (10 fixes a request, moved in time to end 10 minutes ago), through
    ingest, the fix chunks and the stream pipeline: the same stop, trip and harsh braking as the pure rules find
    (tests/unit/test_driver_reports_rules.py), so the phone's speed survives the chunks."""
    from chalicelib.pipeline.api import stream_pipeline
    from tests.unit.test_driver_reports_rules import ridealong

    fixes = ridealong("test1.gpx")
    run, records = capture
    driver = make_driver(merchant)
    shift = now_ms() - 600_000 - fixes[-1].ms
    shift -= shift % 1000
    pings = []
    for f in fixes:
        ping: dict[str, Any] = {"lat": f.lat, "lng": f.lng, "fix_time": iso(f.ms + shift), "accuracy": f.accuracy}
        if f.speed_mps is not None and f.speed_mps >= 0:  # -1: unknown
            ping["speed"] = f.speed_mps
        pings.append(ping)
    for i in range(0, len(pings), 10):
        post_pings(merchant.client, driver["token"], pings[i:i + 10])
    assert stream_pipeline({"Records": chunks_of(run, records)}, None) == {"batchItemFailures": []}
    today = datetime.now(UTC).date()
    days = f"from={(today - timedelta(days=1)).isoformat()}&to={today.isoformat()}"
    base = f"/v1/drivers/{driver['id']}"
    events = merchant.call("GET", f"{base}/behaviour-events?{days}").json_body["items"]
    assert [(e["kind"], e["value"]) for e in events] == [("harsh_braking", 0.46)]
    [stop] = merchant.call("GET", f"{base}/reports/stops?{days}").json_body["items"]
    assert stop["duration_s"] == 289
    [trip] = merchant.call("GET", f"{base}/reports/trips?{days}").json_body["items"]
    assert trip["distance_m"] == pytest.approx(1593, abs=5) and trip["max_speed_kmh"] == 37.5


def test_reordered_and_repeated_batches_count_nothing_twice(merchant: Any, capture: Any) -> None:
    """The later half first, then the earlier half, then everything again: the pipeline skips fixes at or before
    those it processed, so the earlier half is lost to the reports (never counted twice), and each item once."""
    from chalicelib.pipeline.api import stream_pipeline

    run, records = capture
    driver = make_driver(merchant)
    start = now_ms() - 2 * 3_600_000
    start -= start % 1000
    fixes = scenario(start)
    for i in range(0, len(fixes), 50):
        post_pings(merchant.client, driver["token"], fixes[i:i + 50])
    batch = chunks_of(run, records)
    half = len(batch) // 2
    for records_ in (batch[half:], batch[:half], batch, list(reversed(batch))):
        assert stream_pipeline({"Records": records_}, None) == {"batchItemFailures": []}
    items = report_items(merchant.id, driver["id"])
    days = [i for sk, i in items.items() if sk.startswith("DAY#")]
    trips = [sk for sk in items if sk.startswith("TRIP#")]
    assert len(trips) <= 1 and sum(int(d["trips"]["N"]) for d in days) == len(trips)
    assert sum(int(d["stops"]["N"]) for d in days) == len([sk for sk in items if sk.startswith("STOP#")])
