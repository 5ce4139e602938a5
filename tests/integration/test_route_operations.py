"""Route operations on the merchant API: listing, versioned stop edits, reassignment, moving a stop, one active
route per driver, completion (by the merchant, and by itself from the stream pipeline, redelivery included), and
what the driver app shows after each."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.integration.conftest import Merchant
from tests.integration.helpers import iso, make_driver, make_shipment, now_ms, post_pings
from tests.integration.test_pipeline import STOP, drain, drive_park_leave, offset, runner  # noqa: F401  (fixture)

Json = dict[str, Any]


def today() -> str:
    return datetime.now(UTC).date().isoformat()


def route_of(merchant: Merchant, driver: Json, ships: list[Json], day: str | None = None) -> Json:
    r = merchant.call("POST", "/v1/routes", {"driver_id": driver["id"], "day": day or today(),
                                             "planned_start": iso(now_ms() - 600_000),
                                             "shipment_ids": [s["id"] for s in ships]})
    assert r.status_code == 201, r.body
    return r.json_body  # type: ignore[no-any-return]


def start(merchant: Merchant, route: Json) -> Any:
    return merchant.call("POST", f"/v1/routes/{route['id']}/start")


def driver_view(merchant: Merchant, driver: Json) -> Json:
    r = merchant.client.http.get("/v1/driver/route", headers={"Authorization": f"Bearer {driver['token']}"})
    assert r.status_code == 200, r.body
    return r.json_body  # type: ignore[no-any-return]


def status_of(merchant: Merchant, shipment_id: str) -> str:
    return str(merchant.call("GET", f"/v1/shipments/{shipment_id}").json_body["status"])


def timeline_types(merchant: Merchant, shipment_id: str) -> list[str]:
    return [e["type"] for e in merchant.call("GET", f"/v1/shipments/{shipment_id}/timeline").json_body["items"]]


def fail_stop(merchant: Merchant, driver: Json, shipment_id: str) -> None:
    r = merchant.client.http.post(f"/v1/driver/shipments/{shipment_id}/status",
                                  headers={"Authorization": f"Bearer {driver['token']}",
                                           "Content-Type": "application/json"},
                                  body=json.dumps({"status": "failed", "reason": "not_home",
                                                   "occurred_at": iso(now_ms() - 1000)}))
    assert r.status_code == 200, r.body


def stream_lifecycle(merchant: Merchant, shipment_id: str, to_status: str) -> None:
    """The stream pipeline's handling of the shipment's status event, as the stream would hand it over."""
    from chalicelib.pipeline.service import handle_lifecycle
    from chalicelib.storage import get_repository

    handle_lifecycle(get_repository(), {"merchant_id": merchant.id, "shipment_id": shipment_id, "type": to_status,
                                        "to_status": to_status, "occurred_at": iso(now_ms())})


# --- listing ------------------------------------------------------------------------------------------


def test_routes_list_by_date_driver_and_status_with_paging(merchant: Merchant) -> None:
    ana, bo = make_driver(merchant, "Ana"), make_driver(merchant, "Bo")
    a1 = route_of(merchant, ana, [make_shipment(merchant, 1)])
    b1 = route_of(merchant, bo, [make_shipment(merchant, 2)])
    a2 = route_of(merchant, ana, [make_shipment(merchant, 3)], day="2031-01-05")
    assert start(merchant, b1).status_code == 200

    def ids(query: str) -> set[str]:
        r = merchant.call("GET", f"/v1/routes?{query}")
        assert r.status_code == 200, r.body
        return {i["id"] for i in r.json_body["items"]}

    assert ids("") == {a1["id"], b1["id"], a2["id"]}
    assert ids(f"date={today()}") == {a1["id"], b1["id"]}
    assert ids(f"driver_id={ana['id']}") == {a1["id"], a2["id"]}
    assert ids(f"driver_id={ana['id']}&date=2031-01-05") == {a2["id"]}
    assert ids(f"date={today()}&status=active") == {b1["id"]}
    assert ids("status=planned") == {a1["id"], a2["id"]}
    seen: list[str] = []
    cursor = None
    for _ in range(5):
        r = merchant.call("GET", "/v1/routes?limit=1" + (f"&cursor={cursor}" if cursor else ""))
        seen += [i["id"] for i in r.json_body["items"]]
        cursor = r.json_body["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted({a1["id"], b1["id"], a2["id"]})
    bad = merchant.call("GET", "/v1/routes?status=lost")
    assert bad.status_code == 422 and "status" in json.dumps(bad.json_body)


# --- PATCH -------------------------------------------------------------------------------------------


def test_patch_adds_removes_and_reorders_stops_of_an_active_route(merchant: Merchant) -> None:
    driver = make_driver(merchant)
    s1, s2, s3 = (make_shipment(merchant, n) for n in (1, 2, 3))
    route = route_of(merchant, driver, [s1, s2])
    route = start(merchant, route).json_body
    new = make_shipment(merchant, 4)
    r = merchant.call("PATCH", f"/v1/routes/{route['id']}",
                      {"version": route["version"], "shipment_ids": [new["id"], s2["id"]]})
    assert r.status_code == 200, r.body
    assert [s["shipment_id"] for s in r.json_body["stops"]] == [new["id"], s2["id"]]
    assert r.json_body["version"] == route["version"] + 1
    assert status_of(merchant, new["id"]) == "out_for_delivery"  # joined an active route
    assert status_of(merchant, s1["id"]) == "created"  # left it, to be planned again
    assert status_of(merchant, s3["id"]) == "created"  # never on it
    assert "route_changed" in timeline_types(merchant, s1["id"])
    assert "route_changed" in timeline_types(merchant, s2["id"])
    view = driver_view(merchant, driver)  # the driver app's next poll shows the new stops
    assert [s["shipment_id"] for s in view["stops"]] == [new["id"], s2["id"]]
    assert [s["sequence"] for s in view["stops"]] == [0, 1]

    stale = merchant.call("PATCH", f"/v1/routes/{route['id']}",
                          {"version": route["version"], "shipment_ids": [s2["id"]]})
    assert stale.status_code == 409 and "version" in json.dumps(stale.json_body)
    assert len(driver_view(merchant, driver)["stops"]) == 2  # nothing changed


def test_patch_refuses_shipments_that_cannot_join_and_bad_bodies(merchant: Merchant) -> None:
    driver = make_driver(merchant)
    s1, s2 = make_shipment(merchant, 1), make_shipment(merchant, 2)
    route = route_of(merchant, driver, [s1])
    other = route_of(merchant, make_driver(merchant, "Other"), [s2])
    r = merchant.call("PATCH", f"/v1/routes/{route['id']}", {"version": 0, "shipment_ids": [s1["id"], s2["id"]]})
    assert r.status_code == 409 and "shipment_ids[1]" in json.dumps(r.json_body)
    r = merchant.call("PATCH", f"/v1/routes/{route['id']}", {"version": 0, "shipment_ids": [s1["id"], "shp_nope"]})
    assert r.status_code == 404 and "shipment_ids[1]" in json.dumps(r.json_body)
    r = merchant.call("PATCH", f"/v1/routes/{route['id']}", {"version": 0, "shipment_ids": [s1["id"], s1["id"]]})
    assert r.status_code == 422
    r = merchant.call("PATCH", f"/v1/routes/{route['id']}", {"shipment_ids": [s1["id"]]})
    assert r.status_code == 422 and "version" in json.dumps(r.json_body)
    assert merchant.call("PATCH", "/v1/routes/rte_nope", {"version": 0, "shipment_ids": [s1["id"]]}).status_code == 404
    assert other["stops"][0]["shipment_id"] == s2["id"]


# --- reassignment and moving a stop -----------------------------------------------------------------


def test_reassigning_an_active_route_moves_it_between_the_drivers_apps(merchant: Merchant) -> None:
    ana, bo = make_driver(merchant, "Ana"), make_driver(merchant, "Bo")
    ships = [make_shipment(merchant, 1), make_shipment(merchant, 2)]
    route = start(merchant, route_of(merchant, ana, ships)).json_body
    r = merchant.call("POST", f"/v1/routes/{route['id']}/reassign", {"driver_id": bo["id"]})
    assert r.status_code == 200, r.body
    assert r.json_body["driver_id"] == bo["id"]
    assert driver_view(merchant, ana)["route"] is None
    assert driver_view(merchant, bo)["route"]["id"] == route["id"]
    assert "reassigned" in timeline_types(merchant, ships[0]["id"])
    # the shipments follow, so the new driver's pings drive them; the old driver is free for another route
    from chalicelib.storage import get_repository

    assert get_repository().get_shipment(merchant.id, ships[0]["id"]).driver_id == bo["id"]  # type: ignore[union-attr]
    again = start(merchant, route_of(merchant, ana, [make_shipment(merchant, 3)]))
    assert again.status_code == 200, again.body
    # Bo's active route is this one: a second one for Bo is refused, naming it
    second = start(merchant, route_of(merchant, bo, [make_shipment(merchant, 4)]))
    assert second.status_code == 409 and route["id"] in json.dumps(second.json_body)
    # and handing Ana's active route to Bo too
    refused = merchant.call("POST", f"/v1/routes/{again.json_body['id']}/reassign", {"driver_id": bo["id"]})
    assert refused.status_code == 409 and route["id"] in json.dumps(refused.json_body)
    assert merchant.call("POST", f"/v1/routes/{route['id']}/reassign", {"driver_id": "drv_nope"}).status_code == 404


def test_moving_one_stop_to_another_drivers_route(merchant: Merchant) -> None:
    ana, bo = make_driver(merchant, "Ana"), make_driver(merchant, "Bo")
    s1, s2, s3 = (make_shipment(merchant, n) for n in (1, 2, 3))
    source = start(merchant, route_of(merchant, ana, [s1, s2])).json_body
    target = route_of(merchant, bo, [s3])  # planned
    r = merchant.call("POST", f"/v1/routes/{source['id']}/stops/{s1['id']}/move", {"route_id": target["id"]})
    assert r.status_code == 200, r.body
    assert [s["shipment_id"] for s in r.json_body["stops"]] == [s3["id"], s1["id"]]
    assert status_of(merchant, s1["id"]) == "assigned"  # onto a planned route
    assert [s["shipment_id"] for s in driver_view(merchant, ana)["stops"]] == [s2["id"]]
    assert driver_view(merchant, ana)["stops"][0]["sequence"] == 0
    assert "reassigned" in timeline_types(merchant, s1["id"])
    gone = merchant.call("POST", f"/v1/routes/{source['id']}/stops/{s1['id']}/move", {"route_id": target["id"]})
    assert gone.status_code == 404


# --- one active route per driver, completion ---------------------------------------------------------


def test_one_active_route_per_driver_and_completion_frees_the_driver(merchant: Merchant) -> None:
    driver = make_driver(merchant)
    first = start(merchant, route_of(merchant, driver, [make_shipment(merchant, 1)])).json_body
    second = route_of(merchant, driver, [make_shipment(merchant, 2)])
    r = start(merchant, second)
    assert r.status_code == 409 and first["id"] in json.dumps(r.json_body)
    done = merchant.call("POST", f"/v1/routes/{first['id']}/complete")
    assert done.status_code == 200 and done.json_body["status"] == "completed"
    assert status_of(merchant, first["stops"][0]["shipment_id"]) == "created"  # still to do: back to planning
    assert "route_completed" in timeline_types(merchant, first["stops"][0]["shipment_id"])
    assert start(merchant, second).status_code == 200
    assert merchant.call("POST", f"/v1/routes/{first['id']}/complete").status_code == 409
    edit = merchant.call("PATCH", f"/v1/routes/{first['id']}", {"version": 99, "shipment_ids": ["shp_x"]})
    assert edit.status_code == 409


def test_a_route_completes_by_itself_after_its_last_stop_even_when_the_stream_redelivers(merchant: Merchant) -> None:
    driver = make_driver(merchant)
    s1, s2 = make_shipment(merchant, 1), make_shipment(merchant, 2)
    route = start(merchant, route_of(merchant, driver, [s1, s2])).json_body
    fail_stop(merchant, driver, s1["id"])
    stream_lifecycle(merchant, s1["id"], "failed")
    assert merchant.call("GET", f"/v1/routes/{route['id']}").json_body["status"] == "active"  # one stop to go
    fail_stop(merchant, driver, s2["id"])
    for _ in range(2):  # the stream delivers the record twice
        stream_lifecycle(merchant, s2["id"], "failed")
    got = merchant.call("GET", f"/v1/routes/{route['id']}").json_body
    assert got["status"] == "completed" and got["completed_at"] is not None
    assert timeline_types(merchant, s1["id"]).count("route_completed") == 1
    # the driver app keeps the day's route, completed, with each stop's result
    view = driver_view(merchant, driver)
    assert view["route"]["status"] == "completed"
    assert [s["status"] for s in view["stops"]] == ["failed", "failed"]
    # the driver may start another route now
    assert start(merchant, route_of(merchant, driver, [make_shipment(merchant, 3)])).status_code == 200


def test_route_event_types_are_in_the_webhook_catalogue() -> None:
    from typing import get_args

    from chalicelib.webhooks.models import WebhookEventType

    assert {"route_changed", "reassigned", "route_completed"} <= set(get_args(WebhookEventType))


# --- the stream pipeline follows an edit ----------------------------------------------------------


def test_a_stop_added_to_an_active_route_is_tracked_at_the_next_pings(
        merchant: Merchant, runner: Any) -> None:  # noqa: F811  (runner: test_pipeline's fixture, imported)
    """The pipeline caches a route's stops for minutes; an edit makes it read them again at the next batch."""
    driver = make_driver(merchant)
    far = make_shipment(merchant, 1, location={"lat": STOP[0] + 0.05, "lng": STOP[1]})
    route = start(merchant, route_of(merchant, driver, [far])).json_body
    t0 = now_ms() - 3_700_000
    early = [{"lat": offset(*STOP, -3000, 0)[0], "lng": STOP[1], "fix_time": iso(t0 + i * 10_000), "accuracy": 8,
              "speed": 10} for i in range(3)]
    assert post_pings(merchant.client, driver["token"], early).json_body["rejected"] == 0
    drain(runner)  # the driver's state now caches the route's one stop
    target = make_shipment(merchant, 2, location={"lat": STOP[0], "lng": STOP[1]})
    r = merchant.call("PATCH", f"/v1/routes/{route['id']}",
                      {"version": route["version"], "shipment_ids": [target["id"], far["id"]]})
    assert r.status_code == 200, r.body
    fixes = drive_park_leave(t0 + 100_000)
    for begin in range(0, len(fixes), 10):
        assert post_pings(merchant.client, driver["token"], fixes[begin:begin + 10]).json_body["rejected"] == 0
    drain(runner)
    kinds = timeline_types(merchant, target["id"])
    assert "arrived" in kinds, kinds
    assert status_of(merchant, far["id"]) == "out_for_delivery"


