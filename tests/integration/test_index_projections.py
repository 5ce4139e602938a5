"""The narrowed GSI projections (docs/data-model.md, "Table and indexes"): the pynamodb index classes declare
what infra/resources.json creates, and every reader of a narrowed index still answers every field its API
documents. Re-run against DynamoDB Local (on_dynamodb_local/), which, like DynamoDB, returns only what an
index projects; moto projects everything, so there these tests check the code paths, not the projection."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from tests.integration.helpers import iso, make_driver, make_started_route, now_ms, post_pings

RESOURCES = "infra/resources.json"


def _template_projections() -> dict[str, tuple[str, list[str]]]:
    from infra.local.resources import load_table_definition

    return {gsi["IndexName"]: (gsi["Projection"]["ProjectionType"], list(gsi["Projection"].get("NonKeyAttributes", [])))
            for gsi in load_table_definition()["GlobalSecondaryIndexes"]}


def test_pynamodb_index_projections_match_the_template() -> None:
    from chalicelib.storage import tables

    declared = {}
    for index in (tables.GSI1, tables.GSI2, tables.GSI3):
        projection = index.Meta.projection
        declared[index.Meta.index_name] = (projection.projection_type, list(projection.non_key_attributes or []))
    assert declared == _template_projections()
    assert declared["GSI2"][0] == declared["GSI3"][0] == "KEYS_ONLY"


def test_gsi1_carries_every_attribute_of_a_route_so_route_readers_need_no_second_read() -> None:
    from chalicelib.storage import tables

    # GSI2's keys, the edit version and completed_at are read only by the merchant API's route listing, which
    # reads its page's routes from the table (docs/data-model.md #72-#74): GSI1 need not carry them.
    route_attributes = set(tables.RouteItem.get_attributes()) - {"PK", "SK", "GSI1PK", "GSI1SK", "GSI2PK", "GSI2SK",
                                                                 "version", "completed_at"}
    assert route_attributes <= set(tables.GSI1_INCLUDE)
    # the deferred-notification and due-webhook readers read these (ledger.due, WebhookStore.due)
    assert {"not_before", "due_event", "merchant_id", "delivery_id", "endpoint_id", "attempts",
            "next_attempt_at"} <= set(tables.GSI1_INCLUDE)


def _enrich(merchant_id: str, shipment_id: str) -> None:
    """Give a shipment every optional field a listing documents (written directly: the read path is tested)."""
    from chalicelib.storage.tables import ShipmentItem, merchant_pk

    item = ShipmentItem.get(merchant_pk(merchant_id), f"SHIPMENT#{shipment_id}")
    now = datetime.now(UTC)
    item.update(actions=[
        ShipmentItem.recipient_instructions.set({"gate_code": "4321", "leave_at_door": True, "note": "blue door",
                                                 "updated_at": now.isoformat()}),
        ShipmentItem.rating.set({"score": 5, "comment": "great", "rated_at": now.isoformat()}),
        ShipmentItem.proof.set({"keys": ["proof/a.jpg"], "recipient_name": "Ada", "contactless": False,
                                "distance_m": 12.5}),
        ShipmentItem.final_at.set(now),
        ShipmentItem.geofence_radius_m.set(80),
        ShipmentItem.attempts.set(1),
        ShipmentItem.last_failure.set({"reason": "not_home", "note": "dog barking", "at": now.isoformat()}),
        ShipmentItem.redirect.set({"kind": "neighbour", "note": "No. 5", "neighbour_name": "Bo", "source": "recipient",
                                   "at": now.isoformat()}),
        ShipmentItem.return_leg.set({"depot_zone_id": "zon_1", "depot_name": "Depot", "depot_lat": 47.6,
                                     "depot_lng": -122.3, "from_lat": 47.61, "from_lng": -122.33, "driver_id": "drv_1",
                                     "route_id": "rte_1", "started_at": now.isoformat()}),
    ])


def test_shipment_listings_by_status_and_by_date_answer_every_documented_field(merchant: Any) -> None:
    from chalicelib.shipments.models import ShipmentOut

    _, ships, _ = make_started_route(merchant, shipments=2)
    _enrich(merchant.id, ships[0]["id"])
    full = {s["id"]: merchant.call("GET", f"/v1/shipments/{s['id']}").json_body for s in ships}
    for one in full.values():
        one.pop("eta", None)  # documented as GET-of-one-shipment only
    by_status = merchant.call("GET", "/v1/shipments?status=out_for_delivery").json_body["items"]
    by_date = merchant.call("GET", "/v1/shipments?date_from=2026-11-21&date_to=2026-11-21").json_body["items"]
    by_both = merchant.call("GET", "/v1/shipments?status=out_for_delivery&date_from=2026-11-21&date_to=2026-11-21"
                            ).json_body["items"]
    for listing in (by_status, by_date, by_both):
        assert sorted(s["id"] for s in listing) == sorted(full)
        for listed in listing:
            assert listed.pop("eta") is None
            assert listed == full[listed["id"]]
    enriched = next(s for s in by_date if s["id"] == ships[0]["id"])
    documented = set(ShipmentOut.model_fields) - {"eta"}
    assert {name for name in documented if enriched.get(name) is None} == set()


def test_a_shipment_that_left_a_listing_since_the_index_was_read_is_not_listed(merchant: Any) -> None:
    """The index is eventually consistent and the items are read after it: a page's stale key is dropped."""
    from chalicelib.storage import get_repository
    from chalicelib.storage.tables import ShipmentItem, merchant_pk

    _, ships, _ = make_started_route(merchant, shipments=2)
    merchant.call("POST", f"/v1/shipments/{ships[1]['id']}/cancel")
    keys = [ShipmentItem(merchant_pk(merchant.id), f"SHIPMENT#{s['id']}") for s in ships]
    listed = get_repository()._listed(merchant.id, keys, lambda item: item.status == "out_for_delivery")
    assert [item.shipment_id for item in listed] == [ships[0]["id"]]
    assert listed[0].recipient is not None and listed[0].created_at is not None


