"""POST /v1/routes/{id}/optimize and `optimize: true` on creation: the new order, its totals, the stop in progress
kept first, bad input as 4xx, and the driver app, timeline and ETA item following the new order."""

from __future__ import annotations

from typing import Any

from tests.integration.conftest import Merchant
from tests.integration.helpers import iso, make_driver, make_shipment, now_ms, post_pings
from tests.integration.test_pipeline import drain, runner  # noqa: F401  (fixture)
from tests.integration.test_route_operations import driver_view, fail_stop, route_of, start, timeline_types

Json = dict[str, Any]

# Along one street northwards, given out of order: 0, 4, 1, 3, 2 (km): an obvious best order exists.
_KM = (0, 4, 1, 3, 2)


def _ships(merchant: Merchant, kms: tuple[int, ...] = _KM, **overrides: Any) -> list[Json]:
    return [make_shipment(merchant, n + 1, location={"lat": 47.6 + km * 0.009, "lng": -122.3}, time_window=None,
                          **overrides) for n, km in enumerate(kms)]


def _optimize(merchant: Merchant, route_id: str, body: Json | None = None) -> Any:
    return merchant.call("POST", f"/v1/routes/{route_id}/optimize", body if body is not None else {})


def test_optimize_a_planned_route_answers_the_new_order_and_totals(merchant: Merchant) -> None:
    driver = make_driver(merchant)
    ships = _ships(merchant)
    route = route_of(merchant, driver, ships)
    r = _optimize(merchant, route["id"], {"version": route["version"]})
    assert r.status_code == 200, r.body
    out = r.json_body
    order = [s["shipment_id"] for s in out["route"]["stops"]]
    by_km = [ships[i]["id"] for i in sorted(range(len(_KM)), key=lambda i: _KM[i])]
    assert out["start"] == "first_stop" and out["changed"] is True
    assert order == by_km
    assert out["after"]["travel_s"] < out["before"]["travel_s"]
    assert out["after"]["distance_m"] < out["before"]["distance_m"]
    assert out["unmet_windows"] == [] and out["route"]["version"] == route["version"] + 1
    got = merchant.call("GET", f"/v1/routes/{route['id']}").json_body
    assert [s["shipment_id"] for s in got["stops"]] == by_km
    assert "route_optimized" in timeline_types(merchant, ships[1]["id"])
    stop = merchant.call("GET", f"/v1/shipments/{ships[1]['id']}").json_body
    assert stop["stop_index"] == by_km.index(ships[1]["id"])
    again = _optimize(merchant, route["id"])  # already the best: nothing written
    assert again.status_code == 200 and again.json_body["changed"] is False
    assert again.json_body["route"]["version"] == route["version"] + 1


def test_create_with_optimize_true_answers_the_optimized_route(merchant: Merchant) -> None:
    driver = make_driver(merchant)
    ships = _ships(merchant)
    r = merchant.call("POST", "/v1/routes", {"driver_id": driver["id"], "day": iso(now_ms())[:10],
                                             "planned_start": iso(now_ms()), "optimize": True,
                                             "shipment_ids": [s["id"] for s in ships]})
    assert r.status_code == 201, r.body
    by_km = [ships[i]["id"] for i in sorted(range(len(_KM)), key=lambda i: _KM[i])]
    assert [s["shipment_id"] for s in r.json_body["stops"]] == by_km


def test_an_active_route_keeps_its_stop_in_progress_first_and_the_driver_app_follows(merchant: Merchant) -> None:
    from chalicelib.storage import get_repository

    driver = make_driver(merchant)
    ships = _ships(merchant, (0, 4, 1, 3, 2))
    route = start(merchant, route_of(merchant, driver, ships)).json_body
    repo = get_repository()
    # The driver is at the 4 km stop (arrived): it stays first, whatever the geometry says.
    in_progress = repo.get_shipment(merchant.id, ships[1]["id"])
    assert in_progress is not None
    in_progress.update(actions=[type(in_progress).status.set("arrived")])
    repo.put_route_eta(_eta_item(merchant.id, route["id"]))  # ETAs aligned with the old order
    assert repo.route_eta(route["id"]) is not None
    r = _optimize(merchant, route["id"])
    assert r.status_code == 200, r.body
    out = r.json_body
    order = [s["shipment_id"] for s in out["route"]["stops"]]
    assert out["start"] == "stop_in_progress"
    assert order[0] == ships[1]["id"]
    # From 4 km: 3, 2, 1, 0 km is the least travel.
    assert order[1:] == [ships[3]["id"], ships[4]["id"], ships[2]["id"], ships[0]["id"]]
    app = driver_view(merchant, driver)
    assert [s["shipment_id"] for s in app["stops"]] == order
    assert app["next_shipment_id"] == ships[1]["id"]
    assert repo.route_eta(route["id"]) is None  # the old order's ETA item is gone: the pipeline recomputes


