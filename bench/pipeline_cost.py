"""What the stream pipeline costs per ping, counted on the real code against DynamoDB Local.

A child process (isolated: its botocore clients are all created after the counting hook is installed) against
its own fresh DynamoDB Local (started by the parent on a free port of 127.0.0.1 and stopped after; S3, SNS and
SES stay on in-process moto) builds a fleet through the real API (chalice's test client, the real Repository),
drives it along its routes posting pings 10 per request, reads the table's stream with the
local runner, keeps the records the deployed FilterCriteria admit (infra/stream_filters.py) and hands them
to the real `stream_pipeline` function in batches of up to 100. Every DynamoDB call is counted through
botocore's `before-call` event, by phase (ingest = the POSTs, pipeline = inside the stream function), with
the item it wrote read back to size the write units as DynamoDB bills them: max(item before, after) per 1 KB
(x2 in a transaction), plus one index write per GSI whose key the item carries (projection: the index's
from tables.py; 2 when the index key changes). Reads count 4 KB units, eventually consistent halved, over
the items returned.

Figures:
- pipeline_ddb_calls_per_ping: DynamoDB calls in the stream function / pings, 20 drivers on 100-stop routes
- pipeline_wru_per_ping: write units in the stream function / pings (same run)
- cost_usd_per_million_pings: API Gateway REST + Lambda (requests and GB-s from measured wall durations: the
  function's CPU and its waits on a real engine over loopback) for the ingest POSTs and the stream function,
  DynamoDB read/write units of both phases; stream reads by a Lambda trigger are free. R = 10 pings per request.
- max_key_wru_per_s_1000_drivers: the busiest partition key value's write units per second, modelled from
  the written units per key in a 50-stop run scaled to 1,000 drivers x 1 ping / 5 s (a key written for one
  driver scales with that driver's pings, a key written for several with the fleet's).
"""

from __future__ import annotations

import json
import math
import os
import sys
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from bench.common import PROJECT_ROOT, Result, child_on_dynamodb_local, log

NAMES = ("pipeline_ddb_calls_per_ping", "pipeline_wru_per_ping", "cost_usd_per_million_pings",
         "max_key_wru_per_s_1000_drivers")

# us-east-1 list prices (on demand), USD, as of 2025.
PRICES = {
    "api_gateway_rest_per_million_requests": 3.50,
    "lambda_per_million_requests": 0.20,
    "lambda_per_gb_second": 0.0000166667,
    "dynamodb_per_million_write_units": 0.625,
    "dynamodb_per_million_read_units": 0.125,
    "dynamodb_streams_read_by_lambda_trigger": 0.0,
}
LAMBDA_MEMORY_GB = 256 / 1024  # the stream pipeline's MemorySize (the stage's lambda_memory_size)


def _api_memory_gb() -> float:
    """The API function's memory in the prod stage (.chalice/config.json): pings are ingested there."""
    config = json.loads((Path(__file__).resolve().parent.parent / ".chalice" / "config.json").read_text())
    stage = config["stages"]["prod"]
    api = stage.get("lambda_functions", {}).get("api_handler", {})
    return int(api.get("lambda_memory_size", stage.get("lambda_memory_size", 256))) / 1024


API_MEMORY_GB = _api_memory_gb()
FLEET_DRIVERS = 1000
PING_INTERVAL_S = 5.0
_MARK = "PIPELINE_COST_RESULT "  # the app logs to stdout too
WRITE_OPS = {"PutItem", "UpdateItem", "DeleteItem"}


