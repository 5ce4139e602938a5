"""The lookup page's items in DynamoDB (docs/data-model.md, access patterns 158-163), with the low-level client.

- settings: `PK = MERCHANT#<mid>`, `SK = LOOKUP`: slug, allowed_origins (JSON list), updated_at
- slug claim: `PK = LOOKUPSLUG#<slug>`, `SK = LOOKUPSLUG`: merchant_id; one merchant per slug (conditional put)
- miss counter: `PK = RATELIMIT#lookup-order#<keyed hash of merchant and order number>`, `SK = MISSES`:
  misses, quiet_until (epoch s), expires_at (TTL)
- the per-client attempt counter is the repository's fixed-window counter (`count_failure`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from chalicelib.core.config import get_settings
from chalicelib.storage.tables import EXTERNAL_REF_SK, external_ref_pk, merchant_pk

SETTINGS_SK = "LOOKUP"
CLAIM_SK = "LOOKUPSLUG"
MISSES_SK = "MISSES"
_NOBODY = "-"  # never a merchant id: a miss reads a key that does not exist, as a hit reads one that does


def claim_pk(slug: str) -> str:
    return f"LOOKUPSLUG#{slug}"


def misses_pk(order_hash: str) -> str:
    return f"RATELIMIT#lookup-order#{order_hash}"


def client_pk(client_hash: str) -> str:
    return f"RATELIMIT#lookup-client#{client_hash}"


def _s(value: str) -> dict[str, str]:
    return {"S": value}


@dataclass(frozen=True)
class StoredLookup:
    slug: str | None
    allowed_origins: tuple[str, ...]


@dataclass(frozen=True)
class Misses:
    misses: int
    quiet_until: int


class SlugTaken(Exception):
    """Another merchant holds the slug."""


class LookupChanged(Exception):
    """The settings changed since they were read."""


class LookupStore:
    def __init__(self, client: Any) -> None:
        self.client = client  # the repository's low-level DynamoDB client (faults guarded)
        self.table = get_settings().table_name

    def _get(self, pk: str, sk: str, *, consistent: bool = False) -> dict[str, Any] | None:
        response = self.client.get_item(TableName=self.table, Key={"PK": _s(pk), "SK": _s(sk)},
                                        ConsistentRead=consistent)
        item: dict[str, Any] | None = response.get("Item")
        return item

    # --- settings and the slug claim ---

    def settings(self, merchant_id: str, *, consistent: bool = False) -> StoredLookup:
        item = self._get(merchant_pk(merchant_id), SETTINGS_SK, consistent=consistent)
        if item is None:
            return StoredLookup(None, ())
        slug = item.get("slug", {}).get("S")
        origins = json.loads(item.get("allowed_origins", {}).get("S") or "[]")
        return StoredLookup(slug, tuple(str(o) for o in origins))

    def merchant_of_slug(self, slug: str) -> str | None:
        item = self._get(claim_pk(slug), CLAIM_SK)
        return item["merchant_id"]["S"] if item is not None else None

    def replace_settings(self, merchant_id: str, old: StoredLookup, new: StoredLookup, now_iso: str) -> None:
        """Claim the new slug, free the old one and write the settings in one transaction, conditional on the
        settings read (LookupChanged) and on nobody else holding the slug (SlugTaken)."""
        mid = _s(merchant_id)
        item: dict[str, Any] = {"PK": _s(merchant_pk(merchant_id)), "SK": _s(SETTINGS_SK), "merchant_id": mid,
                                "allowed_origins": _s(json.dumps(list(new.allowed_origins))),
                                "updated_at": _s(now_iso)}
        if new.slug:
            item["slug"] = _s(new.slug)
        if old.slug:
            condition, values = "slug = :old", {":old": _s(old.slug)}
        else:
            condition, values = "attribute_not_exists(slug)", {}
        put: dict[str, Any] = {"TableName": self.table, "Item": item, "ConditionExpression": condition}
        if values:
            put["ExpressionAttributeValues"] = values
        actions: list[dict[str, Any]] = [{"Put": put}]
        claim_index = -1
        if new.slug != old.slug:
            if new.slug:
                claim_index = len(actions)
                actions.append({"Put": {
                    "TableName": self.table, "Item": {"PK": _s(claim_pk(new.slug)), "SK": _s(CLAIM_SK),
                                                      "merchant_id": mid, "created_at": _s(now_iso)},
                    "ConditionExpression": "attribute_not_exists(PK) OR merchant_id = :mid",
                    "ExpressionAttributeValues": {":mid": mid}}})
            if old.slug:
                actions.append({"Delete": {
                    "TableName": self.table, "Key": {"PK": _s(claim_pk(old.slug)), "SK": _s(CLAIM_SK)},
                    "ConditionExpression": "attribute_not_exists(PK) OR merchant_id = :mid",
                    "ExpressionAttributeValues": {":mid": mid}}})
        try:
            self.client.transact_write_items(TransactItems=actions)
        except self.client.exceptions.TransactionCanceledException as exc:
            reasons = [str(r.get("Code")) for r in getattr(exc, "response", {}).get("CancellationReasons") or []]
            if 0 <= claim_index < len(reasons) and reasons[claim_index] == "ConditionalCheckFailed":
                raise SlugTaken from None
            if "ConditionalCheckFailed" in reasons or not reasons:
                raise LookupChanged from None
            raise

    # --- a lookup ---

    def misses(self, order_hash: str) -> Misses:
        item = self._get(misses_pk(order_hash), MISSES_SK, consistent=True)
        if item is None:
            return Misses(0, 0)
        return Misses(int(item.get("misses", {}).get("N", "0")), int(item.get("quiet_until", {}).get("N", "0")))

    def record_miss(self, order_hash: str, now_s: int, lock_s: int) -> None:
        """One more miss; the count restarts when the last miss is older than `lock_s` (the quiet time ended)."""
        key = {"PK": _s(misses_pk(order_hash)), "SK": _s(MISSES_SK)}
        quiet = {"N": str(now_s + lock_s)}
        ttl = {"N": str(now_s + lock_s + 3600)}
        try:
            self.client.update_item(
                TableName=self.table, Key=key,
                UpdateExpression="ADD misses :one SET quiet_until = :quiet, expires_at = :ttl",
                ConditionExpression="attribute_not_exists(quiet_until) OR quiet_until > :now",
                ExpressionAttributeValues={":one": {"N": "1"}, ":quiet": quiet, ":ttl": ttl,
                                           ":now": {"N": str(now_s)}})
        except self.client.exceptions.ConditionalCheckFailedException:
            self.client.put_item(TableName=self.table, Item={**key, "misses": {"N": "1"}, "quiet_until": quiet,
                                                             "expires_at": ttl})

    def shipment_id_of_order(self, merchant_id: str, order: str) -> str | None:
        """The shipment holding the merchant's external_ref (access pattern 67's claim), read for every lookup."""
        item = self._get(external_ref_pk(merchant_id or _NOBODY, order or _NOBODY), EXTERNAL_REF_SK)
        if item is None or item.get("merchant_id", {}).get("S") != merchant_id:
            return None
        return str(item["shipment_id"]["S"])
