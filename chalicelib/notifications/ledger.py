"""The notification ledger in DynamoDB: one item per message that may be sent once, claimed conditionally.

Item: `PK = SHIPMENT#<sid>`, `SK = <ledger key>` (NOTIFY#<sid>#<kind>#<channel>[#<occurrence>]), next to the
shipment's timeline. Every write is conditional, and every condition is built from the one state machine,
`rules.LEDGER_TRANSITIONS` (`_condition`): a step the table does not list cannot be written, so a stream
batch delivered twice, a Lambda retry or two concurrent workers cannot both send.
Opt-outs: `PK = MERCHANT#<mid>`, `SK = OPTOUT#<contact key>`: honoured across all the merchant's shipments.

A deferred item (quiet hours, or a transient provider error) is also in a sparse "due" index on GSI1
(`GSI1PK = NOTIFY_DUE#<shard>`, `GSI1SK = <not_before>#<shipment>#<key>`) with the event it came from, so a
scheduled function finds what has come due with one Query per shard and decides it again; a claim or a
final state takes the item out of the index.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from chalicelib.core.config import get_settings
from chalicelib.core.times import iso_z
from chalicelib.notifications.rules import DEFAULT_LEASE, Guard, LedgerState, ledger_steps
from chalicelib.storage.tables import merchant_pk, shipment_pk

L = LedgerState
DUE_SHARDS = 4  # spreads the due index's writes; a release run reads every shard


def due_pk(shipment_id: str) -> str:
    shard = int.from_bytes(hashlib.sha256(shipment_id.encode()).digest()[:2], "big") % DUE_SHARDS
    return f"NOTIFY_DUE#{shard}"


@dataclass(frozen=True, slots=True)
class DueMessage:
    """A deferred message that has come due: the event to decide again, and the instant its wait ended."""

    shipment_id: str
    key: str
    not_before: datetime
    event: dict[str, Any]  # the timeline image it came from: type, merchant_id, shipment_id, occurred_at, data

    @property
    def channel(self) -> str:
        return self.key.split("#")[3]  # NOTIFY#<shipment>#<kind>#<channel>[#<occurrence>]


def _due_values(shipment_id: str, key: str, not_before: datetime, release_at: datetime | None = None
                ) -> dict[str, Any]:
    release = release_at or not_before
    return {":nb": {"S": iso_z(not_before)}, ":due_pk": {"S": due_pk(shipment_id)},
            ":due_sk": {"S": f"{iso_z(release)}#{shipment_id}#{key}"}}


_DUE_SET = ", not_before = :nb, GSI1PK = :due_pk, GSI1SK = :due_sk"


# What each guard adds to "the item is in state <from>" (a new item is `attribute_not_exists(PK)`).
_GUARDS: dict[Guard, str | None] = {
    Guard.ALWAYS: None,
    Guard.DUE: "not_before <= :now",
    Guard.LEASE_EXPIRED: "lease_until < :now",
    Guard.CLAIMANT: "claim_id = :claim",
    Guard.REPLAY: None,  # the step is only offered to a replay
}


def _condition(to: LedgerState, values: dict[str, Any], *, claimant: bool, replay: bool = False) -> str:
    """The ConditionExpression of a step into `to` (`#s` is the state; `:now` and `:claim` come with the
    caller's `values`, which get the states the expression names)."""
    clauses = []
    for source, guard in ledger_steps(to, claimant=claimant, replay=replay):
        if source is None:
            clauses.append("attribute_not_exists(PK)")
            continue
        values[f":from_{source.value}"] = {"S": source.value}
        extra = _GUARDS[guard]
        state = f"#s = :from_{source.value}"
        clauses.append(f"({state} AND {extra})" if extra else f"({state})")
    return " OR ".join(clauses)


def _with_event(update: str, values: dict[str, Any], event: dict[str, Any] | None) -> str:
    """Keep the event with the item: a deferred one is released with it, a failed one replayed with it."""
    if event is None:
        return update
    values[":event"] = {"S": json.dumps(event, default=str, separators=(",", ":"))}
    return update + ", due_event = :event"


class Ledger:
    def __init__(self, client: Any) -> None:
        self.client = client  # the low-level DynamoDB client (conditions on several attributes read plainly)
        self.table = get_settings().table_name

    def _key(self, shipment_id: str, key: str) -> dict[str, Any]:
        return {"PK": {"S": shipment_pk(shipment_id)}, "SK": {"S": key}}

    def _update_if(self, shipment_id: str, key: str, **kwargs: Any) -> dict[str, Any] | None:
        """A conditional UpdateItem on one ledger item: the updated attributes asked for (an empty dict if
        none), or None when the condition did not hold."""
        try:
            response = self.client.update_item(TableName=self.table, Key=self._key(shipment_id, key), **kwargs)
        except self.client.exceptions.ConditionalCheckFailedException:
            return None
        return dict(response.get("Attributes", {}))

    def claim(self, shipment_id: str, key: str, claim_id: str, now: datetime,
              lease: timedelta = DEFAULT_LEASE, *, replay: bool = False) -> int:
        """Take the message: the number of claims so far, this one included (each may call the provider
        once); 0 when it is sent, dropped, held by a live claim, or deferred until later. `replay` (an
        operator's) may also take a message that failed for good."""
        values: dict[str, Any] = {":now": {"S": iso_z(now)}, ":state": {"S": L.CLAIMED.value},
                                  ":claim": {"S": claim_id}, ":lease": {"S": iso_z(now + lease)},
                                  ":one": {"N": "1"}, ":zero": {"N": "0"}}
        condition = _condition(L.CLAIMED, values, claimant=False, replay=replay)
        claimed = self._update_if(
            shipment_id, key, ConditionExpression=condition, ReturnValues="UPDATED_NEW",
            UpdateExpression="SET #s = :state, claim_id = :claim, lease_until = :lease, updated_at = :now, "
                             "attempts = if_not_exists(attempts, :zero) + :one REMOVE not_before, GSI1PK, GSI1SK",
            ExpressionAttributeNames={"#s": "state"}, ExpressionAttributeValues=values)
        if claimed is None:  # ours after all if this attempt committed and botocore retried it (fresh claim ids)
            stored = self.client.get_item(TableName=self.table, Key=self._key(shipment_id, key),
                                          ConsistentRead=True).get("Item") or {}
            if stored.get("claim_id", {}).get("S") == claim_id and stored.get("state", {}).get("S") == L.CLAIMED.value:
                claimed = stored
        return 0 if claimed is None else int(claimed["attempts"]["N"])

    def finish(self, shipment_id: str, key: str, claim_id: str, state: LedgerState, now: datetime, *,
               detail: str | None = None, not_before: datetime | None = None,
               event: dict[str, Any] | None = None, release_at: datetime | None = None) -> bool:
        """Record the outcome of a claim (sent, deferred for a retry, failed); only the claimant may.

        A deferral (with `not_before`) puts the item in the due index with `event`, so it is tried again
        even if the stream gives up on the record: the stream's retry may claim it from `not_before`, the
        scheduled release from `release_at` (default: the same instant).
        """
        names = {"#s": "state"}
        values: dict[str, Any] = {":state": {"S": state.value}, ":now": {"S": iso_z(now)}, ":claim": {"S": claim_id}}
        condition = _condition(state, values, claimant=True)
        update = "SET #s = :state, updated_at = :now"
        if detail is not None:
            update += ", detail = :detail"
            values[":detail"] = {"S": detail[:500]}
        if not_before is not None:
            update += _DUE_SET
            values.update(_due_values(shipment_id, key, not_before, release_at))
        update = _with_event(update, values, event)
        return self._update_if(shipment_id, key, UpdateExpression=update, ConditionExpression=condition,
                               ExpressionAttributeNames=names, ExpressionAttributeValues=values) is not None

    def settle(self, shipment_id: str, key: str, state: LedgerState, now: datetime, *, detail: str,
               not_before: datetime | None = None, event: dict[str, Any] | None = None) -> bool:
        """Record a decision not to send now (dropped, deferred) for a message nobody holds.

        Allowed on a new key, and on a deferred one that has come due (decided again on release: it may be
        dropped as superseded or stale, or wait again).
        """
        values: dict[str, Any] = {":state": {"S": state.value}, ":now": {"S": iso_z(now)}, ":detail": {"S": detail}}
        condition = _condition(state, values, claimant=False)
        update = "SET #s = :state, updated_at = :now, detail = :detail"
        if not_before is not None:
            update = _with_event(update + _DUE_SET, values, event)
            values.update(_due_values(shipment_id, key, not_before))
        else:
            update = _with_event(update, values, event) + " REMOVE not_before, GSI1PK, GSI1SK"
        return self._update_if(shipment_id, key, UpdateExpression=update, ConditionExpression=condition,
                               ExpressionAttributeNames={"#s": "state"}, ExpressionAttributeValues=values) is not None

    def due(self, now: datetime, limit: int = 200) -> list[DueMessage]:
        """Deferred messages whose wait has ended, oldest first: one Query per shard of the due index."""
        found: list[DueMessage] = []
        for shard in range(DUE_SHARDS):
            kwargs: dict[str, Any] = {
                "TableName": self.table, "IndexName": "GSI1", "Limit": limit,
                "KeyConditionExpression": "GSI1PK = :pk AND GSI1SK <= :upto",
                "ExpressionAttributeValues": {":pk": {"S": f"NOTIFY_DUE#{shard}"}, ":upto": {"S": iso_z(now) + "~"}}}
            for item in self.client.query(**kwargs).get("Items", []):
                raw = item.get("due_event", {}).get("S")
                if not raw:
                    continue  # deferred before events were kept: the stream's own retry owns it
                found.append(DueMessage(item["PK"]["S"].removeprefix("SHIPMENT#"), item["SK"]["S"],
                                        datetime.fromisoformat(item["not_before"]["S"].replace("Z", "+00:00")),
                                        json.loads(raw)))
        found.sort(key=lambda message: message.not_before)
        return found[:limit]

    def entries(self, shipment_id: str) -> list[dict[str, str]]:
        response = self.client.query(TableName=self.table, KeyConditionExpression="PK = :pk AND begins_with(SK, :p)",
                                     ExpressionAttributeValues={":pk": {"S": shipment_pk(shipment_id)},
                                                                ":p": {"S": "NOTIFY#"}})
        return [{name: next(iter(value.values())) for name, value in item.items()}
                for item in response.get("Items", [])]

    def opted_out(self, merchant_id: str, contact_keys: list[str]) -> set[str]:
        if not contact_keys:
            return set()
        keys = [{"PK": {"S": merchant_pk(merchant_id)}, "SK": {"S": f"OPTOUT#{k}"}} for k in contact_keys]
        response = self.client.batch_get_item(RequestItems={self.table: {"Keys": keys}})
        return {item["SK"]["S"].removeprefix("OPTOUT#") for item in response.get("Responses", {}).get(self.table, [])}

    def record_opt_out(self, merchant_id: str, contact_key: str, now: datetime, source: str) -> None:
        self.client.put_item(TableName=self.table, Item={
            "PK": {"S": merchant_pk(merchant_id)}, "SK": {"S": f"OPTOUT#{contact_key}"},
            "created_at": {"S": iso_z(now)}, "source": {"S": source}})

    # --- the recipient's own opt-outs (preferences page, one-click unsubscribe) and the merchant's list ---

    def opt_outs(self, merchant_id: str, stored_keys: list[str]) -> dict[str, str]:
        """The opt-outs stored under these keys (merchant-wide and per delivery), each with its source; one
        BatchGetItem of the merchant's partition."""
        if not stored_keys:
            return {}
        from chalicelib.storage.faults import StorageUnavailable

        keys = [{"PK": {"S": merchant_pk(merchant_id)}, "SK": {"S": f"OPTOUT#{k}"}} for k in dict.fromkeys(stored_keys)]
        request: dict[str, Any] = {self.table: {"Keys": keys, "ConsistentRead": True}}
        found: dict[str, str] = {}
        for _ in range(3):  # keys left unprocessed (throttling) are asked again: a missed opt-out would send
            response = self.client.batch_get_item(RequestItems=request)
            found.update({item["SK"]["S"].removeprefix("OPTOUT#"): item.get("source", {}).get("S", "provider")
                          for item in response.get("Responses", {}).get(self.table, [])})
            request = response.get("UnprocessedKeys") or {}
            if not request:
                return found
        raise StorageUnavailable("opt-outs left unprocessed")

    def put_recipient_opt_out(self, merchant_id: str, stored_key: str, shipment_id: str | None, now: datetime
                              ) -> None:
        """The recipient's opt-out; never overwrites a provider's (which says more: the contact is unreachable)."""
        item = {"PK": {"S": merchant_pk(merchant_id)}, "SK": {"S": f"OPTOUT#{stored_key}"},
                "created_at": {"S": iso_z(now)}, "source": {"S": "recipient"}}
        if shipment_id:
            item["shipment_id"] = {"S": shipment_id}
        with contextlib.suppress(self.client.exceptions.ConditionalCheckFailedException):  # a provider's stands
            self.client.put_item(TableName=self.table, Item=item,
                                 ConditionExpression="attribute_not_exists(PK) OR #s = :recipient",
                                 ExpressionAttributeNames={"#s": "source"},
                                 ExpressionAttributeValues={":recipient": {"S": "recipient"}})

    def remove_recipient_opt_out(self, merchant_id: str, stored_key: str) -> None:
        """Opt back in: deletes the recipient's own opt-out only (a provider's stays until the provider relents)."""
        with contextlib.suppress(self.client.exceptions.ConditionalCheckFailedException):
            self.client.delete_item(TableName=self.table,
                                    Key={"PK": {"S": merchant_pk(merchant_id)}, "SK": {"S": f"OPTOUT#{stored_key}"}},
                                    ConditionExpression="attribute_not_exists(PK) OR #s = :recipient",
                                    ExpressionAttributeNames={"#s": "source"},
                                    ExpressionAttributeValues={":recipient": {"S": "recipient"}})

    def opt_out_page(self, merchant_id: str, limit: int, start: dict[str, Any] | None
                     ) -> tuple[list[dict[str, str]], dict[str, Any] | None]:
        """The merchant's opt-outs in key order: one Query of its partition, `begins_with OPTOUT#`."""
        request: dict[str, Any] = {
            "TableName": self.table, "Limit": limit,
            "KeyConditionExpression": "PK = :pk AND begins_with(SK, :p)",
            "ExpressionAttributeValues": {":pk": {"S": merchant_pk(merchant_id)}, ":p": {"S": "OPTOUT#"}}}
        if start:
            request["ExclusiveStartKey"] = start
        response = self.client.query(**request)
        items = [{"key": item["SK"]["S"].removeprefix("OPTOUT#"), "source": item.get("source", {}).get("S", ""),
                  "created_at": item.get("created_at", {}).get("S", "")} for item in response.get("Items", [])]
        return items, response.get("LastEvaluatedKey")