def run() -> list[Result]:
    out: list[Result] = []
    big = _child(drivers=20, stops=100, requests_per_driver=10)
    pings = big["pings"]
    calls = big["phases"]["pipeline"]["calls"] / pings
    wru = big["phases"]["pipeline"]["wru"] / pings
    out.append(Result("pipeline_ddb_calls_per_ping", round(calls, 3), "calls/ping", 1.0, baseline=24.7,
                      extra={"by_operation": big["phases"]["pipeline"]["by_op"], "pings": pings,
                             "records_admitted": big["admitted"], "records_filtered_out": big["filtered_out"],
                             "batches": big["batches"]}))
    out.append(Result("pipeline_wru_per_ping", round(wru, 3), "WRU/ping", 2.0, baseline=100.0,
                      extra={"rru_per_ping": round(big["phases"]["pipeline"]["rru"] / pings, 3)}))
    cost, parts = _cost(big, pings_per_request=10)
    log("price table: " + json.dumps(PRICES))
    ms_per_ping = {f"{phase}_{kind}": round(big["phases"][phase][key] / pings * 1000, 3)
                   for phase in ("ingest", "pipeline") for kind, key in (("wall", "seconds"), ("cpu", "cpu_seconds"))}
    out.append(Result("cost_usd_per_million_pings", round(cost, 3), "USD/1M pings", 2.0, baseline=68.0,
                      extra={"pings_per_request": 10, "parts_usd": parts, "prices": PRICES,
                             "lambda_memory_mb": {"api_ingest": int(API_MEMORY_GB * 1024),
                                                  "pipeline": int(LAMBDA_MEMORY_GB * 1024)},
                             "lambda_ms_per_ping": ms_per_ping,
                             "engine": "DynamoDB Local over loopback (priced: wall time)"}))
    small = _child(drivers=20, stops=50, requests_per_driver=10)
    rate, key = _busiest_key(small)
    out.append(Result("max_key_wru_per_s_1000_drivers", round(rate, 1), "WRU/s", 300.0, baseline=3900.0,
                      extra={"key": key, "fleet_pings_per_s": FLEET_DRIVERS / PING_INTERVAL_S}))
    return out


def _cost(data: dict[str, Any], pings_per_request: int) -> tuple[float, dict[str, float]]:
    pings = data["pings"]
    per_m = 1_000_000 / pings
    ingest, pipeline = data["phases"]["ingest"], data["phases"]["pipeline"]
    requests = pings / pings_per_request
    parts = {
        "api_gateway": requests * per_m * PRICES["api_gateway_rest_per_million_requests"] / 1e6,
        "lambda_ingest": requests * per_m * (PRICES["lambda_per_million_requests"] / 1e6)
        + ingest["seconds"] * per_m * API_MEMORY_GB * PRICES["lambda_per_gb_second"],
        "lambda_pipeline": data["batches"] * per_m * (PRICES["lambda_per_million_requests"] / 1e6)
        + pipeline["seconds"] * per_m * LAMBDA_MEMORY_GB * PRICES["lambda_per_gb_second"],
        "dynamodb_ingest": (ingest["wru"] * PRICES["dynamodb_per_million_write_units"]
                            + ingest["rru"] * PRICES["dynamodb_per_million_read_units"]) * per_m / 1e6,
        "dynamodb_pipeline": (pipeline["wru"] * PRICES["dynamodb_per_million_write_units"]
                              + pipeline["rru"] * PRICES["dynamodb_per_million_read_units"]) * per_m / 1e6,
        "streams": 0.0,
    }
    return sum(parts.values()), {k: round(v, 4) for k, v in parts.items()}


def _busiest_key(data: dict[str, Any]) -> tuple[float, str]:
    pings_by_driver: dict[str, int] = data["pings_by_driver"]
    fleet_rate = FLEET_DRIVERS / PING_INTERVAL_S
    best, best_key = 0.0, ""
    for key, info in data["keys"].items():
        writers = [w for w in info["drivers"] if w != "*"]  # "*": a lifecycle record, no driver known
        if len(writers) == 1:
            # one driver's key: its units per own ping, at one driver's ping rate
            rate = info["wru"] / pings_by_driver[writers[0]] / PING_INTERVAL_S
        else:  # shared: its units per fleet ping, at the fleet's rate
            rate = info["wru"] / data["pings"] * fleet_rate
        if rate > best:
            best, best_key = rate, key
    return best, best_key


