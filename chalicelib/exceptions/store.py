"""The exception queue in DynamoDB (docs/data-model.md, access patterns 95-100).

Items:
- exception: `PK = MERCHANT#<mid>`, `SK = EXCEPTION#<xid>`; GSI1 `MERCHANT#<mid>#EXCEPTIONS#<state>` /
  `<opened ISO>#<xid>` (the queue by state, newest first) and GSI2 `MERCHANT#<mid>#EXCEPTIONS#<state>#<kind>` /
  the same sort key (by state and kind); both move when the state changes.
- open claim: `PK = EXCEPTIONOPEN#<mid>#<kind>#<subject>`, `SK = EXCEPTIONOPEN`, exception_id: exists while an
  exception of that (kind, subject) is open or acknowledged; resolving deletes it.
- event: `PK = EXCEPTION#<xid>`, `SK = EVENT#<occurred ISO>#<event id>`: one per state change, written in the
  change's transaction, so it reaches the table stream (the webhook sender posts it) exactly once.

Every change is one transaction with conditions (the exception absent / in the state read, the claim absent /
naming this exception), so a stream record delivered twice, or two dispatchers acknowledging at once, change
nothing twice. Written with the low-level client, as the webhook store.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from chalicelib.core.config import get_settings
from chalicelib.exceptions.rules import ExceptionKind, ExceptionState
from chalicelib.storage.tables import merchant_pk

SK_PREFIX = "EXCEPTION#"
CLAIM_SK = "EXCEPTIONOPEN"


def iso(moment: datetime) -> str:
    """Fixed-width UTC text: sorts like the time it names."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _time(value: dict[str, Any] | None) -> datetime | None:
    if not value or "S" not in value:
        return None
    return datetime.fromisoformat(value["S"].replace("Z", "+00:00"))


def _s(value: str) -> dict[str, str]:
    return {"S": value}


def state_gsi_pk(merchant_id: str, state: ExceptionState) -> str:
    return f"{merchant_pk(merchant_id)}#EXCEPTIONS#{state.value}"


def kind_gsi_pk(merchant_id: str, state: ExceptionState, kind: ExceptionKind) -> str:
    return f"{state_gsi_pk(merchant_id, state)}#{kind.value}"


def claim_pk(merchant_id: str, dedupe: str) -> str:
    return f"EXCEPTIONOPEN#{merchant_id}#{dedupe}"


@dataclass
class ExceptionRecord:
    merchant_id: str
    exception_id: str
    kind: ExceptionKind
    state: ExceptionState
    dedupe: str
    opened_at: datetime
    summary: str
    details: dict[str, Any] = field(default_factory=dict)
    driver_id: str | None = None
    shipment_id: str | None = None
    route_id: str | None = None
    acknowledged_at: datetime | None = None
    acknowledged_by: str | None = None
    resolved_at: datetime | None = None
    resolved_by: str | None = None
    note: str | None = None


def _record(item: dict[str, Any]) -> ExceptionRecord:
    def text(name: str) -> str | None:
        value = item.get(name)
        return str(value["S"]) if value and "S" in value else None

    return ExceptionRecord(
        merchant_id=item["merchant_id"]["S"], exception_id=item["exception_id"]["S"],
        kind=ExceptionKind(item["kind"]["S"]), state=ExceptionState(item["state"]["S"]), dedupe=item["dedupe"]["S"],
        opened_at=_time(item["opened_at"]) or datetime.now(UTC), summary=item["summary"]["S"],
        details=json.loads(text("details") or "{}"), driver_id=text("driver_id"), shipment_id=text("shipment_id"),
        route_id=text("route_id"), acknowledged_at=_time(item.get("acknowledged_at")),
        acknowledged_by=text("acknowledged_by"), resolved_at=_time(item.get("resolved_at")),
        resolved_by=text("resolved_by"), note=text("note"))