def _eta_item(merchant_id: str, route_id: str) -> Any:
    from datetime import UTC, datetime, timedelta

    from chalicelib.storage.tables import ROUTE_ETA_SK, RouteEtaItem, route_eta_pk

    at = now_ms()
    return RouteEtaItem(route_eta_pk(route_id), ROUTE_ETA_SK, merchant_id=merchant_id, route_id=route_id, at_ms=at,
                        base_ms=at - at % 1000, etas="", expires_at=datetime.now(UTC) + timedelta(days=1))


def test_bad_input_answers_4xx_naming_the_field(merchant: Merchant) -> None:
    driver = make_driver(merchant)
    one = route_of(merchant, driver, _ships(merchant, (0,)))
    r = _optimize(merchant, one["id"])
    assert r.status_code == 422 and r.json_body["error"]["details"][0]["field"] == "stops", r.body
    route = route_of(merchant, make_driver(merchant), _ships(merchant, (0, 2, 1)))
    assert _optimize(merchant, route["id"], {"version": route["version"] + 5}).status_code == 409
    r = _optimize(merchant, route["id"], {"start": "depot"})
    assert r.status_code == 422 and r.json_body["error"]["details"][0]["field"] == "start", r.body
    r = _optimize(merchant, route["id"], {"return_to_depot": True})
    assert r.status_code == 422 and r.json_body["error"]["details"][0]["field"] == "return_to_depot", r.body
    r = _optimize(merchant, route["id"], {"start": "driver"})
    assert r.status_code == 422 and r.json_body["error"]["details"][0]["field"] == "start", r.body
    assert _optimize(merchant, route["id"], {"start": "moon"}).status_code == 422
    assert _optimize(merchant, "rte_nope").status_code == 404


def test_impossible_windows_are_named_not_refused(merchant: Merchant) -> None:
    driver = make_driver(merchant)
    closed = {"start": iso(now_ms() - 7_200_000), "end": iso(now_ms() - 3_600_000)}
    ships = [make_shipment(merchant, 1, location={"lat": 47.6, "lng": -122.3}, time_window=None),
             make_shipment(merchant, 2, location={"lat": 47.62, "lng": -122.3}, time_window=closed),
             make_shipment(merchant, 3, location={"lat": 47.61, "lng": -122.3}, time_window=None)]
    route = route_of(merchant, driver, ships)  # planned_start: 10 minutes ago; the window closed an hour ago
    r = _optimize(merchant, route["id"])
    assert r.status_code == 200, r.body
    assert r.json_body["unmet_windows"] == [ships[1]["id"]]
    assert len(r.json_body["route"]["stops"]) == 3


def test_a_depot_start_and_return(merchant: Merchant) -> None:
    ring = [[-122.301, 47.599], [-122.299, 47.599], [-122.299, 47.601], [-122.301, 47.601], [-122.301, 47.599]]
    assert merchant.call("POST", "/v1/zones", {"name": "Depot", "kind": "depot", "geometry": {
        "type": "Polygon", "coordinates": [ring]}}).status_code == 201
    route = route_of(merchant, make_driver(merchant), _ships(merchant, (3, 1, 2)))
    r = _optimize(merchant, route["id"], {"return_to_depot": True})
    assert r.status_code == 200, r.body
    assert r.json_body["start"] == "depot"
    # Out and back along one street: any order that does not zigzag costs the same; ours zigzags less than given.
    assert r.json_body["after"]["distance_m"] <= r.json_body["before"]["distance_m"]


def test_route_optimized_is_a_webhook_event_type() -> None:
    from typing import get_args

    from chalicelib.webhooks.models import WebhookEventType

    assert "route_optimized" in get_args(WebhookEventType)


