"""Delivery analytics' counters in DynamoDB (docs/data-model.md, access patterns 118-125).

Items:
- merchant-day counters: `PK = ANL#<mid>#DAY`, `SK = <day>#<shard 0-3>` (a shipment's events always add to one
  shard: `rules.shard_of`), so a large merchant's day is four items, not one hot one.
- driver-day counters: `PK = ANL#<mid>#DRIVER`, `SK = <day>#<did>` (one driver's events are a few a minute).
- zone-day counters: `PK = ANL#<mid>#ZONE`, `SK = <day>#<zone id or none>#<shard>` ("none" is most of a merchant
  without zones: sharded like the day).
- counted marker: `PK = ANLSEEN#<mid>#<event id>`, `SK = ANLSEEN`, expires_at (TTL 8 days): put if absent in the
  same transaction as the ADDs, so a redelivered or replayed event adds nothing twice.

Written and read with the low-level client (the pipeline's and the queries' hot paths), as the webhook store.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from chalicelib.analytics.rules import COUNTERS
from chalicelib.core.config import get_settings

MARKER_SK = "ANLSEEN"
MARKER_TTL_S = 8 * 86_400  # the stream keeps records 24 h; the dead-letter replay tool a week
KINDS = ("DAY", "DRIVER", "ZONE")
_COUNTER_SET = frozenset(COUNTERS)


def counters_pk(merchant_id: str, kind: str) -> str:
    return f"ANL#{merchant_id}#{kind}"


@dataclass(frozen=True)
class CounterTarget:
    """One counter item an event adds to."""

    kind: str  # DAY, DRIVER or ZONE
    sort_key: str
    group: str  # the day, driver id or zone id it reports under


@dataclass(frozen=True)
class CounterRow:
    day: str
    group: str
    counters: dict[str, int]


class AnalyticsStore:
    def __init__(self, client: Any) -> None:
        self.client = client  # the low-level DynamoDB client (guarded: storage faults are StorageUnavailable)
        self.table = get_settings().table_name

    def add_once(self, merchant_id: str, event_id: str, day: str, targets: list[CounterTarget],
                 added: Mapping[str, int]) -> bool:
        """Add `added` to every target and put the event's marker, all or nothing; False when the marker was
        there (the event was counted before). One transaction: 1 + len(targets) items."""
        names = {f"#c{i}": name for i, name in enumerate(added)}
        values: dict[str, Any] = {f":c{i}": {"N": str(value)} for i, value in enumerate(added.values())}
        values.update({":m": {"S": merchant_id}, ":d": {"S": day}})
        update = "SET merchant_id = :m, d = :d, g = :g ADD " + ", ".join(f"#c{i} :c{i}" for i in range(len(added)))
        marker = {"PK": {"S": f"ANLSEEN#{merchant_id}#{event_id}"}, "SK": {"S": MARKER_SK},
                  "expires_at": {"N": str(int(time.time()) + MARKER_TTL_S)}}
        actions: list[dict[str, Any]] = [
            {"Put": {"TableName": self.table, "Item": marker, "ConditionExpression": "attribute_not_exists(PK)"}}]
        for target in targets:
            actions.append({"Update": {
                "TableName": self.table,
                "Key": {"PK": {"S": counters_pk(merchant_id, target.kind)}, "SK": {"S": target.sort_key}},
                "UpdateExpression": update, "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": {**values, ":g": {"S": target.group}}}})
        token = hashlib.sha256(f"{merchant_id}#{event_id}".encode()).hexdigest()[:36]
        try:
            self.client.transact_write_items(TransactItems=actions, ClientRequestToken=token)
        except self.client.exceptions.TransactionCanceledException as exc:
            reasons = getattr(exc, "response", {}).get("CancellationReasons") or []
            if reasons and str(reasons[0].get("Code")) == "ConditionalCheckFailed":
                return False  # counted before
            raise
        except self.client.exceptions.IdempotentParameterMismatchException:
            return False  # the same event's transaction, answered before (its token, other expiry)
        return True

    def rows(self, merchant_id: str, kind: str, day_from: str, day_to: str) -> list[CounterRow]:
        """Every counter item of a kind between two days (inclusive): one Query, read to its end."""
        found: list[CounterRow] = []
        kwargs: dict[str, Any] = {}
        while True:
            response = self.client.query(
                TableName=self.table, KeyConditionExpression="PK = :pk AND SK BETWEEN :a AND :b",
                ExpressionAttributeValues={":pk": {"S": counters_pk(merchant_id, kind)}, ":a": {"S": day_from},
                                           ":b": {"S": day_to + "#~"}}, **kwargs)
            for item in response.get("Items", []):
                counters = {name: int(value["N"]) for name, value in item.items() if name in _COUNTER_SET}
                found.append(CounterRow(item["d"]["S"], item["g"]["S"], counters))
            last = response.get("LastEvaluatedKey")
            if not last:
                return found
            kwargs = {"ExclusiveStartKey": last}
