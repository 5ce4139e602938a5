"""Merchant webhooks on the real local stack: the stream runner feeds `webhook_sender`, which POSTs to the
bundled receiver (infra/local/webhook_receiver.py) that the demo merchant's endpoint points at."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from infra.local.stack import LocalStack, http_json
from tests.e2e.conftest import api, iso, new_driver, run_module

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def received(stack: LocalStack) -> list[dict[str, Any]]:
    result = http_json("GET", f"{stack.webhook_receiver_url}/events")
    assert result.status == 200, result.body
    events: list[dict[str, Any]] = result.body["events"]
    return events


def wait_for(check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the webhook receiver")
        time.sleep(0.25)


def test_a_shipments_lifecycle_events_reach_the_receiver_once_each_with_valid_signatures(
        stack: LocalStack, demo: dict[str, Any], demo_path: Path) -> None:
    endpoint = api(demo, "GET", "/v1/webhook")
    assert endpoint.status == 200, endpoint.body
    assert endpoint.body["url"] == demo["webhook_url"] and demo["webhook_url"].startswith(stack.webhook_receiver_url)
    assert endpoint.body["secret"] is None and endpoint.body["paused"] is False

    driver = new_driver(demo, "Webhook Driver")
    stop = demo["stops"][0]
    shipment = api(demo, "POST", "/v1/shipments", {
        "recipient": {"name": "Hook Recipient"}, "address": {"line1": "1 Hook St", "city": "Demo", "country": "US"},
        "location": {"lat": stop["lat"], "lng": stop["lng"]}, "external_ref": "hook-1",
        "delivery_date": datetime.now(UTC).date().isoformat()})
    assert shipment.status == 201, shipment.body
    sid = shipment.body["id"]
    route = api(demo, "POST", "/v1/routes", {"driver_id": driver["id"], "day": datetime.now(UTC).date().isoformat(),
                                             "planned_start": iso(datetime.now(UTC)), "shipment_ids": [sid]})
    assert route.status == 201, route.body
    assert api(demo, "POST", f"/v1/routes/{route.body['id']}/start").status == 200
    done = http_json("POST", f"{demo['base_url']}/v1/driver/shipments/{sid}/status",
                     {"status": "delivered", "occurred_at": iso(datetime.now(UTC))}, token=driver["token"])
    assert done.status == 200, done.body

    timeline = api(demo, "GET", f"/v1/shipments/{sid}/timeline").body["items"]
    wanted = {e["id"] for e in timeline}
    assert [e["type"] for e in timeline] == ["created", "assigned", "out_for_delivery", "delivered"]
    wait_for(lambda: wanted <= {e["event_id"] for e in received(stack)})
    time.sleep(1.0)  # a duplicate would arrive right behind the first copy
    events = received(stack)
    mine = [e for e in events if e["event_id"] in wanted]
    assert sorted(e["event_id"] for e in mine) == sorted(wanted)  # each once
    assert all(e["signature_valid"] for e in mine), [e["signature_problem"] for e in mine]
    assert {e["type"] for e in mine} == {"created", "assigned", "out_for_delivery", "delivered"}
    assert {e["shipment_id"] for e in mine} == {sid}
    assert {e["body"]["data"]["external_ref"] for e in mine} == {"hook-1"}
    # Nothing the stack sent so far arrived twice, and the seeded demo shipments' events arrived too.
    assert [eid for eid, n in Counter(e["event_id"] for e in events).items() if n > 1] == []
    assert {e["shipment_id"] for e in events if e["type"] == "created"} >= set(demo["shipment_ids"])

    log = api(demo, "GET", "/v1/webhook/deliveries?limit=100").body["items"]
    states = {d["event_id"]: (d["state"], d["attempts"], d["last_status_code"]) for d in log}
    assert {states[eid] for eid in wanted} == {("delivered", 1, 200)}

    outbox = run_module("infra.local.outbox", "--demo", demo_path, "--json")
    assert outbox.returncode == 0, outbox.stderr
    hooks = {h["event_id"]: h for h in json.loads(outbox.stdout)["webhooks"]}
    assert {(hooks[eid]["count"], hooks[eid]["signature_valid"]) for eid in wanted} == {(1, True)}