@dataclass(frozen=True)
class StateEvent:
    """A state change as a timeline-style event item: what the webhook sender posts."""

    event_id: str
    event_type: str
    occurred_at: datetime
    source: str
    data: dict[str, Any]


class ExceptionStore:
    def __init__(self, client: Any) -> None:
        self.client = client  # the low-level DynamoDB client
        self.table = get_settings().table_name

    def _key(self, merchant_id: str, exception_id: str) -> dict[str, Any]:
        return {"PK": _s(merchant_pk(merchant_id)), "SK": _s(SK_PREFIX + exception_id)}

    def _event_put(self, record: ExceptionRecord, event: StateEvent) -> dict[str, Any]:
        item = {"PK": _s(f"EXCEPTION#{record.exception_id}"),
                "SK": _s(f"EVENT#{iso(event.occurred_at)}#{event.event_id}"),
                "merchant_id": _s(record.merchant_id), "exception_id": _s(record.exception_id),
                "event_id": _s(event.event_id), "type": _s(event.event_type), "source": _s(event.source),
                "occurred_at": _s(iso(event.occurred_at)), "recorded_at": _s(iso(datetime.now(UTC))),
                "data": _s(json.dumps(event.data, separators=(",", ":"), default=str))}
        return {"Put": {"TableName": self.table, "Item": item, "ConditionExpression": "attribute_not_exists(PK)"}}

    def _cancelled_by_condition(self, exc: Exception) -> bool:
        reasons = getattr(exc, "response", {}).get("CancellationReasons") or []
        return any(str(r.get("Code")) == "ConditionalCheckFailed" for r in reasons) or not reasons

    def open(self, record: ExceptionRecord, event: StateEvent) -> bool:
        """Create the exception, claim its (kind, subject) and record its opened event, all or nothing.
        False when it exists already (a redelivered record) or another of its kind and subject is open."""
        sort = _s(f"{iso(record.opened_at)}#{record.exception_id}")
        item: dict[str, Any] = {
            **self._key(record.merchant_id, record.exception_id), "merchant_id": _s(record.merchant_id),
            "exception_id": _s(record.exception_id), "kind": _s(record.kind.value), "state": _s(record.state.value),
            "dedupe": _s(record.dedupe), "opened_at": _s(iso(record.opened_at)), "summary": _s(record.summary),
            "details": _s(json.dumps(record.details, separators=(",", ":"), default=str)),
            "GSI1PK": _s(state_gsi_pk(record.merchant_id, record.state)), "GSI1SK": sort,
            "GSI2PK": _s(kind_gsi_pk(record.merchant_id, record.state, record.kind)), "GSI2SK": sort}
        for name in ("driver_id", "shipment_id", "route_id"):
            value = getattr(record, name)
            if value:
                item[name] = _s(value)
        claim = {"PK": _s(claim_pk(record.merchant_id, record.dedupe)), "SK": _s(CLAIM_SK),
                 "merchant_id": _s(record.merchant_id), "exception_id": _s(record.exception_id)}
        try:
            self.client.transact_write_items(TransactItems=[
                {"Put": {"TableName": self.table, "Item": item, "ConditionExpression": "attribute_not_exists(PK)"}},
                {"Put": {"TableName": self.table, "Item": claim, "ConditionExpression": "attribute_not_exists(PK)"}},
                self._event_put(record, event)])
        except self.client.exceptions.TransactionCanceledException as exc:
            if self._cancelled_by_condition(exc):
                return False
            raise
        return True

    def get(self, merchant_id: str, exception_id: str) -> ExceptionRecord | None:
        item = self.client.get_item(TableName=self.table, Key=self._key(merchant_id, exception_id),
                                    ConsistentRead=True).get("Item")
        return _record(item) if item else None

    def open_for(self, merchant_id: str, dedupe: str) -> str | None:
        """The id of the open (or acknowledged) exception of this kind and subject, if any."""
        item = self.client.get_item(TableName=self.table, ConsistentRead=True,
                                    Key={"PK": _s(claim_pk(merchant_id, dedupe)), "SK": _s(CLAIM_SK)}).get("Item")
        return str(item["exception_id"]["S"]) if item else None

    def transition(self, record: ExceptionRecord, wanted: ExceptionState, who: str, at: datetime, note: str | None,
                   event: StateEvent) -> bool:
        """Move the exception from the state it was read in to `wanted`; False when it moved meanwhile."""
        sort = f"{iso(record.opened_at)}#{record.exception_id}"
        prefix = "acknowledged" if wanted is ExceptionState.ACKNOWLEDGED else "resolved"
        values: dict[str, Any] = {
            ":from": _s(record.state.value), ":to": _s(wanted.value), ":at": _s(iso(at)), ":who": _s(who),
            ":g1": _s(state_gsi_pk(record.merchant_id, wanted)), ":g2": _s(kind_gsi_pk(record.merchant_id, wanted,
                                                                                      record.kind)),
            ":sort": _s(sort)}
        update = f"SET #s = :to, {prefix}_at = :at, {prefix}_by = :who, GSI1PK = :g1, GSI1SK = :sort, " \
                 "GSI2PK = :g2, GSI2SK = :sort"
        if note:
            update += ", note = :note"
            values[":note"] = _s(note)
        actions: list[dict[str, Any]] = [
            {"Update": {"TableName": self.table, "Key": self._key(record.merchant_id, record.exception_id),
                        "UpdateExpression": update, "ConditionExpression": "#s = :from",
                        "ExpressionAttributeNames": {"#s": "state"}, "ExpressionAttributeValues": values}},
            self._event_put(record, event)]
        if wanted is ExceptionState.RESOLVED:  # the (kind, subject) may open again
            actions.append({"Delete": {"TableName": self.table, "Key": {"PK": _s(claim_pk(record.merchant_id,
                                                                                       record.dedupe)),
                                                                       "SK": _s(CLAIM_SK)},
                                       "ConditionExpression": "attribute_not_exists(PK) OR exception_id = :xid",
                                       "ExpressionAttributeValues": {":xid": _s(record.exception_id)}}})
        try:
            self.client.transact_write_items(TransactItems=actions)
        except self.client.exceptions.TransactionCanceledException as exc:
            if self._cancelled_by_condition(exc):
                return False
            raise
        return True

    def page(self, merchant_id: str, state: ExceptionState, kind: ExceptionKind | None, limit: int,
             start: dict[str, Any] | None) -> tuple[list[ExceptionRecord], dict[str, Any] | None]:
        """One page of the queue in a state (and kind), newest first: the index's keys, then the items."""
        index, key_name, key = ("GSI1", "GSI1PK", state_gsi_pk(merchant_id, state)) if kind is None else \
            ("GSI2", "GSI2PK", kind_gsi_pk(merchant_id, state, kind))
        kwargs: dict[str, Any] = {"ExclusiveStartKey": start} if start else {}
        response = self.client.query(TableName=self.table, IndexName=index, Limit=limit, ScanIndexForward=False,
                                     KeyConditionExpression=f"{key_name} = :pk",
                                     ExpressionAttributeValues={":pk": _s(key)}, **kwargs)
        keys = [{"PK": k["PK"], "SK": k["SK"]} for k in response.get("Items", [])]
        return self._batch(keys), response.get("LastEvaluatedKey")

    def _batch(self, keys: Sequence[dict[str, Any]]) -> list[ExceptionRecord]:
        if not keys:
            return []
        found: dict[str, ExceptionRecord] = {}
        pending: dict[str, Any] = {self.table: {"Keys": list(keys)}}
        for _ in range(5):
            response = self.client.batch_get_item(RequestItems=pending)
            for item in response.get("Responses", {}).get(self.table, []):
                record = _record(item)
                found[record.exception_id] = record
            pending = response.get("UnprocessedKeys") or {}
            if not pending:
                break
        order = [k["SK"]["S"][len(SK_PREFIX):] for k in keys]
        return [found[x] for x in order if x in found]
