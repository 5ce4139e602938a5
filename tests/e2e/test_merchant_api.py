"""(c) Merchant resources over HTTP and (d) tenant isolation between merchants."""

from __future__ import annotations

import json
import urllib.parse
import uuid
from pathlib import Path
from typing import Any

import pytest

from infra.local.stack import LocalStack, create_merchant, http_json
from tests.e2e.conftest import api, new_driver

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _shipment(ref: str) -> dict[str, Any]:
    return {"recipient": {"name": "E2E Recipient", "phone": "+15555550199"},
            "address": {"line1": "1 Test Way", "city": "Seattle", "country": "US"},
            "location": {"lat": 47.6553, "lng": -122.3035}, "external_ref": ref}


def test_driver_and_idempotent_shipment_create(demo: dict[str, Any]) -> None:
    driver = new_driver(demo)
    assert driver["id"].startswith("drv_") and driver["token"]
    assert api(demo, "GET", f"/v1/drivers/{driver['id']}").status == 200

    key = f"e2e-{uuid.uuid4()}"
    body = _shipment(key)
    first = api(demo, "POST", "/v1/shipments", body, **{"Idempotency-Key": key})
    assert first.status == 201, first.body
    replay = api(demo, "POST", "/v1/shipments", body, **{"Idempotency-Key": key})
    assert replay.status == 200, replay.body
    assert replay.body["id"] == first.body["id"]
    assert replay.headers.get("idempotent-replayed") == "true"

    reused = api(demo, "POST", "/v1/shipments", {**body, "instructions": "different"}, **{"Idempotency-Key": key})
    assert reused.status == 422, reused.body

    fetched = api(demo, "GET", f"/v1/shipments/{first.body['id']}")
    assert fetched.status == 200 and fetched.body["status"] == "created"


def test_list_shipments_by_status_pages_with_a_cursor(demo: dict[str, Any]) -> None:
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        query = {"status": "out_for_delivery", "limit": "3", **({"cursor": cursor} if cursor else {})}
        page = api(demo, "GET", f"/v1/shipments?{urllib.parse.urlencode(query)}")
        assert page.status == 200, page.body
        assert all(item["status"] == "out_for_delivery" for item in page.body["items"])
        seen += [item["id"] for item in page.body["items"]]
        pages += 1
        cursor = page.body["next_cursor"]
        if cursor is None:
            break
        assert pages < 50, "the cursor never ends"
    assert pages >= 2
    late = [demo["exceptions_demo"]["shipment_id"]] if demo.get("exceptions_demo") else []  # the console's demo
    assert sorted(seen) == sorted(demo["shipment_ids"] + late)  # every one, none twice


def test_another_merchant_gets_404_for_every_demo_resource(stack: LocalStack, demo: dict[str, Any]) -> None:
    _, other_key = create_merchant(stack.app_env, "Other Merchant", isolated=True)
    base, sid, did, rid = demo["base_url"], demo["shipment_ids"][0], demo["driver_id"], demo["route_id"]
    for method, path in [("GET", f"/v1/shipments/{sid}"), ("GET", f"/v1/shipments/{sid}/timeline"),
                         ("POST", f"/v1/shipments/{sid}/cancel"), ("GET", f"/v1/drivers/{did}"),
                         ("GET", f"/v1/drivers/{did}/position"), ("POST", f"/v1/drivers/{did}/token"),
                         ("GET", f"/v1/routes/{rid}"), ("POST", f"/v1/routes/{rid}/start")]:
        result = http_json(method, f"{base}{path}", token=other_key)
        assert result.status == 404, (method, path, result.status, result.body)
        assert result.body["error"]["code"]

    own_driver = http_json("POST", f"{base}/v1/drivers", {"name": "Other Driver"}, token=other_key).body
    steal = http_json("POST", f"{base}/v1/routes", {"driver_id": own_driver["id"], "day": "2030-01-01",
                                                    "planned_start": "2030-01-01T08:00:00Z", "shipment_ids": [sid]},
                      token=other_key)
    assert steal.status == 404, steal.body
    listing = http_json("GET", f"{base}/v1/shipments?status=out_for_delivery", token=other_key)
    assert listing.status == 200 and listing.body["items"] == []
    # Nothing the other merchant tried changed the demo merchant's data.
    mine = api(demo, "GET", f"/v1/shipments/{sid}")
    assert mine.status == 200 and mine.body["status"] == "out_for_delivery" and mine.body["route_id"] == rid


def test_unknown_methods_answer_the_json_405_over_http(demo: dict[str, Any]) -> None:
    """`chalice local` alone answered TRACE with a 501 HTML page; the stack hands every method to the app."""
    import http.client
    import json

    parts = urllib.parse.urlsplit(demo["base_url"])
    for method in ("TRACE", "PROPFIND"):
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        connection.request(method, "/v1/shipments", headers={"Authorization": f"Bearer {demo['merchant_api_key']}"})
        answer = connection.getresponse()
        body = answer.read()
        connection.close()
        assert (answer.status, answer.getheader("Content-Type")) == (405, "application/json"), (method, body)
        assert json.loads(body)["error"]["code"] == "method_not_allowed"
        assert set(answer.getheader("Allow", "").replace(" ", "").split(",")) == {"GET", "POST"}


def test_an_unknown_path_answers_the_json_404_over_http(demo: dict[str, Any]) -> None:
    """Not chalice's imitation of API Gateway's 403 "Missing Authentication Token": the app's 404."""
    import http.client

    parts = urllib.parse.urlsplit(demo["base_url"])
    key = {"Authorization": f"Bearer {demo['merchant_api_key']}"}
    for method, path, headers in (("GET", "/nope", {}), ("POST", "/v1/nope", {"Authorization": "Bearer x"}),
                                  ("GET", "/v1/shipments/a/b", key)):
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        connection.request(method, path, headers=headers)
        answer = connection.getresponse()
        body = answer.read()
        connection.close()
        assert (answer.status, answer.getheader("Content-Type")) == (404, "application/json"), (path, body)
        assert json.loads(body)["error"]["code"] == "not_found"


def test_make_merchant_adds_a_second_tenant_to_the_running_stack(demo: dict[str, Any], demo_path: Path) -> None:
    """`make merchant NAME=...` with nothing exported: the new key works at once and sees none of the demo's data."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "DOORSTEP_"))}
    proc = subprocess.run([sys.executable, "-m", "infra.local.merchant", "--name", "Acme", "--json",
                           "--demo", str(demo_path)], cwd=Path(__file__).resolve().parents[2], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    acme = json.loads(proc.stdout)
    assert acme["merchant_id"] != demo["merchant_id"]
    tenant = {**demo, "merchant_api_key": acme["api_key"]}
    listing = api(tenant, "GET", "/v1/shipments")
    assert listing.status == 200 and listing.body["items"] == []
    assert api(tenant, "GET", f"/v1/shipments/{demo['shipment_ids'][0]}").status == 404
