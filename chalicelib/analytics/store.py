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

import json
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from chalicelib.analytics.rules import COUNTERS
from chalicelib.core.config import get_settings

MARKER_SK = "ANLSEEN"
MARKER_TTL_S = 8 * 86_400  # the stream keeps records 24 h; the dead-letter replay tool a week
KINDS = ("DAY", "DRIVER", "DRIVERWEEK", "ZONE")
TRANSACTION_ITEMS = 100  # DynamoDB's limit of items in one TransactWriteItems
_COUNTER_SET = frozenset(COUNTERS)


def counters_pk(merchant_id: str, kind: str) -> str:
    return f"ANL#{merchant_id}#{kind}"


@dataclass(frozen=True)
class CounterTarget:
    """One counter item an event adds to."""

    kind: str  # DAY, DRIVER, DRIVERWEEK or ZONE
    sort_key: str
    group: str  # the day, driver id or zone id it reports under
    period: str | None = None  # the item's first day when it is not the event's (a week's Monday)


@dataclass(frozen=True)
class Stop:
    """What the counters need of a shipment (a projection of its item, read with one GetItem)."""

    shipment_id: str
    lat: float
    lng: float
    driver_id: str | None = None
    window_start: datetime | None = None
    window_end: datetime | None = None
    attempts: int = 0
    has_proof: bool = False
    rating_score: int | None = None
    has_comment: bool = False
    final_at: datetime | None = None


_STOP_PROJECTION = ("shipment_id, lat, lng, driver_id, window_start, window_end, attempts, proof.#keys, "
                    "rating, final_at")


def _when(value: dict[str, Any] | None) -> datetime | None:
    return datetime.fromisoformat(value["S"]) if value and "S" in value else None


def _stop(item: dict[str, Any]) -> Stop:
    rating = (item.get("rating") or {}).get("M") or {}
    proof_keys = (((item.get("proof") or {}).get("M") or {}).get("keys") or {}).get("L") or []
    driver = item.get("driver_id", {}).get("S")
    return Stop(shipment_id=item["shipment_id"]["S"], lat=float(item["lat"]["N"]), lng=float(item["lng"]["N"]),
                driver_id=str(driver) if driver else None, window_start=_when(item.get("window_start")),
                window_end=_when(item.get("window_end")),
                attempts=int(float(item["attempts"]["N"])) if "attempts" in item else 0, has_proof=bool(proof_keys),
                rating_score=int(float(rating["score"]["N"])) if "N" in rating.get("score", {}) else None,
                has_comment=bool(rating.get("comment", {}).get("S")), final_at=_when(item.get("final_at")))


@dataclass(frozen=True)
class Count:
    """One event to count: its id (the marker), its day, the items it adds to and what it adds."""

    event_id: str
    day: str
    targets: list[CounterTarget]
    added: dict[str, int]


@dataclass(frozen=True)
class CounterRow:
    day: str
    group: str
    counters: dict[str, int]
    minus: bool = False  # read to be taken away (a day outside the range of a week read whole)


