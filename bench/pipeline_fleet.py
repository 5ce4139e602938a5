"""A fleet on the local stack: does the stream pipeline keep up with ingest, and how soon does a ping become an event?

On a fresh local stack (DynamoDB Local for the table and its stream; moto server for S3, SNS, SES; chalice local
for the API), 20 drivers on started 100-stop routes post their pings concurrently, 10 per request, along their
routes (bench/pipeline_cost.py's trace: 10 m/s between doors 400 m apart, two minutes at each door, a fix every
5 s). The stream function runs in a child of this benchmark (`--runner`): the local stream runner
(infra/local/streams.py) reads DynamoDB Local's stream with the deployed mapping's batch size, retries and
FilterCriteria (infra/resources.json) and calls the real `stream_pipeline`, printing a progress line after
every poll, so the harness sees when the stream is drained.

Pings are counted from the API's answers (`accepted`), never from item shapes:
- ingest rate: accepted pings / (last answer - first request sent);
- drain rate: the same pings / (the end of the last poll that still read records, once every POST has
  answered and a later poll found the stream empty - first request sent). The drain includes the lifecycle
  events the pings cause and their notifications, which the same function handles;
- `pipeline_drain_vs_ingest` = drain rate / ingest rate (1.0: the pipeline finished with the last POST).
- `ping_to_event_p95_ms_fleet`: for every `approaching` / `arrived` timeline event of the fleet's shipments
  (a Query per shipment on its `EVENT#` items), its `recorded_at` (stamped by the pipeline as it writes the
  event) minus the time the request carrying the causing fix (`occurred_at` is the fix time) was sent.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.common import PROJECT_ROOT, Result, log, median, p95, venv_python

NAMES = ("pipeline_drain_vs_ingest", "ping_to_event_p95_ms_fleet")
DRIVERS = 20
STOPS = 100
REQUESTS_PER_DRIVER = 30  # flat out: the drain ratio
PACED_REQUESTS = 12  # then paced: the ping-to-event latency
PACE_S = 2.5  # a request per driver every 2.5 s: 80 pings/s, 20 x a real fleet's pace (10 fixes 5 s apart)
PINGS_PER_REQUEST = 10
DRAIN_TARGET = 0.5
EVENT_TARGET_MS = 2000.0
DRAIN_TIMEOUT_S = 300.0
EVENT_TYPES = ("approaching", "arrived")
_MARK = "FLEET_RUNNER "


# --- pure arithmetic (tested in tests/unit/test_bench_fleet.py) ---------------------------------------------


@dataclass(frozen=True)
class Poll:
    """One poll of the stream runner: when it started and ended (epoch seconds) and the records it read."""

    started: float
    ended: float
    read: int


def drain_end(polls: Iterable[Poll], ingest_end: float) -> float | None:
    """When the stream was drained: the end of the last poll that read records before the first empty poll
    that started after ingest ended (every accepted ping was in the stream by then). None: not drained yet."""
    last_busy: float | None = None
    for poll in sorted(polls, key=lambda p: p.started):
        if poll.read:
            last_busy = poll.ended
        elif poll.started > ingest_end:
            return last_busy if last_busy is not None else poll.started
    return None


def rates(pings: int, started: float, ingest_end: float, drained: float) -> tuple[float, float, float]:
    """(ingest pings/s, drain pings/s, drain / ingest). The drain can never end before the ingest does."""
    ingest_s = ingest_end - started
    drain_s = max(drained, ingest_end) - started
    if pings <= 0 or ingest_s <= 0:
        raise ValueError("no pings were ingested")
    ingest, drain = pings / ingest_s, pings / drain_s
    return ingest, drain, drain / ingest


def event_latencies_ms(events: Iterable[dict[str, Any]], sent_by_fix: dict[str, dict[int, float]]
                       ) -> tuple[list[float], int]:
    """Per event {"driver_id", "occurred_ms", "recorded_s"}: recorded - the send time of the request that
    carried the fix at occurred_ms. Returns (latencies in ms, events whose fix no request carried)."""
    latencies: list[float] = []
    unmatched = 0
    for event in events:
        sent = sent_by_fix.get(event["driver_id"], {}).get(event["occurred_ms"])
        if sent is None:
            unmatched += 1
            continue
        latencies.append((event["recorded_s"] - sent) * 1000)
    return latencies, unmatched


# --- the runner child: seeds the routes, then feeds the stream to the real stream function -----------------


def runner_main(state_dir: Path) -> None:
    """`python -m bench.pipeline_fleet --runner DIR`, the app's environment against the stack: reads the plan
    (merchant, drivers, stop points, day) from stdin, seeds the started routes, prints them, then runs the
    stream runner with the deployed mapping's settings, printing one progress line per poll."""
    plan = json.loads(sys.stdin.readline())
    import boto3

    import app as app_module
    from bench.pipeline_cost import seed_started_route
    from chalicelib.storage.tables import RouteItem, merchant_pk
    from infra.local.functions import handler_of
    from infra.local.streams import StreamRunner, mapping_config

    routes = {}
    for driver_id, points in plan["drivers"].items():
        route_id = seed_started_route(plan["merchant_id"], driver_id, plan["day"], plan["day_ms"],
                                      [tuple(p) for p in points])
        route = RouteItem.get(merchant_pk(plan["merchant_id"]), f"ROUTE#{route_id}")
        routes[driver_id] = {"route_id": route_id, "shipment_ids": list(route.stops)}
    print(_MARK + json.dumps({"routes": routes}), flush=True)

    config = mapping_config("StreamPipelineEventSourceMapping")
    runner = StreamRunner(boto3.client("dynamodb"), boto3.client("dynamodbstreams"), os.environ["DOORSTEP_TABLE_NAME"],
                          handler_of(app_module.app, "stream_pipeline"), state_dir / "checkpoint.json",
                          state_dir / "dead-letter.jsonl", config)
    profile = None
    phases: dict[str, float] = {}
    if os.environ.get("BENCH_FLEET_PROFILE"):  # where the stream function's time goes, on DynamoDB Local
        import cProfile

        from chalicelib.pipeline import service

        for name in ("_apply_drivers", "handle_lifecycle", "handle_stream_event"):
            setattr(service, name, _timed(getattr(service, name), name, phases))
        profile = cProfile.Profile()  # this thread's calls: the lifecycle records; drivers run in workers
        profile.enable()

    def stop(*_: Any) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    try:
        while True:  # until the parent stops us
            started = time.time()
            read = runner.poll_once()
            print(_MARK + json.dumps({"poll": [started, time.time(), read], "invocations": runner.invocations}),
                  flush=True)
            if not read:
                time.sleep(config.poll_interval_s)
    finally:
        if profile is not None:
            profile.disable()
            profile.dump_stats(os.environ["BENCH_FLEET_PROFILE"])
            Path(os.environ["BENCH_FLEET_PROFILE"] + ".phases.json").write_text(json.dumps(phases))