def test_the_etas_follow_the_new_order_at_the_next_pings(
        merchant: Merchant, runner: Any) -> None:  # noqa: F811  (runner: test_pipeline's fixture, imported)
    from chalicelib.storage import get_repository

    driver = make_driver(merchant)
    base = (47.6205, -122.3493)
    far, near, middle = (_ship_at(merchant, n, base, km) for n, km in ((1, 3.0), (2, 1.0), (3, 2.0)))
    route = start(merchant, route_of(merchant, driver, [far, near, middle])).json_body
    t0 = now_ms() - 600_000

    def fixes(at_ms: int, north_m: float) -> list[Json]:
        return [{"lat": base[0] + (north_m + 20 * i) / 111_320, "lng": base[1], "fix_time": iso(at_ms + i * 10_000),
                 "accuracy": 8, "speed": 2} for i in range(3)]

    assert post_pings(merchant.client, driver["token"], fixes(t0, 0)).json_body["rejected"] == 0
    drain(runner)
    r = _optimize(merchant, route["id"])
    assert r.status_code == 200, r.body
    assert r.json_body["start"] == "driver"
    order = [s["shipment_id"] for s in r.json_body["route"]["stops"]]
    assert order == [near["id"], middle["id"], far["id"]]
    assert post_pings(merchant.client, driver["token"], fixes(t0 + 120_000, 60)).json_body["rejected"] == 0
    drain(runner)
    eta = get_repository().route_eta(route["id"])
    assert eta is not None
    windows = [eta.window(i) for i in range(3)]
    assert all(w is not None for w in windows), windows
    expected = [w[1] for w in windows if w is not None]
    assert expected == sorted(expected) and expected[0] < expected[2], windows
    etas = [merchant.call("GET", f"/v1/shipments/{sid}").json_body["eta"] for sid in order]
    assert all(e is not None for e in etas), etas


def _ship_at(merchant: Merchant, n: int, base: tuple[float, float], km_north: float) -> Json:
    return make_shipment(merchant, n, location={"lat": base[0] + km_north * 1000 / 111_320, "lng": base[1]},
                         time_window=None)


def test_after_a_failed_stop_and_a_new_one_the_rest_is_reordered_and_done_stops_stay_in_front(
        merchant: Merchant) -> None:
    driver = make_driver(merchant)
    ships = _ships(merchant, (0, 4, 1))
    route = start(merchant, route_of(merchant, driver, ships)).json_body
    fail_stop(merchant, driver, ships[0]["id"])
    added = _ships(merchant, (3,))[0]
    patched = merchant.call("PATCH", f"/v1/routes/{route['id']}", {
        "version": merchant.call("GET", f"/v1/routes/{route['id']}").json_body["version"],
        "shipment_ids": [*(s["id"] for s in ships), added["id"]]})
    assert patched.status_code == 200, patched.body
    r = _optimize(merchant, route["id"], {"start": "first_stop"})
    assert r.status_code == 200, r.body
    order = [s["shipment_id"] for s in r.json_body["route"]["stops"]]
    # The failed stop keeps its place; from the first stop still to do (4 km), 3 km then 1 km.
    assert order == [ships[0]["id"], ships[1]["id"], added["id"], ships[2]["id"]]


def test_the_order_follows_the_merchants_early_arrival_policy(merchant: Merchant) -> None:
    """Stop A (1 km) opens in 3 h; stop B (5 km) closes within the hour. Drivers who deliver early take A on the
    way to B; drivers who wait for windows must serve B first (waiting at A would make B late)."""
    hour = 3_600_000
    at = now_ms()

    def window(opens_ms: int, closes_ms: int) -> Json:
        return {"start": iso(opens_ms), "end": iso(closes_ms)}

    def order_under(policy: str) -> list[str]:
        assert merchant.call("PATCH", "/v1/settings", {"early_arrival": policy}).status_code == 200
        driver = make_driver(merchant)
        first = make_shipment(merchant, 1, location={"lat": 47.6, "lng": -122.3}, time_window=None)
        a = make_shipment(merchant, 2, location={"lat": 47.6 + 0.009, "lng": -122.3},
                          time_window=window(at + 3 * hour, at + 5 * hour))
        b = make_shipment(merchant, 3, location={"lat": 47.6 + 5 * 0.009, "lng": -122.3},
                          time_window=window(at - hour, at + hour))
        route = route_of(merchant, driver, [first, b, a])
        r = _optimize(merchant, route["id"])
        assert r.status_code == 200, r.body
        assert r.json_body["unmet_windows"] == []
        names = {first["id"]: "first", a["id"]: "A", b["id"]: "B"}
        return [names[s["shipment_id"]] for s in r.json_body["route"]["stops"]]

    assert order_under("deliver") == ["first", "A", "B"]
    assert order_under("wait") == ["first", "B", "A"]