class AnalyticsStore:
    def __init__(self, client: Any) -> None:
        self.client = client  # the low-level DynamoDB client (guarded: storage faults are StorageUnavailable)
        self.table = get_settings().table_name

    def stop(self, merchant_id: str, shipment_id: str) -> Stop | None:
        """The shipment's facts the counters need (one GetItem, projected), or None when it does not exist."""
        from chalicelib.storage.tables import merchant_pk

        item = self.client.get_item(
            TableName=self.table, Key={"PK": {"S": merchant_pk(merchant_id)}, "SK": {"S": f"SHIPMENT#{shipment_id}"}},
            ProjectionExpression=_STOP_PROJECTION, ExpressionAttributeNames={"#keys": "keys"}).get("Item")
        return _stop(item) if item else None

    def stops(self, merchant_id: str, shipment_ids: list[str]) -> dict[str, Stop]:
        """Many shipments' facts: BatchGetItem, 100 keys a request, unprocessed keys asked again."""
        from chalicelib.storage.tables import merchant_pk

        found: dict[str, Stop] = {}
        unique = sorted(set(shipment_ids))
        for start in range(0, len(unique), 100):
            keys = [{"PK": {"S": merchant_pk(merchant_id)}, "SK": {"S": f"SHIPMENT#{sid}"}}
                    for sid in unique[start:start + 100]]
            pending: dict[str, Any] = {self.table: {"Keys": keys, "ProjectionExpression": _STOP_PROJECTION,
                                                    "ExpressionAttributeNames": {"#keys": "keys"}}}
            _raw_answers(self.client)
            for _ in range(6):
                _RAW.on = True
                try:
                    answer = self.client.batch_get_item(RequestItems=pending)
                finally:
                    _RAW.on = False
                response = json.loads(answer["RawBody"]) if "RawBody" in answer else answer
                for item in response.get("Responses", {}).get(self.table, []):
                    stop = _stop(item)
                    found[stop.shipment_id] = stop
                pending = response.get("UnprocessedKeys") or {}
                if not pending:
                    break
            else:
                raise RuntimeError("shipments left unread after retries")  # the stream retries the batch
        return found

    def add_many(self, merchant_id: str, counts: list[Count]) -> int:
        """Count many events in as few transactions as fit (markers plus the merged ADDs of their targets, at most
        100 items each); a transaction cancelled by a marker (some event counted before) is counted again event
        by event, so each is added once. Returns how many were counted now."""
        counted, chunk, targets = 0, list[Count](), set[tuple[str, str]]()
        for count in counts:
            keys = {(t.kind, t.sort_key) for t in count.targets}
            if chunk and len(chunk) + 1 + len(targets | keys) > TRANSACTION_ITEMS:
                counted += self._add_chunk(merchant_id, chunk)
                chunk, targets = [], set()
            chunk.append(count)
            targets |= keys
        if chunk:
            counted += self._add_chunk(merchant_id, chunk)
        return counted

    def _add_chunk(self, merchant_id: str, chunk: list[Count]) -> int:
        if len(chunk) == 1:
            one = chunk[0]
            return int(self.add_once(merchant_id, one.event_id, one.day, one.targets, one.added))
        merged: dict[tuple[str, str], tuple[CounterTarget, str, dict[str, int]]] = {}
        for count in chunk:
            for target in count.targets:
                _, _, sums = merged.setdefault((target.kind, target.sort_key), (target, count.day, {}))
                for name, value in count.added.items():
                    sums[name] = sums.get(name, 0) + value
        expires = {"N": str(int(time.time()) + MARKER_TTL_S)}
        actions = [{"Put": {"TableName": self.table, "Item": {
            "PK": {"S": f"ANLSEEN#{merchant_id}#{c.event_id}"}, "SK": {"S": MARKER_SK}, "expires_at": expires},
            "ConditionExpression": "attribute_not_exists(PK)"}} for c in chunk]
        actions += [self._update(merchant_id, target, day, sums) for target, day, sums in merged.values()]
        try:
            self.client.transact_write_items(TransactItems=actions)
        except self.client.exceptions.TransactionCanceledException as exc:
            reasons = getattr(exc, "response", {}).get("CancellationReasons") or []
            if any(str(r.get("Code")) == "ConditionalCheckFailed" for r in reasons[:len(chunk)]):
                return sum(int(self.add_once(merchant_id, c.event_id, c.day, c.targets, c.added)) for c in chunk)
            raise
        return len(chunk)

    def _update(self, merchant_id: str, target: CounterTarget, day: str, added: Mapping[str, int]) -> dict[str, Any]:
        names = {f"#c{i}": name for i, name in enumerate(added)}
        values: dict[str, Any] = {f":c{i}": {"N": str(value)} for i, value in enumerate(added.values())}
        values.update({":m": {"S": merchant_id}, ":d": {"S": target.period or day}, ":g": {"S": target.group}})
        return {"Update": {
            "TableName": self.table,
            "Key": {"PK": {"S": counters_pk(merchant_id, target.kind)}, "SK": {"S": target.sort_key}},
            "UpdateExpression": "SET merchant_id = :m, d = :d, g = :g ADD "
                                + ", ".join(f"#c{i} :c{i}" for i in range(len(added))),
            "ExpressionAttributeNames": names, "ExpressionAttributeValues": values}}

    def add_once(self, merchant_id: str, event_id: str, day: str, targets: list[CounterTarget],
                 added: Mapping[str, int]) -> bool:
        """Add `added` to every target and put the event's marker, all or nothing; False when the marker was
        there (the event was counted before). One transaction: 1 + len(targets) items."""
        marker = {"PK": {"S": f"ANLSEEN#{merchant_id}#{event_id}"}, "SK": {"S": MARKER_SK},
                  "expires_at": {"N": str(int(time.time()) + MARKER_TTL_S)}}
        actions: list[dict[str, Any]] = [
            {"Put": {"TableName": self.table, "Item": marker, "ConditionExpression": "attribute_not_exists(PK)"}}]
        actions += [self._update(merchant_id, target, day, added) for target in targets]
        try:  # no ClientRequestToken: a commit whose answer was lost is found by its marker on the retry
            self.client.transact_write_items(TransactItems=actions)
        except self.client.exceptions.TransactionCanceledException as exc:
            reasons = getattr(exc, "response", {}).get("CancellationReasons") or []
            if reasons and str(reasons[0].get("Code")) == "ConditionalCheckFailed":
                return False  # counted before
            raise
        return True

    def rows(self, merchant_id: str, kind: str, day_from: str, day_to: str,
             group: str | None = None) -> list[CounterRow]:
        """Every counter item of a kind between two days (inclusive); with `group`, only that group's (a filter:
        the engine still reads the others)."""
        return self.read(merchant_id, [(kind, day_from, day_to, False)], group)

    def read(self, merchant_id: str, ranges: list[tuple[str, str, str, bool]], group: str | None = None
             ) -> list[CounterRow]:
        """Several (kind, first day, last day) ranges, each cut into runs of days read side by side (a month of
        200 drivers is thousands of items: the engine's time per item, not the round trip, dominates), up to
        QUERY_SEGMENTS at once; each a Query read to its end, its JSON parsed as is."""
        segments: list[tuple[str, str, str, bool]] = []
        for kind, day_from, day_to, minus in ranges:
            first, last = date.fromisoformat(day_from), date.fromisoformat(day_to)
            span = (last - first).days + 1
            parts = min(QUERY_SEGMENTS, span if kind != "DRIVERWEEK" else span // 7 + 1)
            segments += [(kind, (first + timedelta(days=span * i // parts)).isoformat(),
                          (first + timedelta(days=span * (i + 1) // parts - 1)).isoformat(), minus)
                         for i in range(parts)]
        if len(segments) == 1:
            return self._segment(merchant_id, *segments[0], group=group)
        with ThreadPoolExecutor(min(len(segments), QUERIES_IN_FLIGHT), thread_name_prefix="analytics") as pool:
            found = pool.map(lambda seg: self._segment(merchant_id, seg[0], seg[1], seg[2], seg[3], group=group),
                             segments)
            return [row for rows in found for row in rows]

    def _segment(self, merchant_id: str, kind: str, day_from: str, day_to: str, minus: bool = False, *,
                 group: str | None) -> list[CounterRow]:
        found: list[CounterRow] = []
        kwargs: dict[str, Any] = {}
        values: dict[str, Any] = {":pk": {"S": counters_pk(merchant_id, kind)}, ":a": {"S": day_from},
                                  ":b": {"S": day_to + "#~"}}
        if group is not None:
            kwargs["FilterExpression"] = "g = :g"
            values[":g"] = {"S": group}
        _raw_answers(self.client)
        while True:
            _RAW.on = True
            try:
                response = self.client.query(
                    TableName=self.table, KeyConditionExpression="PK = :pk AND SK BETWEEN :a AND :b",
                    ExpressionAttributeValues=values, **kwargs)
            finally:
                _RAW.on = False
            page = json.loads(response["RawBody"]) if "RawBody" in response else response
            for item in page.get("Items", []):
                counters = {name: int(value["N"]) for name, value in item.items() if name in _COUNTER_SET}
                found.append(CounterRow(item["d"]["S"], item["g"]["S"], counters, minus))
            last = page.get("LastEvaluatedKey")
            if not last:
                return found
            kwargs["ExclusiveStartKey"] = last


QUERY_SEGMENTS = 4  # runs of days a range is cut into
QUERIES_IN_FLIGHT = 4  # at once, for one answer (2-core hosts gained nothing from 8)
_RAW = threading.local()


def _keep_raw_body(response_dict: dict[str, Any], customized_response_dict: dict[str, Any], **_: Any) -> None:
    """botocore's `before-parse` hook: while this thread reads counters or shipments (`_RAW.on`), hand the JSON
    body over as is (json.loads parses 6,000 items in a tenth of the time botocore's shape-walking parser takes)."""
    if getattr(_RAW, "on", False) and response_dict.get("status_code") == 200:
        customized_response_dict["RawBody"] = response_dict["body"]
        response_dict["body"] = b"{}"


def _raw_answers(client: Any) -> None:
    """Install the hook on this client once (it acts only while `_RAW.on`, so other requests parse as usual)."""
    if not getattr(client, "_analytics_raw_answers", False):
        for operation in ("Query", "BatchGetItem"):
            client.meta.events.register(f"before-parse.dynamodb.{operation}", _keep_raw_body)
        client._analytics_raw_answers = True