def test_long_edits_are_cut_into_transactions_within_the_limit() -> None:
    from chalicelib.storage.repository import TRANSACTION_LIMIT, _write_chunks
    from chalicelib.storage.tables import ShipmentItem

    shipment = ShipmentItem("PK", "SK")
    writes: list[Any] = [(shipment, [], [object()] * (i % 3)) for i in range(300)]
    chunks = _write_chunks(writes, TRANSACTION_LIMIT - 3)
    assert [w for chunk in chunks for w in chunk] == writes
    sizes = [sum(1 + len(w[2]) for w in chunk) for chunk in chunks]
    assert sizes[0] <= TRANSACTION_LIMIT - 3 and max(sizes) <= TRANSACTION_LIMIT


def test_concurrent_starts_and_edits_have_one_winner(merchant: Merchant) -> None:
    """Two starts of two routes of one driver at once, and two edits of one version at once: the conditional
    writes let exactly one of each through (the others are 409s), whatever the interleaving."""
    from concurrent.futures import ThreadPoolExecutor

    from chalicelib.core.config import get_settings
    from chalicelib.core.errors import DomainError

    if not get_settings().ddb_endpoint_url:
        # moto's transactions copy the table unlocked (threads break it); the real engine runs this test in
        # tests/integration/on_dynamodb_local/test_route_operations.py.
        pytest.skip("needs transactions that are atomic across threads: runs on DynamoDB Local")
    from chalicelib.shipments import routes as route_service
    from chalicelib.shipments.models import RoutePatch
    from chalicelib.storage.repository import Repository

    driver = make_driver(merchant)
    planned = [route_of(merchant, driver, [make_shipment(merchant, n)]) for n in (1, 2, 3)]

    def outcome(action: Any) -> str:
        try:
            action()
        except DomainError as exc:
            return exc.code
        return "ok"

    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda r: outcome(lambda: route_service.start_route(Repository(), merchant.id,
                                                                                    r["id"])), planned))
    assert sorted(results) == ["conflict", "conflict", "ok"], results
    winner = planned[results.index("ok")]
    extra = [make_shipment(merchant, n) for n in (4, 5)]
    edits = [RoutePatch(version=1, shipment_ids=[winner["stops"][0]["shipment_id"], s["id"]]) for s in extra]
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda body: outcome(lambda: route_service.edit_route(Repository(), merchant.id,
                                                                                      winner["id"], body)), edits))
    assert sorted(results) == ["conflict", "ok"], results
    stops = merchant.call("GET", f"/v1/routes/{winner['id']}").json_body["stops"]
    assert len(stops) == 2
    loser = extra[results.index("conflict")]
    assert status_of(merchant, loser["id"]) == "created"  # the losing edit left nothing behind


def test_removing_the_last_stop_still_to_do_completes_the_route(merchant: Merchant) -> None:
    driver = make_driver(merchant)
    s1, s2 = make_shipment(merchant, 1), make_shipment(merchant, 2)
    route = start(merchant, route_of(merchant, driver, [s1, s2])).json_body
    fail_stop(merchant, driver, s1["id"])
    r = merchant.call("PATCH", f"/v1/routes/{route['id']}", {"version": route["version"], "shipment_ids": [s1["id"]]})
    assert r.status_code == 200, r.body
    got = merchant.call("GET", f"/v1/routes/{route['id']}").json_body
    assert got["status"] == "completed"
    assert status_of(merchant, s2["id"]) == "created" and status_of(merchant, s1["id"]) == "failed"
    assert "route_completed" in timeline_types(merchant, s1["id"])
