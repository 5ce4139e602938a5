"""The notification ledger in DynamoDB: one item per message that may be sent once, claimed conditionally.

Item: `PK = SHIPMENT#<sid>`, `SK = <ledger key>` (NOTIFY#<sid>#<kind>#<channel>[#<occurrence>]), next to the
shipment's timeline. The claim's condition is the domain's `can_claim` rule written as an expression, so a
stream batch delivered twice, a Lambda retry or two concurrent workers cannot both send.
Opt-outs: `PK = MERCHANT#<mid>`, `SK = OPTOUT#<contact key>`: honoured across all the merchant's shipments.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from chalicelib.config import get_settings
from chalicelib.domain.notify import DEFAULT_LEASE, LedgerState
from chalicelib.storage.tables import merchant_pk, shipment_pk

L = LedgerState


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Ledger:
    def __init__(self, client: Any) -> None:
        self.client = client  # the low-level DynamoDB client (conditions on several attributes read plainly)
        self.table = get_settings().table_name

    def _key(self, shipment_id: str, key: str) -> dict[str, Any]:
        return {"PK": {"S": shipment_pk(shipment_id)}, "SK": {"S": key}}

    def _update_if(self, shipment_id: str, key: str, **kwargs: Any) -> bool:
        """A conditional UpdateItem on one ledger item; False when the condition did not hold."""
        try:
            self.client.update_item(TableName=self.table, Key=self._key(shipment_id, key), **kwargs)
        except self.client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def claim(self, shipment_id: str, key: str, claim_id: str, now: datetime,
              lease: timedelta = DEFAULT_LEASE, *, replay: bool = False) -> bool:
        """Take the message; False when it is sent, dropped, held by a live claim, or deferred until later."""
        condition = ("attribute_not_exists(PK) OR (#s = :deferred AND not_before <= :now)"
                     " OR (#s = :claimed AND lease_until < :now)")
        values: dict[str, Any] = {":deferred": {"S": L.DEFERRED.value}, ":claimed": {"S": L.CLAIMED.value},
                                  ":now": {"S": _iso(now)}, ":state": {"S": L.CLAIMED.value},
                                  ":claim": {"S": claim_id}, ":lease": {"S": _iso(now + lease)},
                                  ":one": {"N": "1"}, ":zero": {"N": "0"}}
        if replay:
            condition += " OR #s = :failed"
            values[":failed"] = {"S": L.FAILED_PERMANENT.value}
        return self._update_if(
            shipment_id, key, ConditionExpression=condition,
            UpdateExpression="SET #s = :state, claim_id = :claim, lease_until = :lease, updated_at = :now, "
                             "attempts = if_not_exists(attempts, :zero) + :one REMOVE not_before",
            ExpressionAttributeNames={"#s": "state"}, ExpressionAttributeValues=values)

    def finish(self, shipment_id: str, key: str, claim_id: str, state: LedgerState, now: datetime, *,
               detail: str | None = None, not_before: datetime | None = None) -> bool:
        """Record the outcome of a claim (sent, deferred for a retry, failed); only the claimant may."""
        names = {"#s": "state"}
        values: dict[str, Any] = {":state": {"S": state.value}, ":now": {"S": _iso(now)},
                                  ":claim": {"S": claim_id}, ":claimed": {"S": L.CLAIMED.value}}
        update = "SET #s = :state, updated_at = :now"
        if detail is not None:
            update += ", detail = :detail"
            values[":detail"] = {"S": detail[:500]}
        if not_before is not None:
            update += ", not_before = :nb"
            values[":nb"] = {"S": _iso(not_before)}
        return self._update_if(shipment_id, key, UpdateExpression=update,
                               ConditionExpression="#s = :claimed AND claim_id = :claim",
                               ExpressionAttributeNames=names, ExpressionAttributeValues=values)

    def settle(self, shipment_id: str, key: str, state: LedgerState, now: datetime, *, detail: str,
               not_before: datetime | None = None) -> bool:
        """Record a decision not to send now (dropped, deferred) for a message nobody has claimed."""
        values: dict[str, Any] = {":state": {"S": state.value}, ":now": {"S": _iso(now)}, ":detail": {"S": detail}}
        update = "SET #s = :state, updated_at = :now, detail = :detail"
        if not_before is not None:
            update += ", not_before = :nb"
            values[":nb"] = {"S": _iso(not_before)}
        return self._update_if(shipment_id, key, UpdateExpression=update,
                               ConditionExpression="attribute_not_exists(PK)",
                               ExpressionAttributeNames={"#s": "state"}, ExpressionAttributeValues=values)

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
            "created_at": {"S": _iso(now)}, "source": {"S": source}})
