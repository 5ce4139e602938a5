"""The custody items in DynamoDB (docs/data-model.md, access patterns 142-149). Written with the low-level client.

Items (all under `PK = CUSTODY#<sid>` but the key registry):
- head: `SK = HEAD`, merchant_id, seq (N), hash: the chain's last event.
- event: `SK = EVENT#<seq, 8 digits>`, body (canonical JSON), hash. Appended in one transaction with the head:
  the event put is conditional on attribute_not_exists(PK) and the head update on the seq read, so two writers
  never both append seq n and nothing can slip in between two events.
- spec: `SK = SPEC`, requirements (JSON), parcels (JSON list), pin_digest, pin_attempts, pin_verified, scans
  (JSON {stage: [barcodes]}).
- receipt: `SK = RECEIPT`, jws, kid: written once (attribute_not_exists) on delivery.
- key registry: `PK = CUSTODYKEYS`, `SK = KEY#<created ISO>#<kid>`, kms_key_id, jwk (JSON): every receipt key
  ever used, so rotation keeps old receipts verifiable; the newest signs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from chalicelib.core.config import get_settings

KEYS_PK = "CUSTODYKEYS"


def custody_pk(shipment_id: str) -> str:
    return f"CUSTODY#{shipment_id}"


def event_sk(seq: int) -> str:
    return f"EVENT#{seq:08d}"


def _s(value: str) -> dict[str, str]:
    return {"S": value}


class ChainRaced(RuntimeError):
    """Another writer appended between the head read and the transaction: read again and retry."""


@dataclass
class Spec:
    merchant_id: str
    requirements: dict[str, Any] = field(default_factory=dict)
    parcels: list[str] = field(default_factory=list)
    pin_digest: str | None = None
    pin_attempts: int = 0
    pin_verified: bool = False
    scans: dict[str, list[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class ReceiptKey:
    kid: str
    kms_key_id: str
    jwk: dict[str, str]
    created_at: str


class CustodyStore:
    def __init__(self, client: Any) -> None:
        self.client = client
        self.table = get_settings().table_name

    # --- the chain -------------------------------------------------------------------

    def head(self, shipment_id: str) -> tuple[int, str | None]:
        got = self.client.get_item(TableName=self.table, ConsistentRead=True,
                                   Key={"PK": _s(custody_pk(shipment_id)), "SK": _s("HEAD")},
                                   ProjectionExpression="seq, #h", ExpressionAttributeNames={"#h": "hash"})
        item = got.get("Item")
        if not item:
            return 0, None
        return int(item["seq"]["N"]), item["hash"]["S"]

    def append(self, merchant_id: str, shipment_id: str, seq: int, body_json: str, digest: str) -> None:
        self.append_many(merchant_id, shipment_id, seq, [(body_json, digest)])

    def append_many(self, merchant_id: str, shipment_id: str, first_seq: int,
                    events: list[tuple[str, str]]) -> None:
        """Events first_seq, first_seq + 1, ... (body JSON, hash) and the head moved to the last, in one
        transaction (a delivery's proofs and `delivered` together; at most 99 events)."""
        pk = _s(custody_pk(shipment_id))
        last = first_seq + len(events) - 1
        values: dict[str, Any] = {":seq": {"N": str(last)}, ":h": _s(events[-1][1]), ":m": _s(merchant_id)}
        if first_seq == 1:
            head_condition = "attribute_not_exists(PK)"
        else:
            head_condition, values[":prev"] = "seq = :prev", {"N": str(first_seq - 1)}
        puts: list[dict[str, Any]] = [
            {"Put": {"TableName": self.table, "ConditionExpression": "attribute_not_exists(PK)",
                     "Item": {"PK": pk, "SK": _s(event_sk(first_seq + i)), "merchant_id": _s(merchant_id),
                              "body": _s(body_json), "hash": _s(digest)}}}
            for i, (body_json, digest) in enumerate(events)]
        try:
            self.client.transact_write_items(TransactItems=[
                *puts,
                {"Update": {"TableName": self.table, "Key": {"PK": pk, "SK": _s("HEAD")},
                            "UpdateExpression": "SET seq = :seq, #h = :h, merchant_id = :m",
                            "ExpressionAttributeNames": {"#h": "hash"}, "ConditionExpression": head_condition,
                            "ExpressionAttributeValues": values}},
            ])
        except self.client.exceptions.TransactionCanceledException as exc:
            reasons = getattr(exc, "response", {}).get("CancellationReasons") or []
            if any(r.get("Code") == "ConditionalCheckFailed" for r in reasons):
                raise ChainRaced() from None
            raise

    def events(self, shipment_id: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        start: dict[str, Any] | None = None
        while True:
            args: dict[str, Any] = {"TableName": self.table, "ConsistentRead": True,
                                    "KeyConditionExpression": "PK = :pk AND begins_with(SK, :e)",
                                    "ExpressionAttributeValues": {":pk": _s(custody_pk(shipment_id)),
                                                                  ":e": _s("EVENT#")}}
            if start:
                args["ExclusiveStartKey"] = start
            page = self.client.query(**args)
            out += [{"body": json.loads(i["body"]["S"]), "hash": i["hash"]["S"]} for i in page.get("Items", [])]
            start = page.get("LastEvaluatedKey")
            if not start:
                return out

    # --- spec ------------------------------------------------------------------------

    def spec(self, shipment_id: str) -> Spec | None:
        item = self.client.get_item(TableName=self.table, ConsistentRead=True,
                                    Key={"PK": _s(custody_pk(shipment_id)), "SK": _s("SPEC")}).get("Item")
        if not item:
            return None
        return Spec(merchant_id=item["merchant_id"]["S"], requirements=json.loads(item["requirements"]["S"]),
                    parcels=json.loads(item["parcels"]["S"]),
                    pin_digest=item["pin_digest"]["S"] if "pin_digest" in item else None,
                    pin_attempts=int(item.get("pin_attempts", {}).get("N", "0")),
                    pin_verified=bool(item.get("pin_verified", {}).get("BOOL", False)),
                    scans=json.loads(item.get("scans", {}).get("S", "{}")))

    def specs(self, shipment_ids: list[str]) -> dict[str, Spec]:
        """Many shipments' specs in BatchGetItem calls of at most 100 keys (the driver's route)."""
        found: dict[str, Spec] = {}
        for start in range(0, len(shipment_ids), 100):
            keys: list[dict[str, Any]] = [{"PK": _s(custody_pk(sid)), "SK": _s("SPEC")}
                                          for sid in shipment_ids[start:start + 100]]
            for _ in range(5):  # unprocessed keys come back under throttling
                if not keys:
                    break
                answer = self.client.batch_get_item(RequestItems={self.table: {"Keys": keys}})
                for item in answer.get("Responses", {}).get(self.table, []):
                    found[item["PK"]["S"].removeprefix("CUSTODY#")] = Spec(
                        merchant_id=item["merchant_id"]["S"], requirements=json.loads(item["requirements"]["S"]),
                        parcels=json.loads(item["parcels"]["S"]))
                keys = answer.get("UnprocessedKeys", {}).get(self.table, {}).get("Keys", [])
        return found

    def put_spec(self, shipment_id: str, spec: Spec) -> bool:
        """Once per shipment (a retried create keeps the first)."""
        item: dict[str, Any] = {"PK": _s(custody_pk(shipment_id)), "SK": _s("SPEC"),
                                "merchant_id": _s(spec.merchant_id),
                                "requirements": _s(json.dumps(spec.requirements, sort_keys=True)),
                                "parcels": _s(json.dumps(spec.parcels)), "pin_attempts": {"N": "0"},
                                "pin_verified": {"BOOL": False}, "scans": _s("{}")}
        if spec.pin_digest:
            item["pin_digest"] = _s(spec.pin_digest)
        try:
            self.client.put_item(TableName=self.table, Item=item, ConditionExpression="attribute_not_exists(PK)")
        except self.client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def set_spec(self, shipment_id: str, requirements: dict[str, Any], parcels: list[str]) -> None:
        self.client.update_item(
            TableName=self.table, Key={"PK": _s(custody_pk(shipment_id)), "SK": _s("SPEC")},
            UpdateExpression="SET requirements = :r, parcels = :p",
            ExpressionAttributeValues={":r": _s(json.dumps(requirements, sort_keys=True)),
                                       ":p": _s(json.dumps(parcels))})

    def count_pin_attempt(self, shipment_id: str, limit: int) -> bool:
        """Spend one attempt; False when none is left (the count never passes the limit)."""
        try:
            self.client.update_item(
                TableName=self.table, Key={"PK": _s(custody_pk(shipment_id)), "SK": _s("SPEC")},
                UpdateExpression="ADD pin_attempts :one", ConditionExpression="pin_attempts < :limit",
                ExpressionAttributeValues={":one": {"N": "1"}, ":limit": {"N": str(limit)}})
        except self.client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def reset_pin_attempts(self, shipment_id: str) -> bool:
        """The dispatcher unlocks the PIN: its attempts start again; False when none was spent."""
        try:
            self.client.update_item(
                TableName=self.table, Key={"PK": _s(custody_pk(shipment_id)), "SK": _s("SPEC")},
                UpdateExpression="SET pin_attempts = :zero", ConditionExpression="pin_attempts > :zero",
                ExpressionAttributeValues={":zero": {"N": "0"}})
        except self.client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def mark_pin_verified(self, shipment_id: str) -> None:
        self.client.update_item(TableName=self.table, Key={"PK": _s(custody_pk(shipment_id)), "SK": _s("SPEC")},
                                UpdateExpression="SET pin_verified = :t", ExpressionAttributeValues={
                                    ":t": {"BOOL": True}})

    def save_scans(self, shipment_id: str, scans: dict[str, list[str]], expected: dict[str, list[str]]) -> bool:
        """Conditional on the scans read, so two phones scanning at once do not lose one's barcodes."""
        try:
            self.client.update_item(
                TableName=self.table, Key={"PK": _s(custody_pk(shipment_id)), "SK": _s("SPEC")},
                UpdateExpression="SET scans = :new", ConditionExpression="scans = :old",
                ExpressionAttributeValues={":new": _s(json.dumps(scans, sort_keys=True)),
                                           ":old": _s(json.dumps(expected, sort_keys=True) if expected else "{}")})
        except self.client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    # --- receipts and keys ------------------------------------------------------------

    def receipt(self, shipment_id: str) -> tuple[str, str] | None:
        item = self.client.get_item(TableName=self.table, ConsistentRead=True,
                                    Key={"PK": _s(custody_pk(shipment_id)), "SK": _s("RECEIPT")}).get("Item")
        return (item["jws"]["S"], item["kid"]["S"]) if item else None

    def put_receipt(self, merchant_id: str, shipment_id: str, jws: str, kid: str) -> bool:
        try:
            self.client.put_item(TableName=self.table, ConditionExpression="attribute_not_exists(PK)", Item={
                "PK": _s(custody_pk(shipment_id)), "SK": _s("RECEIPT"), "merchant_id": _s(merchant_id),
                "jws": _s(jws), "kid": _s(kid)})
        except self.client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def receipt_keys(self) -> list[ReceiptKey]:
        """Every registered key, oldest first (a handful: one per rotation)."""
        items = self.client.query(TableName=self.table, ConsistentRead=True,
                                  KeyConditionExpression="PK = :pk AND begins_with(SK, :k)",
                                  ExpressionAttributeValues={":pk": _s(KEYS_PK), ":k": _s("KEY#")}).get("Items", [])
        return [ReceiptKey(kid=i["kid"]["S"], kms_key_id=i["kms_key_id"]["S"], jwk=json.loads(i["jwk"]["S"]),
                           created_at=i["created_at"]["S"]) for i in items]

    def register_key(self, key: ReceiptKey) -> None:
        self.client.put_item(TableName=self.table, ConditionExpression="attribute_not_exists(PK)", Item={
            "PK": _s(KEYS_PK), "SK": _s(f"KEY#{key.created_at}#{key.kid}"), "kid": _s(key.kid),
            "kms_key_id": _s(key.kms_key_id), "jwk": _s(json.dumps(key.jwk, sort_keys=True)),
            "created_at": _s(key.created_at)})