def _timed(function: Any, name: str, totals: dict[str, float]) -> Any:
    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            totals[name] = totals.get(name, 0.0) + time.perf_counter() - started
            totals[name + "_calls"] = totals.get(name + "_calls", 0) + 1

    return timed


class RunnerChild:
    """The runner child and what it printed: the seeded routes, then its polls."""

    def __init__(self, env: dict[str, str], state_dir: Path, plan: dict[str, Any]) -> None:
        self.state_dir = state_dir
        self.polls: list[Poll] = []
        self.invocations = 0
        self.routes: dict[str, Any] | None = None
        self.lock = threading.Lock()
        self.tail: list[str] = []
        if os.environ.get("DOORSTEP_PIPELINE_WORKERS"):  # e.g. 1, to profile the drivers in one thread
            env = {**env, "DOORSTEP_PIPELINE_WORKERS": os.environ["DOORSTEP_PIPELINE_WORKERS"]}
        self.process = subprocess.Popen([venv_python(), "-m", "bench.pipeline_fleet", "--runner", str(state_dir)],
                                        cwd=PROJECT_ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True, start_new_session=True)
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(plan) + "\n")
        self.process.stdin.close()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if not line.startswith(_MARK):
                self.tail = [*self.tail, line][-20:]
                continue
            data = json.loads(line[len(_MARK):])
            with self.lock:
                if "routes" in data:
                    self.routes = data["routes"]
                else:
                    self.polls.append(Poll(*data["poll"]))
                    self.invocations = data["invocations"]

    def wait_for(self, what: str, ready: Any, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                value = ready()
            if value is not None:
                return value
            if self.process.poll() is not None:
                raise RuntimeError(f"the runner child exited ({self.process.returncode}) before {what}:\n"
                                   + "".join(self.tail))
            time.sleep(0.05)
        raise TimeoutError(f"no {what} within {timeout:.0f} s")

    def drained_after(self, moment: float, timeout: float) -> float:
        return float(self.wait_for("drain", lambda: drain_end(self.polls, moment), timeout))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


# --- the run ---------------------------------------------------------------------------------------------


def _fleet_plan(drivers: list[dict[str, Any]], stops: int) -> dict[str, Any]:
    plan: dict[str, Any] = {}
    for d, driver in enumerate(drivers):
        origin = (47.5 + 0.05 * (d % 5), -122.4 + 0.07 * (d // 5))
        points = [(origin[0] + 0.0036 * (i + 1), origin[1]) for i in range(stops)]  # a door every ~400 m
        plan[driver["id"]] = {"origin": origin, "points": points}
    return plan


def run(drivers: int = DRIVERS, stops: int = STOPS, requests_per_driver: int = REQUESTS_PER_DRIVER,
        paced_requests: int = PACED_REQUESTS, pace_s: float = PACE_S) -> list[Result]:
    import tempfile

    import boto3

    from bench.pipeline_cost import _trace
    from infra.local.stack import LocalStack, child_environment, create_merchant, http_json

    with tempfile.TemporaryDirectory(prefix="doorstep-bench-fleet-") as tmp, \
            LocalStack(port=0, moto_port=0, log_dir=Path(tmp) / "logs", stream_runner=False) as stack:
        env = stack.app_env
        merchant_id, key = create_merchant(env, "Bench Fleet Merchant", isolated=True)

        def call(method: str, path: str, body: Any = None, token: str = key) -> Any:
            result = http_json(method, f"{stack.base_url}{path}", body, token=token, timeout=60)
            if result.status >= 300:
                raise AssertionError(f"{method} {path}: {result.status} {result.body}")
            return result.body

        fleet = [call("POST", "/v1/drivers", {"name": f"Fleet {n}", "phone": "+14155550111"})
                 for n in range(drivers)]
        plan = _fleet_plan(fleet, stops)
        day_ms = int(time.time() * 1000) - 3_600_000
        day = time.strftime("%Y-%m-%d", time.gmtime(day_ms / 1000))
        runner = RunnerChild(child_environment(env), Path(tmp), {
            "merchant_id": merchant_id, "day": day, "day_ms": day_ms,
            "drivers": {d: p["points"] for d, p in plan.items()}})
        try:
            routes = runner.wait_for("seeded routes", lambda: runner.routes, 300)
            # The seeding's own records drain first, so the measured stream holds the fleet's pings only.
            runner.drained_after(time.time(), DRAIN_TIMEOUT_S)
            log(f"fleet: {drivers} drivers on {stops}-stop routes seeded; posting")
            total = (requests_per_driver + paced_requests) * PINGS_PER_REQUEST
            traces = {d: _trace(tuple(p["origin"]), [tuple(x) for x in p["points"]], day_ms, total)
                      for d, p in plan.items()}
            requests = {d: [t[i:i + PINGS_PER_REQUEST] for i in range(0, len(t), PINGS_PER_REQUEST)]
                        for d, t in traces.items()}
            saturated: dict[str, dict[int, float]] = {d: {} for d in plan}  # fix ms -> when its request was sent
            paced: dict[str, dict[int, float]] = {d: {} for d in plan}
            accepted = {d: 0 for d in plan}

            def post(driver: dict[str, Any], chunk: list[dict[str, Any]], sent_by_fix: dict[int, float]) -> None:
                sent = time.time()
                answer = call("POST", "/v1/driver/pings", {"pings": chunk}, token=driver["token"])
                accepted[driver["id"]] += int(answer["accepted"])
                for fix in chunk:
                    sent_by_fix[_fix_ms(fix["fix_time"])] = sent

            def flat_out(driver: dict[str, Any]) -> None:
                for chunk in requests[driver["id"]][:requests_per_driver]:
                    post(driver, chunk, saturated[driver["id"]])

            started = time.time()
            with ThreadPoolExecutor(len(fleet)) as pool:
                list(pool.map(flat_out, fleet))
            ingest_end = time.time()
            pings = sum(accepted.values())
            log(f"fleet: {pings} pings accepted in {ingest_end - started:.1f} s; waiting for the drain")
            drained = runner.drained_after(ingest_end, DRAIN_TIMEOUT_S)
            ingest_rate, drain_rate, ratio = rates(pings, started, ingest_end, drained)
            invocations = runner.invocations

            paced_start = time.time() + 0.5

            def steady(indexed: tuple[int, dict[str, Any]]) -> None:
                n, driver = indexed
                for k, chunk in enumerate(requests[driver["id"]][requests_per_driver:]):
                    # Staggered: the fleet's requests spread evenly over each pace interval.
                    time.sleep(max(0.0, paced_start + (k + n / len(fleet)) * pace_s - time.time()))
                    post(driver, chunk, paced[driver["id"]])

            log(f"fleet: paced phase, a request per driver every {pace_s:.1f} s")
            with ThreadPoolExecutor(len(fleet)) as pool:
                list(pool.map(steady, enumerate(fleet)))
            runner.drained_after(time.time(), DRAIN_TIMEOUT_S)
        finally:
            runner.stop()

        ddb = boto3.client("dynamodb", endpoint_url=stack.dynamodb_url, region_name=env["AWS_DEFAULT_REGION"],
                           aws_access_key_id="testing", aws_secret_access_key="testing")
        events = _events(ddb, env["DOORSTEP_TABLE_NAME"], routes, traces, stops)
    latencies, _ = event_latencies_ms(events, paced)
    flat_latencies, _ = event_latencies_ms(events, saturated)
    if not latencies:
        raise AssertionError("no approaching/arrived event was caused by the paced phase's pings")
    by_type = {t: sum(1 for e in events if e["type"] == t) for t in EVENT_TYPES}
    log(f"fleet: ingest {ingest_rate:.0f} pings/s, drain {drain_rate:.0f} pings/s (ratio {ratio:.2f}); "
        f"ping to event p50 {median(latencies):.0f} ms, p95 {p95(latencies):.0f} ms over {len(latencies)} events "
        f"(flat out: p95 {p95(flat_latencies) if flat_latencies else float('nan'):.0f} ms)")
    common = {"drivers": drivers, "stops_per_route": stops, "pings_per_request": PINGS_PER_REQUEST}
    paced_rate = len(fleet) * PINGS_PER_REQUEST / pace_s
    return [
        Result("pipeline_drain_vs_ingest", round(ratio, 3), "ratio", DRAIN_TARGET, higher_is_better=True,
               extra={**common, "pings": pings, "requests": drivers * requests_per_driver,
                      "ingest_pings_per_s": round(ingest_rate, 1), "drain_pings_per_s": round(drain_rate, 1),
                      "ingest_s": round(ingest_end - started, 2),
                      "drain_s": round(max(drained, ingest_end) - started, 2), "stream_invocations": invocations}),
        Result("ping_to_event_p95_ms_fleet", round(p95(latencies), 1), "ms", EVENT_TARGET_MS,
               extra={**common, "paced_pings_per_s": round(paced_rate, 1), "paced_requests": drivers * paced_requests,
                      "events": len(latencies), "events_by_type_all_phases": by_type,
                      "p50_ms": round(median(latencies), 1), "max_ms": round(max(latencies), 1),
                      "flat_out_p95_ms": round(p95(flat_latencies), 1) if flat_latencies else None,
                      "flat_out_events": len(flat_latencies)}),
    ]


def _fix_ms(iso: str) -> int:
    return round(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def _events(ddb: Any, table: str, routes: dict[str, Any], traces: dict[str, list[dict[str, Any]]],
            stops: int) -> list[dict[str, Any]]:
    """The approaching/arrived events of the stops each driver's trace reached: one Query per shipment."""
    found = []
    for driver_id, route in routes.items():
        trace = traces[driver_id]
        # The trace visits its stops in order; 2 more than it can have reached, so none is missed.
        reached = min(stops, math.ceil(len(trace) / 24) + 2)
        for shipment_id in route["shipment_ids"][:reached]:
            pages = ddb.get_paginator("query").paginate(
                TableName=table, KeyConditionExpression="PK = :pk AND begins_with(SK, :event)",
                ExpressionAttributeValues={":pk": {"S": f"SHIPMENT#{shipment_id}"}, ":event": {"S": "EVENT#"}})
            for page in pages:
                for item in page["Items"]:
                    if item["type"]["S"] not in EVENT_TYPES:
                        continue
                    found.append({"driver_id": driver_id, "type": item["type"]["S"],
                                  "occurred_ms": _ms(item["occurred_at"]["S"]),
                                  "recorded_s": _ms(item["recorded_at"]["S"]) / 1000})
    return found


def _ms(stamp: str) -> int:
    """pynamodb's UTCDateTimeAttribute text (`2026-01-02T03:04:05.678000+0000`) in epoch ms."""
    return round(datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%f%z").timestamp() * 1000)


def _runner_args(argv: Sequence[str]) -> Path | None:
    return Path(argv[2]) if len(argv) == 3 and argv[1] == "--runner" else None


if __name__ == "__main__":
    state = _runner_args(sys.argv)
    if state is not None:
        runner_main(state)
    else:
        from bench.common import emit

        for figure in run():
            emit(figure)
