"""Sharded shipment index keys (docs/data-model.md, "Sharded shipment index keys"): a merchant's shipments of one
status or date are spread over SHIPMENT_INDEX_SHARDS key values; listings query every shard and merge them in
sort-key order behind one cursor; the backfill moves shipments written with the old keys."""

from __future__ import annotations

from typing import Any

from tests.integration.helpers import make_shipment

DAY = "2026-11-21"  # shipment_body's time window


def _shipments(merchant: Any, count: int) -> list[str]:
    return [make_shipment(merchant, n)["id"] for n in range(1, count + 1)]


def _pages(merchant: Any, query: str, limit: int) -> list[list[str]]:
    pages, cursor = [], None
    while True:
        r = merchant.call("GET", f"/v1/shipments?{query}&limit={limit}" + (f"&cursor={cursor}" if cursor else ""))
        assert r.status_code == 200, r.body
        pages.append([s["id"] for s in r.json_body["items"]])
        cursor = r.json_body["next_cursor"]
        if not cursor:
            return pages


def test_keys_spread_over_the_shards_and_listings_merge_them_in_order_behind_one_cursor(merchant: Any) -> None:
    from chalicelib.storage import get_repository
    from chalicelib.storage.tables import SHIPMENT_INDEX_SHARDS, ShipmentItem, merchant_pk, shipment_index_shard

    ids = _shipments(merchant, 9)
    items = [ShipmentItem.get(merchant_pk(merchant.id), f"SHIPMENT#{sid}") for sid in ids]
    for item in items:
        shard = shipment_index_shard(item.shipment_id)
        assert f"MERCHANT#{merchant.id}#STATUS#created#{shard}" == item.GSI1PK
        assert f"MERCHANT#{merchant.id}#DATE#{DAY}#{shard}" == item.GSI2PK
    assert len({shipment_index_shard(sid) for sid in ids}) > 1 and SHIPMENT_INDEX_SHARDS > 1
    for query in ("status=created", f"date_from={DAY}&date_to={DAY}", f"status=created&date_from={DAY}&date_to={DAY}"):
        pages = _pages(merchant, query, 2)
        listed = [sid for page in pages for sid in page]
        assert listed == sorted(ids), query  # one sort-key order across shards (one day: by id), each once
        assert all(len(page) == 2 for page in pages[:-1]), (query, pages)
    assert sorted(get_repository().shipment_ids_of_day(merchant.id, DAY, "created")) == sorted(ids)
    merchant.call("POST", f"/v1/shipments/{ids[4]}/cancel")
    assert [sid for page in _pages(merchant, "status=created", 4) for sid in page] == sorted(ids[:4] + ids[5:])
    assert _pages(merchant, "status=cancelled", 4) == [[ids[4]]]


def test_a_cursor_of_the_unsharded_listing_is_refused(merchant: Any) -> None:
    from chalicelib.core.config import get_settings
    from chalicelib.core.cursors import cursor_out

    _shipments(merchant, 1)
    scope = f"shipments:{merchant.id}:created:None:None"
    old = cursor_out(get_settings(), scope, {"PK": {"S": "x"}, "SK": {"S": "y"}})
    r = merchant.call("GET", f"/v1/shipments?status=created&cursor={old}")
    assert r.status_code == 400 and r.json_body["error"]["details"][0]["field"] == "cursor"


def test_the_backfill_moves_shipments_with_unsharded_keys_once(merchant: Any) -> None:
    from chalicelib.core.config import get_settings
    from chalicelib.storage import get_repository
    from chalicelib.storage.tables import ShipmentItem, merchant_pk
    from infra.backfill_index_shards import backfill

    ids = _shipments(merchant, 3)
    legacy = ShipmentItem.get(merchant_pk(merchant.id), f"SHIPMENT#{ids[0]}")
    legacy.update(actions=[ShipmentItem.GSI1PK.set(f"MERCHANT#{merchant.id}#STATUS#created"),
                           ShipmentItem.GSI2PK.set(f"MERCHANT#{merchant.id}#DATE#{DAY}")])
    assert [sid for page in _pages(merchant, "status=created", 10) for sid in page] == sorted(ids[1:])
    client, table = get_repository().client, get_settings().table_name
    assert backfill(client, table, [merchant.id]) == (1, 2)
    assert [sid for page in _pages(merchant, "status=created", 10) for sid in page] == sorted(ids)
    assert [sid for page in _pages(merchant, f"date_from={DAY}&date_to={DAY}", 10) for sid in page] == sorted(ids)
    assert backfill(client, table, [merchant.id]) == (0, 3)
