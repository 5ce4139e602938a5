"""Move shipments written before the shipment index keys were sharded onto their shard's key values.

    python -m infra.backfill_index_shards [--merchant mer_...] [--local]

Shipments written before then carry `GSI1PK = MERCHANT#<mid>#STATUS#<status>` and
`GSI2PK = MERCHANT#<mid>#DATE#<day>`, which the sharded listings no longer query. Per merchant (from the
merchants index, never a scan): one paged Query of its shipments (keys, index keys, status, date) and, for each
whose index keys are not its shard's, one UpdateItem setting both, conditional on the values read, so a status
change or a reschedule that happens meanwhile (and writes sharded keys itself) wins. Running it again finds
nothing to do. Run it once right after deploying the sharded keys; until it has run, a listing by status or
by date misses the shipments it has not moved yet (nothing else reads those keys).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

PROJECT_DIR = Path(__file__).resolve().parent.parent


def backfill(client: Any, table: str, merchant_ids: Iterable[str]) -> tuple[int, int]:
    """(shipments moved, shipments already on their shard's keys)."""
    from chalicelib.storage.tables import date_gsi_pk, merchant_pk, status_gsi_pk

    moved = kept = 0
    for merchant_id in merchant_ids:
        pages = client.get_paginator("query").paginate(
            TableName=table, KeyConditionExpression="PK = :pk AND begins_with(SK, :shipment)",
            ExpressionAttributeValues={":pk": {"S": merchant_pk(merchant_id)}, ":shipment": {"S": "SHIPMENT#"}},
            ProjectionExpression="PK, SK, GSI1PK, GSI2PK, #s, delivery_date", ExpressionAttributeNames={"#s": "status"})
        for page in pages:
            for item in page.get("Items", []):
                shipment_id = item["SK"]["S"].removeprefix("SHIPMENT#")
                status, day = item["status"]["S"], item["delivery_date"]["S"]
                want1 = status_gsi_pk(merchant_id, status, shipment_id)
                want2 = date_gsi_pk(merchant_id, day, shipment_id)
                have1, have2 = item.get("GSI1PK", {}).get("S"), item.get("GSI2PK", {}).get("S")
                if (have1, have2) == (want1, want2):
                    kept += 1
                    continue
                try:
                    client.update_item(
                        TableName=table, Key={"PK": item["PK"], "SK": item["SK"]},
                        UpdateExpression="SET GSI1PK = :g1, GSI2PK = :g2",
                        ConditionExpression="GSI1PK = :h1 AND GSI2PK = :h2 AND #s = :status AND delivery_date = :day",
                        ExpressionAttributeNames={"#s": "status"},
                        ExpressionAttributeValues={":g1": {"S": want1}, ":g2": {"S": want2}, ":h1": {"S": str(have1)},
                                                   ":h2": {"S": str(have2)}, ":status": {"S": status},
                                                   ":day": {"S": day}})
                    moved += 1
                except client.exceptions.ConditionalCheckFailedException:
                    kept += 1  # changed meanwhile: its writer set the sharded keys
    return moved, kept


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.backfill_index_shards", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--merchant", action="append", help="only this merchant (repeatable; default: all)")
    parser.add_argument("--local", action="store_true", help="the running local stack (make run)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(PROJECT_DIR))
    if args.local:
        from infra.replay import _use_local_stack

        _use_local_stack(PROJECT_DIR / ".local" / "demo.json")
    from chalicelib.core.config import get_settings
    from chalicelib.storage.repository import Repository

    repo = Repository()
    moved, kept = backfill(repo.client, get_settings().table_name, args.merchant or repo.merchant_ids())
    print(f"{moved} shipment(s) moved onto sharded index keys, {kept} already there")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