def _child(**params: int) -> dict[str, Any]:
    """One scenario in a fresh process against a fresh DynamoDB Local."""
    return child_on_dynamodb_local(["bench.pipeline_cost", json.dumps(params)], _MARK,  # type: ignore[no-any-return]
                                   "pipeline_cost")


# --- the child: a fleet on DynamoDB Local (S3, SNS, SES on in-process moto) -----------------------------------


def _item_size(attrs: dict[str, Any]) -> int:
    return sum(len(name.encode()) + _value_size(value) for name, value in attrs.items())


def _value_size(value: dict[str, Any]) -> int:
    ((kind, v),) = value.items()
    if kind == "S":
        return len(str(v).encode())
    if kind == "N":
        digits = len(str(v).lstrip("-").replace(".", "").lstrip("0")) or 1
        return math.ceil(digits / 2) + 1
    if kind == "B":
        return len(v)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "M":
        return 3 + sum(len(k.encode()) + _value_size(x) + 1 for k, x in v.items())
    if kind == "L":
        return 3 + sum(_value_size(x) + 1 for x in v)
    if kind in ("SS", "NS", "BS"):
        return sum(len(str(x).encode()) for x in v)
    return 8


class Meter:
    """Counts DynamoDB calls and the units they consume, per phase and per partition key value."""

    def __init__(self, peek: Any, table: str, projections: dict[str, tuple[str, list[str]]]) -> None:
        self.peek = peek  # an uncounted client, to size items before and after a write
        self.table = table
        self.projections = projections  # index -> (projection type, included attributes)
        self.phase: str | None = None
        self.driver = "*"
        self.local = threading.local()
        self.lock = threading.Lock()
        self.phases: dict[str, dict[str, Any]] = defaultdict(
            lambda: {"calls": 0, "wru": 0.0, "rru": 0.0, "seconds": 0.0, "cpu_seconds": 0.0, "by_op": Counter()})
        self.keys: dict[str, dict[str, Any]] = defaultdict(lambda: {"wru": 0.0, "drivers": set()})
        # Time spent in these hooks (sizing items: GetItems over loopback), not the function's: wall and CPU.
        self.overhead = 0.0
        self.overhead_cpu = 0.0

    def install(self, client: Any) -> None:
        client.meta.events.register("before-parameter-build.dynamodb", self.before)
        client.meta.events.register("after-call.dynamodb", self.after)

    def _get(self, key: dict[str, Any]) -> dict[str, Any]:
        return self.peek.get_item(TableName=self.table, Key=key, ConsistentRead=True).get("Item") or {}

    def before(self, model: Any, params: dict[str, Any], **_: Any) -> None:
        if self.phase is None or getattr(self.local, "busy", False):
            return
        started, cpu = time.perf_counter(), time.process_time()
        try:
            self._before(model, params)
        finally:
            self.overhead += time.perf_counter() - started
            self.overhead_cpu += time.process_time() - cpu

    def after(self, model: Any, parsed: dict[str, Any], **_: Any) -> None:
        if self.phase is None or getattr(self.local, "busy", False):
            return
        started, cpu = time.perf_counter(), time.process_time()
        try:
            self._after(model, parsed)
        finally:
            self.overhead += time.perf_counter() - started
            self.overhead_cpu += time.process_time() - cpu

    def _before(self, model: Any, params: dict[str, Any]) -> None:
        op = model.name
        with self.lock:
            stats = self.phases[self.phase or "other"]
            stats["calls"] += 1
            stats["by_op"][op] += 1
        self.local.busy = True
        try:
            self.local.writes = self._writes_of(op, params)
        finally:
            self.local.busy = False

    def _writes_of(self, op: str, params: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any], float]]:
        """(key, item before, multiplier) of each item this call writes."""
        keys: list[tuple[dict[str, Any], float]] = []
        if op in WRITE_OPS:
            item = params.get("Item") or {}
            keys.append((params.get("Key") or {"PK": item.get("PK"), "SK": item.get("SK")}, 1.0))
        elif op == "TransactWriteItems":
            for entry in params.get("TransactItems", []):
                ((_, body),) = entry.items()
                if "ConditionExpression" in body and "Key" in body and "UpdateExpression" not in body:
                    keys.append((body["Key"], 2.0))  # a condition check: read units, billed as a write
                    continue
                item = body.get("Item") or {}
                keys.append((body.get("Key") or {"PK": item["PK"], "SK": item["SK"]}, 2.0))
        elif op == "BatchWriteItem":
            for requests in params.get("RequestItems", {}).values():
                for request in requests:
                    body = request.get("PutRequest") or request.get("DeleteRequest") or {}
                    item = body.get("Item") or {}
                    keys.append((body.get("Key") or {"PK": item["PK"], "SK": item["SK"]}, 1.0))
        return [(key, self._get(key), factor) for key, factor in keys]

    def _after(self, model: Any, parsed: dict[str, Any]) -> None:
        self.local.busy = True
        try:
            stats = self.phases[self.phase or "other"]
            for key, before, factor in getattr(self.local, "writes", []):
                after = self._get(key)
                units = math.ceil(max(_item_size(before), _item_size(after), 1) / 1024) * factor
                self._account(str(key["PK"]["S"]), units, stats)
                for index, (kind, included) in self.projections.items():
                    gsi_units = self._index_units(index, kind, included, before, after)
                    if gsi_units:
                        pk = (after or before).get(f"{index}PK", {}).get("S", "")
                        self._account(f"{index}:{pk}", gsi_units, stats)
            self.local.writes = []
            op = model.name
            if op in ("GetItem", "Query", "BatchGetItem", "TransactGetItems"):
                items: list[dict[str, Any]] = []
                if op == "GetItem" and "Item" in parsed:
                    items = [parsed["Item"]]
                elif op == "Query":
                    items = parsed.get("Items", [])
                elif op == "BatchGetItem":
                    items = [i for rows in parsed.get("Responses", {}).values() for i in rows]
                size = sum(_item_size(i) for i in items)
                units = max(1, math.ceil(size / 4096)) if op == "Query" else sum(
                    math.ceil(max(_item_size(i), 1) / 4096) for i in items) or 1
                with self.lock:
                    stats["rru"] += units / 2  # eventually consistent
        finally:
            self.local.busy = False

    def _index_units(self, index: str, kind: str, included: list[str], before: dict[str, Any],
                     after: dict[str, Any]) -> float:
        pk, sk = f"{index}PK", f"{index}SK"
        had, has = pk in before, pk in after

        def projected(item: dict[str, Any]) -> int:
            if kind == "ALL":
                return _item_size(item)
            keep = {"PK", "SK", pk, sk, *(included if kind == "INCLUDE" else [])}
            return _item_size({k: v for k, v in item.items() if k in keep})

        if not had and not has:
            return 0.0
        if had and has and (before.get(pk), before.get(sk)) != (after.get(pk), after.get(sk)):
            return math.ceil(projected(before) / 1024) + math.ceil(projected(after) / 1024)
        if had and has and projected(before) == projected(after) and kind != "ALL":
            return 0.0  # nothing projected changed: no index write
        if had and has and before == after:
            return 0.0
        return math.ceil(max(projected(before) if had else 0, projected(after) if has else 0, 1) / 1024)

    def _account(self, key: str, units: float, stats: dict[str, Any]) -> None:
        with self.lock:
            stats["wru"] += units
            entry = self.keys[key]
            entry["wru"] += units
            entry["drivers"].add(self.driver)