def test_nearby_answers_the_same_position_as_the_position_route(merchant: Any, other_merchant: Any) -> None:
    drivers = [make_driver(merchant, f"Driver {n}") for n in range(3)]
    t = now_ms() - 10_000
    for n, driver in enumerate(drivers):
        fix = {"lat": 47.6 + n * 0.002, "lng": -122.33, "fix_time": iso(t + n), "accuracy": 5, "speed": 2.5,
               "heading": 45, "altitude": 30, "battery": 77}
        assert post_pings(merchant.client, driver["token"], [fix]).status_code == 200
    near = merchant.call("GET", "/v1/drivers/nearby?lat=47.6&lng=-122.33&radius_m=5000").json_body["items"]
    assert [d["driver_id"] for d in near] == [d["id"] for d in drivers]
    for found in near:
        position = merchant.call("GET", f"/v1/drivers/{found['driver_id']}/position").json_body
        assert found["position"] == position
        assert all(position[name] is not None for name in ("accuracy", "speed", "heading", "altitude", "battery"))
    assert other_merchant.call("GET", "/v1/drivers/nearby?lat=47.6&lng=-122.33&radius_m=5000"
                               ).json_body["items"] == []


def test_day_before_reminders_list_merchants_and_shipment_ids_from_keys(merchant: Any) -> None:
    from chalicelib.storage import get_repository

    _, ships, _ = make_started_route(merchant, shipments=2)
    repo = get_repository()
    assert merchant.id in set(repo.merchant_ids())
    ids = list(repo.shipment_ids_of_day(merchant.id, "2026-11-21", "out_for_delivery"))
    assert sorted(ids) == sorted(s["id"] for s in ships)
    assert list(repo.shipment_ids_of_day(merchant.id, "2026-11-21", "created")) == []
    json.dumps(ids)  # plain strings
