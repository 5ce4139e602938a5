"""`lookup_miss_spread_pct`: do the lookup page's misses take the same time, whatever made them miss?

A child process against a fresh DynamoDB Local (started here on a free port of 127.0.0.1, stopped after, failed or
not; the table from infra/resources.json; S3, SNS, SES on in-process moto): two merchants, the first with a lookup
slug, each with shipments made through the merchant API. Then ROUNDS rounds, each one `POST /lookup/{slug}` of
every kind, interleaved so each kind sees the same load, through chalice's test client (the app, the middleware,
the real Repository over loopback HTTP to DynamoDB Local): an unknown order number, a known one with a wrong
postcode, another merchant's order with its right postcode, and (for reference) a match. Every attempt comes from
its own source address and names its own order (the client limit and the order lock stay out of the figure). The
figure: the spread of the three miss kinds' medians, (max - min) / mean, in percent; each kind's median, the
match's and the DynamoDB calls per kind are extra fields. It leaves out the network to API Gateway and the
Lambda's own variance, which are the same for every kind.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any
from urllib.parse import urlencode

from bench.common import Result, child_on_dynamodb_local, log, median

NAMES = ("lookup_miss_spread_pct",)
ROUNDS = 30
WARMUP = 3
TARGET_PCT = 20.0
_MARK = "LOOKUP "
KINDS = ("unknown_order", "wrong_factor", "other_merchants_order", "match")


def run() -> list[Result]:
    log(f"lookup: {ROUNDS} rounds of every miss kind on a fresh DynamoDB Local")
    data = child_on_dynamodb_local(["bench.lookup"], _MARK, "lookup")
    medians = {kind: median(times) for kind, times in data["times_ms"].items()}
    misses = [medians[k] for k in KINDS[:3]]
    spread = (max(misses) - min(misses)) / (sum(misses) / len(misses)) * 100
    return [Result("lookup_miss_spread_pct", round(spread, 1), "%", TARGET_PCT,
                   extra={"median_ms": {k: round(v, 1) for k, v in medians.items()}, "rounds": ROUNDS,
                          "dynamodb_calls": data["calls"]})]


def child() -> dict[str, Any]:
    import boto3
    import botocore.session
    from chalice.local import LambdaEventConverter
    from moto import mock_aws

    from tests.conftest import TEST_ENV  # noqa: F401  (the test environment: moto-safe settings)

    if not os.environ.get("DOORSTEP_DYNAMODB_ENDPOINT_URL"):
        raise SystemExit("run through bench.lookup.run(), which starts DynamoDB Local for the child")
    with mock_aws():
        from chalice.test import Client

        import app as app_module
        from chalicelib.fleet import service as fleet
        from chalicelib.storage import get_repository
        from infra.local.resources import create_table

        create_table(boto3.client("dynamodb"), os.environ["DOORSTEP_TABLE_NAME"])
        repo = get_repository()
        calls = {"n": 0}

        def count(**_: Any) -> None:
            calls["n"] += 1

        original = botocore.session.Session.create_client

        def counted(self: Any, service_name: str, *args: Any, **kwargs: Any) -> Any:
            client = original(self, service_name, *args, **kwargs)
            if service_name == "dynamodb":
                client.meta.events.register("after-call.dynamodb", count)
            return client

        botocore.session.Session.create_client = counted  # type: ignore[method-assign]
        mine, other = (fleet.create_merchant(repo, name)[1] for name in ("Bench Shop", "Other Shop"))
        total = WARMUP + ROUNDS
        with Client(app_module.app) as client:
            def api(key: str, method: str, path: str, body: Any) -> Any:
                r = client.http.request(method, path, body=json.dumps(body).encode(), headers={
                    "Authorization": f"Bearer {key}", "Content-Type": "application/json"})
                if r.status_code >= 300:
                    raise RuntimeError(f"{method} {path}: {r.status_code} {r.body[:300]!r}")
                return r.json_body

            api(mine, "PUT", "/v1/lookup/settings", {"slug": "bench-shop"})

            def shipment(key: str, ref: str) -> None:
                api(key, "POST", "/v1/shipments", {
                    "recipient": {"name": "Ada", "phone": "+14155550100"}, "external_ref": ref,
                    "address": {"line1": "1 Main St", "city": "Seattle", "postal_code": "98101", "country": "US"},
                    "location": {"lat": 47.6, "lng": -122.3}})

            for n in range(total):
                shipment(mine, f"MINE-{n}")
                shipment(mine, f"MATCH-{n}")
                shipment(other, f"OTHER-{n}")
            forms = {"unknown_order": lambda n: (f"NONE-{n}", "98101"),
                     "wrong_factor": lambda n: (f"MINE-{n}", "11111"),
                     "other_merchants_order": lambda n: (f"OTHER-{n}", "98101"),
                     "match": lambda n: (f"MATCH-{n}", "98101")}
            times: dict[str, list[float]] = {k: [] for k in KINDS}
            per_kind: dict[str, int] = {}
            for n in range(total):
                for i, kind in enumerate(KINDS):
                    order, check = forms[kind](n)
                    LambdaEventConverter.LOCAL_SOURCE_IP = f"10.9.{n}.{i + 1}"
                    before, started = calls["n"], time.perf_counter()
                    r = client.http.post("/lookup/bench-shop", body=urlencode({"order": order, "check": check}),
                                         headers={"Content-Type": "application/x-www-form-urlencoded"})
                    elapsed = (time.perf_counter() - started) * 1000
                    if r.status_code != (303 if kind == "match" else 200):
                        raise RuntimeError(f"{kind}: {r.status_code} {r.body[:300]!r}")
                    if n >= WARMUP:
                        times[kind].append(elapsed)
                        per_kind[kind] = calls["n"] - before
    return {"times_ms": times, "calls": per_kind}


if __name__ == "__main__":
    print(_MARK + json.dumps(child()), flush=True)
    sys.exit(0)