def _index_projections() -> dict[str, tuple[str, list[str]]]:
    resources = json.loads((PROJECT_ROOT / "infra" / "resources.json").read_text())["Resources"]
    out = {}
    for gsi in resources["DoorstepTable"]["Properties"]["GlobalSecondaryIndexes"]:
        projection = gsi["Projection"]
        out[gsi["IndexName"]] = (projection["ProjectionType"], list(projection.get("NonKeyAttributes", [])))
    return out


def child(drivers: int, stops: int, requests_per_driver: int) -> dict[str, Any]:
    import tempfile

    import boto3
    import botocore.session
    from moto import mock_aws

    from tests.conftest import TEST_ENV  # noqa: F401  (the test environment: moto-safe settings)

    if not os.environ.get("DOORSTEP_DYNAMODB_ENDPOINT_URL"):
        raise SystemExit("run through bench.pipeline_cost.run(), which starts DynamoDB Local for the child")
    # A batch's drivers one after the other: the meter's sizing reads are then subtracted exactly from the
    # function's wall time. Side by side (the deployed setting) only shortens what Lambda bills.
    os.environ["DOORSTEP_PIPELINE_WORKERS"] = "1"
    table = os.environ["DOORSTEP_TABLE_NAME"]
    with mock_aws():  # S3, SNS and SES; DynamoDB's endpoint is DynamoDB Local, which moto passes through
        from infra.local.resources import create_bucket, create_table

        peek = boto3.client("dynamodb")
        create_table(peek, table)
        create_bucket(boto3.client("s3"), os.environ["DOORSTEP_BUCKET_NAME"])
        meter = Meter(peek, table, _index_projections())
        original = botocore.session.Session.create_client

        def counted_client(self: Any, service_name: str, *args: Any, **kwargs: Any) -> Any:
            client = original(self, service_name, *args, **kwargs)
            if service_name == "dynamodb":
                meter.install(client)
            return client

        botocore.session.Session.create_client = counted_client  # type: ignore[method-assign]
        return _drive(meter, table, drivers, stops, requests_per_driver, Path(tempfile.mkdtemp()))


