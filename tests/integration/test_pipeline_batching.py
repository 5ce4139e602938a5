"""The stream pipeline per driver: one state read and one state write per driver and batch, a bounded number
of DynamoDB calls for a 100-record batch on a 200-stop route, and ETAs in one item per route."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import botocore.client
import pytest

from infra.local.streams import StreamRunner
from tests.integration.helpers import iso, make_driver, now_ms, post_pings
from tests.integration.streams import record_collector

ORIGIN = (47.55, -122.33)


def stop_points(n: int) -> list[tuple[float, float]]:
    return [(ORIGIN[0] + 0.0036 * (i + 1), ORIGIN[1]) for i in range(n)]  # one every ~400 m, northwards


def seed_route(merchant: Any, stops: int, start_ms: int) -> tuple[dict[str, Any], list[str], str]:
    """A driver with a started route: the items the API's route start leaves, written directly (moto's
    transactions copy the whole table, so 200 shipments through the API take minutes on a shared machine)."""
    from bench.pipeline_cost import seed_started_route
    from chalicelib.storage import get_repository

    driver = make_driver(merchant)
    route_id = seed_started_route(merchant.id, driver["id"], iso(start_ms)[:10], start_ms, stop_points(stops))
    route = get_repository().get_route(merchant.id, route_id)
    assert route is not None
    return driver, [str(s) for s in route.stops], route_id


def drive(count: int, start_ms: int) -> list[dict[str, Any]]:
    """North from the origin at 10 m/s, one fix every 5 s: past a stop every ~8 fixes."""
    return [{"lat": ORIGIN[0] + i * 50 / 111_320, "lng": ORIGIN[1], "fix_time": iso(start_ms + i * 5000),
             "accuracy": 8, "speed": 10} for i in range(count)]


@pytest.fixture()
def capture(chalice_app: Any, tmp_path: Any) -> tuple[StreamRunner, list[dict[str, Any]]]:
    """A stream runner that only collects records (the test hands them to the function itself)."""
    return record_collector(tmp_path)


def drain(run: StreamRunner) -> None:
    while run.poll_once():
        pass


class CallCounter:
    """Every AWS API call made through botocore while active (by operation, and state-item reads/writes)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: Counter[str] = Counter()
        self.state_reads = 0
        self.state_writes = 0
        self.in_calls_s = 0.0  # wall time inside AWS calls (moto, in process, here)
        original = botocore.client.BaseClient._make_api_call

        def counted(client: Any, operation: str, params: dict[str, Any]) -> Any:
            self.calls[operation] += 1
            key = params.get("Key") or params.get("Item") or {}
            if (key.get("SK") or {}).get("S") == "GEOFENCE":
                if operation == "GetItem":
                    self.state_reads += 1
                elif operation == "PutItem":
                    self.state_writes += 1
            started = time.perf_counter()
            try:
                return original(client, operation, params)
            finally:
                self.in_calls_s += time.perf_counter() - started

        monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", counted)

    @property
    def total(self) -> int:
        return sum(self.calls.values())


def pings_of(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The fix chunk inserts: one per accepted request and driver."""
    return [r for r in records if r["eventName"] == "INSERT"
            and r["dynamodb"]["Keys"]["SK"]["S"].startswith("POINTS#")]


def fixes_in(records: list[dict[str, Any]]) -> int:
    return sum(len(r["dynamodb"]["NewImage"]["f"]["S"].split(";")) for r in records)


def test_a_batch_reads_and_writes_each_drivers_state_once(merchant: Any, capture: Any,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from chalicelib.pipeline.api import stream_pipeline

    run, records = capture
    start = now_ms() - 3_600_000
    drivers = [seed_route(merchant, 5, start)[0] for _ in range(2)]
    fixes = drive(20, start)
    for driver in drivers:
        for chunk in range(0, 20, 10):
            assert post_pings(merchant.client, driver["token"], fixes[chunk:chunk + 10]).json_body["accepted"] == 10
    drain(run)
    batch = pings_of(records)
    assert len(batch) == 4 and fixes_in(batch) == 40  # one chunk per request
    counter = CallCounter(monkeypatch)
    assert stream_pipeline({"Records": batch}, None) == {"batchItemFailures": []}
    assert counter.state_reads == 2 and counter.state_writes == 2, counter.calls
    # the same batch again: each driver's state is read, nothing is new, nothing is written
    again = CallCounter(monkeypatch)
    assert stream_pipeline({"Records": batch}, None) == {"batchItemFailures": []}
    assert again.state_reads == 2 and again.state_writes == 0 and again.total <= 3, again.calls


def test_a_100_record_batch_on_a_200_stop_route_stays_bounded(merchant: Any, capture: Any,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from chalicelib.pipeline.api import stream_pipeline
    from chalicelib.storage import get_repository

    run, records = capture
    start = now_ms() - 3_600_000
    driver, ids, route_id = seed_route(merchant, 200, start)
    fixes = drive(100, start)
    for chunk in range(0, 100, 10):
        post_pings(merchant.client, driver["token"], fixes[chunk:chunk + 10])
    drain(run)
    batch = pings_of(records)
    assert len(batch) == 10 and fixes_in(batch) == 100
    counter = CallCounter(monkeypatch)
    started = time.perf_counter()
    assert stream_pipeline({"Records": batch}, None) == {"batchItemFailures": []}
    elapsed = time.perf_counter() - started
    # 100 fixes drive past 12 stops (12 arrivals, departures, approachings, 12+ ETA recomputes of ~190 stops):
    # a fixed number of reads plus the transitions, never a call per stop or per ping for the ETAs.
    writes = counter.calls["TransactWriteItems"] + counter.calls["PutItem"]
    assert counter.state_reads == 1 and counter.state_writes == 1, counter.calls
    # 200 stops: two BatchGetItems (100 keys each); the speed table of the route's cells: two or three more
    assert counter.calls["BatchGetItem"] <= 6 and counter.calls["Query"] <= 6, counter.calls
    # per arrival, one more: its ETA honesty counters, added once (a transaction with its marker; issue 16)
    assert writes <= 4 * 13 + 2, counter.calls
    assert counter.calls["UpdateItem"] <= 40, counter.calls  # learned-statistics counters, once per item
    # The function's own time, and its calls at a generous 25 ms each on DynamoDB, stay far inside the 60 s
    # timeout. (moto's transactions copy the whole table, so the wall time here says more about moto.)
    own = elapsed - counter.in_calls_s
    modelled = own + counter.total * 0.025
    assert own < 15.0 and modelled < 20.0, f"own {own:.1f} s, {counter.total} calls, modelled {modelled:.1f} s"
    eta = get_repository().route_eta(route_id)
    assert eta is not None and eta.window(150) is not None and eta.window(0) is None  # stop 0 is behind
    low, expected, high = eta.window(199) or (0, 0, 0)
    assert low <= expected <= high and expected > int(fixes[-1]["fix_time"] and start)
    statuses = [merchant.call("GET", f"/v1/shipments/{sid}").json_body for sid in (ids[0], ids[150])]
    assert statuses[0]["status"] == "arrived" and statuses[0]["eta"] is None
    assert statuses[1]["status"] == "out_for_delivery" and statuses[1]["eta"] is not None