def _drive(meter: Meter, table: str, drivers: int, stops: int, requests_per_driver: int,
           tmp: Path) -> dict[str, Any]:
    import boto3
    from chalice.test import Client

    import app as app_module
    from chalicelib.fleet import service as fleet
    from chalicelib.pipeline import service as pipeline_service
    from chalicelib.pipeline.api import stream_pipeline
    from chalicelib.storage import get_repository
    from infra.local.streams import RunnerConfig, StreamRunner
    from infra.stream_filters import admits, mapping_filters

    filters = mapping_filters("StreamPipelineEventSourceMapping")
    counts = {"admitted": 0, "filtered_out": 0, "batches": 0}

    def handler(event: dict[str, Any], context: Any) -> Any:
        records = [r for r in event["Records"] if admits(filters, r)]
        counts["filtered_out"] += len(event["Records"]) - len(records)
        if not records:
            return {"batchItemFailures": []}
        counts["admitted"] += len(records)
        counts["batches"] += 1
        meter.phase = "pipeline"
        mark = _mark(meter)
        try:
            return stream_pipeline({"Records": records}, context)
        finally:
            _account_time(meter, "pipeline", mark)
            meter.phase = None

    original_apply = pipeline_service.apply_driver_fixes

    def apply_driver_fixes(r: Any, merchant_id: str, driver_id: str, *args: Any, **kwargs: Any) -> Any:
        meter.driver = driver_id
        try:
            return original_apply(r, merchant_id, driver_id, *args, **kwargs)
        finally:
            meter.driver = "*"

    pipeline_service.apply_driver_fixes = apply_driver_fixes  # type: ignore[assignment]
    # TRIM_HORIZON: the engine is fresh, and DynamoDB Local opens new shards as it goes (LATEST would skip
    # what a new shard got before the runner saw it); the setup's records are drained before anything counts.
    runner = StreamRunner(boto3.client("dynamodb"), boto3.client("dynamodbstreams"), table, handler,
                          tmp / "cp.json", tmp / "dlq.jsonl", RunnerConfig(poll_interval_s=0))
    with Client(app_module.app) as client:
        merchant_id, key = fleet.create_merchant(get_repository(), "Bench Fleet")
        auth = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

        def call(method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> Any:
            response = getattr(client.http, method.lower())(path, headers=headers or auth,
                                                            body=json.dumps(body) if body is not None else None)
            if response.status_code >= 300:
                raise RuntimeError(f"{method} {path}: {response.status_code} {response.body[:300]!r}")
            return response.json_body

        day_ms = int(time.time() * 1000) - 3_600_000
        day = time.strftime("%Y-%m-%d", time.gmtime(day_ms / 1000))
        fleet_plan = []
        for d in range(drivers):
            driver = call("POST", "/v1/drivers", {"name": f"Driver {d}", "phone": "+14155550111"})
            origin = (47.5 + 0.05 * (d % 5), -122.4 + 0.07 * (d // 5))
            points = [(origin[0] + 0.0036 * (i + 1), origin[1]) for i in range(stops)]  # a stop every ~400 m
            # Setup writes the items a started route leaves (moto's transactions copy the whole table: the API's
            # route start would take minutes at 2,000 shipments); the measured part is all real code.
            seed_started_route(merchant_id, driver["id"], day, day_ms, points)
            fleet_plan.append((driver, origin, points))
        runner.refresh_shards()
        while runner.poll_once():  # the route starts' events, before the measured pings
            pass
        meter.phases.clear()
        meter.keys.clear()
        pings_by_driver: dict[str, int] = {}
        traces = {driver["id"]: _trace(origin, points, day_ms, requests_per_driver * 10)
                  for driver, origin, points in fleet_plan}
        for r in range(requests_per_driver):  # the fleet posts round-robin, 10 pings a request
            for driver, _, _ in fleet_plan:
                chunk = traces[driver["id"]][r * 10:(r + 1) * 10]
                meter.phase, meter.driver = "ingest", driver["id"]
                mark = _mark(meter)
                body = call("POST", "/v1/driver/pings", {"pings": chunk},
                            {"Authorization": f"Bearer {driver['token']}", "Content-Type": "application/json"})
                _account_time(meter, "ingest", mark)
                meter.phase, meter.driver = None, "*"
                pings_by_driver[driver["id"]] = pings_by_driver.get(driver["id"], 0) + body["accepted"]
            while runner.poll_once():
                pass
        while runner.poll_once():
            pass
    pings = sum(pings_by_driver.values())
    return {
        "pings": pings, "pings_by_driver": pings_by_driver, **counts,
        "phases": {name: {**stats, "by_op": dict(stats["by_op"])} for name, stats in meter.phases.items()},
        "keys": {k: {"wru": v["wru"], "drivers": sorted(v["drivers"])} for k, v in meter.keys.items()},
    }


def _mark(meter: Meter) -> tuple[float, float, float, float]:
    return time.perf_counter(), time.process_time(), meter.overhead, meter.overhead_cpu


def _account_time(meter: Meter, phase: str, mark: tuple[float, float, float, float]) -> None:
    """Wall time (what Lambda bills: the function's CPU and its waits on DynamoDB Local over loopback) and CPU
    time of the phase since `mark`, each less the meter's own."""
    wall, cpu, overhead, overhead_cpu = mark
    stats = meter.phases[phase]
    stats["seconds"] += time.perf_counter() - wall - (meter.overhead - overhead)
    stats["cpu_seconds"] += time.process_time() - cpu - (meter.overhead_cpu - overhead_cpu)


def seed_started_route(merchant_id: str, driver_id: str, day: str, day_ms: int,
                       points: list[tuple[float, float]]) -> str:
    """The items a started route leaves: its shipments out for delivery, the active route, its driver on duty.
    Returns its id."""
    from datetime import UTC, datetime

    from chalicelib.core.security import new_id
    from chalicelib.fleet.presence import start_duty
    from chalicelib.storage import get_repository
    from chalicelib.storage.tables import (
        RouteItem,
        ShipmentItem,
        date_gsi_pk,
        driver_routes_pk,
        merchant_pk,
        status_gsi_pk,
    )

    # Ordered and started a minute before the drive's first fix, as on a real day: the pipeline dates no event
    # before a shipment's creation or its route's start, so a route started after its fixes would clamp them.
    now = datetime.fromtimestamp(day_ms / 1000 - 60, UTC)
    route_id = new_id("rte")
    status = "out_for_delivery"
    ids = [new_id("shp") for _ in points]
    with ShipmentItem.batch_write() as batch:
        for i, ((lat, lng), sid) in enumerate(zip(points, ids, strict=True)):
            batch.save(ShipmentItem(
                merchant_pk(merchant_id), f"SHIPMENT#{sid}", GSI1PK=status_gsi_pk(merchant_id, status, sid),
                GSI1SK=f"{day}#{sid}", GSI2PK=date_gsi_pk(merchant_id, day, sid), GSI2SK=f"{status}#{sid}",
                merchant_id=merchant_id, shipment_id=sid, status=status,
                recipient={"name": f"R {i}", "phone": "+14155550100"},
                address={"line1": f"{i} Main St", "city": "Seattle", "postal_code": "98101", "country": "US"},
                lat=lat, lng=lng, window_start=datetime.fromtimestamp(day_ms / 1000 - 3600, UTC),
                window_end=datetime.fromtimestamp(day_ms / 1000 + 12 * 3600, UTC), delivery_date=day,
                route_id=route_id, stop_index=i, driver_id=driver_id, token_version=1, created_at=now,
                updated_at=now))
    RouteItem(merchant_pk(merchant_id), f"ROUTE#{route_id}", GSI1PK=driver_routes_pk(merchant_id, driver_id),
              GSI1SK=f"{day}#{route_id}", merchant_id=merchant_id, route_id=route_id, driver_id=driver_id, day=day,
              planned_start=datetime.fromtimestamp(day_ms / 1000, UTC), stops=ids, status="active",
              started_at=now, created_at=now).save()
    # A started route puts its driver on duty (shipments.routes.start_route -> fleet.presence.route_started).
    start_duty(get_repository(), merchant_id, driver_id, day_ms, 5, route_id=route_id)
    return route_id


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"


def _trace(origin: tuple[float, float], stops: list[tuple[float, float]], start_ms: int,
           count: int) -> list[dict[str, Any]]:
    """Drive from stop to stop at 10 m/s, 2 minutes at each door (GPS jitter), one fix every 5 s."""
    fixes: list[dict[str, Any]] = []
    t = start_ms
    here = origin
    for lat, lng in stops:
        steps = max(1, int(math.dist(here, (lat, lng)) * 111_320 / 50))  # 50 m per 5 s
        for s in range(1, steps + 1):
            f = s / steps
            fixes.append({"lat": here[0] + (lat - here[0]) * f, "lng": here[1] + (lng - here[1]) * f,
                          "fix_time": _iso(t), "accuracy": 8, "speed": 10})
            t += 5000
        for j in range(24):
            fixes.append({"lat": lat + 0.0001 * math.sin(j), "lng": lng + 0.0001 * math.cos(j),
                          "fix_time": _iso(t), "accuracy": 12, "speed": 0})
            t += 5000
        here = (lat, lng)
        if len(fixes) >= count:
            break
    return fixes[:count]


if __name__ == "__main__":
    print(_MARK + json.dumps(child(**json.loads(sys.argv[1]))), flush=True)
