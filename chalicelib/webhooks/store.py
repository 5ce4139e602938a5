"""Merchant webhooks in DynamoDB: the endpoint (config, secrets, health) and its delivery log.

Items (docs/data-model.md, access patterns 37-49), all in the merchant's webhook partition:

- endpoint: `PK = WEBHOOKS#<mid>`, `SK = ENDPOINT`
- delivery: `PK = WEBHOOKS#<mid>`, `SK = DELIVERY#<delivery id>`; the id starts with the event's recorded
  time in milliseconds, so the log sorts by time, and ends with a hash of (shipment, event), so the
  same stream record always lands on the same item: it is created once (conditional put).
- a pending delivery is in GSI1 under `WEBHOOK_DUE#<shard>` / `<next attempt ISO>#<id>` (the retry
  function's due list), a held one under `WEBHOOK_HELD#<mid>` / `<id>` (what resuming requeues); a
  delivered or failed one is in neither, so both lists stay sparse.

Every state change is a conditional UpdateItem (on the state and the attempt count, or the claim id),
so two workers, a retried stream batch or an overlapping scheduled run never send one attempt twice.
Written with the low-level client: the conditions and the GSI attribute removals read plainly there.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from chalicelib.core.config import get_settings
from chalicelib.core.times import to_ms
from chalicelib.storage.tables import (
    WEBHOOK_DUE_SHARDS,
    WEBHOOK_ENDPOINT_SK,
    webhook_delivery_sk,
    webhook_due_gsi_pk,
    webhook_held_gsi_pk,
    webhooks_pk,
)
from chalicelib.webhooks.rules import DeliveryState, EndpointHealth, WebhookDelivery

D = DeliveryState
DELIVERY_ID = re.compile(r"^whd_(\d{13})_([0-9a-f]{20})$")
DELIVERY_LOG_DAYS = 30  # a delivered or failed delivery stays in the log this long (TTL)
MAX_ATTEMPT_LOG = 25  # attempts kept per delivery (a delivery that always fails makes about 13 a day)
_SK_PREFIX = "DELIVERY#"


def iso(moment: datetime) -> str:
    """Fixed-width UTC text: sorts like the time it names (GSI1SK, conditions on next_attempt_at)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def delivery_id_for(recorded_at: datetime, shipment_id: str, event_id: str) -> str:
    """The delivery of one timeline event: the same event always gets the same id (exactly-once create)."""
    digest = hashlib.sha256(f"{shipment_id}\n{event_id}".encode()).hexdigest()[:20]
    return f"whd_{to_ms(recorded_at):013d}_{digest}"


def due_shard(delivery_id: str) -> int:
    return int(hashlib.sha256(delivery_id.encode()).hexdigest()[:8], 16) % WEBHOOK_DUE_SHARDS


# --- records -------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredSecret:
    value: str
    created_at: datetime
    expires_at: datetime | None = None  # None: the current secret

    def to_json(self) -> dict[str, str | None]:
        return {"value": self.value, "created_at": iso(self.created_at),
                "expires_at": iso(self.expires_at) if self.expires_at else None}


@dataclass(frozen=True)
class Endpoint:
    merchant_id: str
    endpoint_id: str
    url: str
    events: tuple[str, ...] | None  # None: every event type
    alert_email: str | None  # None: the branding support_email
    secrets: tuple[StoredSecret, ...]  # newest first
    created_at: datetime
    updated_at: datetime
    health: EndpointHealth = field(default_factory=EndpointHealth)
    pause_notice_claimed_at: datetime | None = None
    pause_notified_at: datetime | None = None

    @property
    def paused(self) -> bool:
        return self.health.paused

    def wants(self, event_type: str) -> bool:
        return self.events is None or event_type in self.events

    def active_secrets(self, now: datetime) -> list[str]:
        """The secrets that sign now: the current one, and rotated ones until they expire (24 h)."""
        return [s.value for s in self.secrets if s.expires_at is None or s.expires_at > now]


@dataclass(frozen=True)
class AttemptEntry:
    at: datetime
    status: int | None
    latency_ms: int
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"at": iso(self.at), "status": self.status, "latency_ms": self.latency_ms, "error": self.error}

    @staticmethod
    def from_json(data: dict[str, Any]) -> AttemptEntry:
        at = parse_time(data.get("at"))
        assert at is not None
        return AttemptEntry(at, data.get("status"), int(data.get("latency_ms") or 0), data.get("error"))


@dataclass(frozen=True)
class DeliveryRecord:
    merchant_id: str
    delivery_id: str
    endpoint_id: str
    event_id: str
    event_type: str
    shipment_id: str
    created_at: datetime
    state: DeliveryState
    body: str  # the exact JSON that is POSTed (replays send the same bytes)
    attempts: int = 0
    first_attempt_at: datetime | None = None
    next_attempt_at: datetime | None = None
    last_attempt_at: datetime | None = None
    last_status: int | None = None
    last_error: str | None = None
    last_latency_ms: int | None = None
    delivered_at: datetime | None = None
    attempt_log: tuple[AttemptEntry, ...] = ()
    replays: int = 0
    claim_id: str | None = None

    def domain(self) -> WebhookDelivery:
        return WebhookDelivery(self.event_id, self.endpoint_id, self.state, self.created_at, self.attempts,
                               self.first_attempt_at, self.next_attempt_at, self.last_status, self.last_error,
                               self.delivered_at)


@dataclass(frozen=True)
class DueDelivery:
    """A due delivery as the GSI1 due list projects it: what a claim, a hold or a give-up needs. The claim
    answers the whole item (body, log), so the due list does not carry them (docs/data-model.md, #43)."""

    merchant_id: str
    delivery_id: str
    endpoint_id: str
    attempts: int
    next_attempt_at: datetime | None


# --- wire helpers -------------------------------------------------------------------------


def _s(value: str) -> dict[str, str]:
    return {"S": value}


def _n(value: int) -> dict[str, str]:
    return {"N": str(int(value))}


def _text(item: dict[str, Any], name: str) -> str | None:
    value = item.get(name)
    return str(value["S"]) if value and "S" in value else None


def _int(item: dict[str, Any], name: str) -> int | None:
    value = item.get(name)
    return int(value["N"]) if value and "N" in value else None


def _time(item: dict[str, Any], name: str) -> datetime | None:
    return parse_time(_text(item, name))


def _endpoint(item: dict[str, Any]) -> Endpoint:
    secrets = tuple(StoredSecret(str(s["value"]), parse_time(s["created_at"]) or datetime.now(UTC),
                                 parse_time(s.get("expires_at")))
                    for s in json.loads(_text(item, "secrets") or "[]"))
    events_json = _text(item, "events")
    health = EndpointHealth(_int(item, "consecutive_failures") or 0, _time(item, "failing_since"),
                            _time(item, "paused_at"))
    created = _time(item, "created_at") or datetime.now(UTC)
    return Endpoint(str(_text(item, "merchant_id")), str(_text(item, "endpoint_id")), str(_text(item, "url")),
                    tuple(json.loads(events_json)) if events_json else None, _text(item, "alert_email"), secrets,
                    created, _time(item, "updated_at") or created, health, _time(item, "pause_notice_claimed_at"),
                    _time(item, "pause_notified_at"))


def _delivery(item: dict[str, Any]) -> DeliveryRecord:
    log = tuple(AttemptEntry.from_json(e) for e in json.loads(_text(item, "attempt_log") or "[]"))
    return DeliveryRecord(
        merchant_id=str(_text(item, "merchant_id")), delivery_id=str(_text(item, "delivery_id")),
        endpoint_id=str(_text(item, "endpoint_id")), event_id=str(_text(item, "event_id")),
        event_type=str(_text(item, "event_type")), shipment_id=str(_text(item, "shipment_id")),
        created_at=_time(item, "created_at") or datetime.now(UTC), state=DeliveryState(str(_text(item, "state"))),
        body=_text(item, "body") or "{}", attempts=_int(item, "attempts") or 0,
        first_attempt_at=_time(item, "first_attempt_at"), next_attempt_at=_time(item, "next_attempt_at"),
        last_attempt_at=_time(item, "last_attempt_at"), last_status=_int(item, "last_status"),
        last_error=_text(item, "last_error"), last_latency_ms=_int(item, "last_latency_ms"),
        delivered_at=_time(item, "delivered_at"), attempt_log=log, replays=_int(item, "replays") or 0,
        claim_id=_text(item, "claim_id"))


def _log_json(entries: Sequence[AttemptEntry]) -> str:
    return json.dumps([e.to_json() for e in list(entries)[-MAX_ATTEMPT_LOG:]], separators=(",", ":"))


# --- the store ---------------------------------------------------------------------------


class WebhookStore:
    def __init__(self, client: Any) -> None:
        self.client = client  # the low-level DynamoDB client
        self.table = get_settings().table_name

    # --- endpoint ----------------------------------------------------------------------

    def _endpoint_key(self, merchant_id: str) -> dict[str, Any]:
        return {"PK": _s(webhooks_pk(merchant_id)), "SK": _s(WEBHOOK_ENDPOINT_SK)}

    def _update(self, key: dict[str, Any], **kwargs: Any) -> dict[str, Any] | None:
        """A conditional UpdateItem; the new item, or None when the condition did not hold."""
        try:
            response = self.client.update_item(TableName=self.table, Key=key, ReturnValues="ALL_NEW", **kwargs)
        except self.client.exceptions.ConditionalCheckFailedException:
            return None
        return dict(response.get("Attributes") or {})

    def get_endpoint(self, merchant_id: str, *, consistent: bool = True) -> Endpoint | None:
        item = self.client.get_item(TableName=self.table, Key=self._endpoint_key(merchant_id),
                                    ConsistentRead=consistent).get("Item")
        return _endpoint(item) if item else None

    def create_endpoint(self, endpoint: Endpoint) -> bool:
        """The merchant's first endpoint; False when one exists already (a concurrent PUT won)."""
        item: dict[str, Any] = {
            **self._endpoint_key(endpoint.merchant_id), "merchant_id": _s(endpoint.merchant_id),
            "endpoint_id": _s(endpoint.endpoint_id), "url": _s(endpoint.url),
            "secrets": _s(json.dumps([s.to_json() for s in endpoint.secrets])),
            "created_at": _s(iso(endpoint.created_at)), "updated_at": _s(iso(endpoint.updated_at)),
            "consecutive_failures": _n(0)}
        if endpoint.events is not None:
            item["events"] = _s(json.dumps(list(endpoint.events)))
        if endpoint.alert_email:
            item["alert_email"] = _s(endpoint.alert_email)
        try:
            self.client.put_item(TableName=self.table, Item=item, ConditionExpression="attribute_not_exists(PK)")
        except self.client.exceptions.ConditionalCheckFailedException:
            # Ours after all if this very attempt committed and botocore retried it (the answer was lost).
            stored = self.get_endpoint(endpoint.merchant_id)
            return stored is not None and stored.endpoint_id == endpoint.endpoint_id
        return True

    def update_endpoint(self, merchant_id: str, url: str, events: Sequence[str] | None, alert_email: str | None,
                        now: datetime) -> Endpoint | None:
        """Replace the config (url, events, alert email); secrets and health stay. None: no endpoint."""
        sets = ["#url = :url", "updated_at = :now"]  # URL is a reserved word
        removes = []
        values: dict[str, Any] = {":url": _s(url), ":now": _s(iso(now))}
        if events is None:
            removes.append("events")
        else:
            sets.append("events = :events")
            values[":events"] = _s(json.dumps(list(events)))
        if alert_email:
            sets.append("alert_email = :alert")
            values[":alert"] = _s(alert_email)
        else:
            removes.append("alert_email")
        update = "SET " + ", ".join(sets) + (" REMOVE " + ", ".join(removes) if removes else "")
        item = self._update(self._endpoint_key(merchant_id), UpdateExpression=update,
                            ConditionExpression="attribute_exists(PK)", ExpressionAttributeNames={"#url": "url"},
                            ExpressionAttributeValues=values)
        return _endpoint(item) if item else None

    def set_secrets(self, merchant_id: str, secrets: Sequence[StoredSecret], expected: Sequence[StoredSecret],
                    now: datetime) -> Endpoint | None:
        """Swap the secret list, if it is still the one read (two rotations at once: one wins). A retried swap
        that had committed finds the new list stored (the new secret is random) and counts as won."""
        new = json.dumps([s.to_json() for s in secrets])
        item = self._update(self._endpoint_key(merchant_id), UpdateExpression="SET secrets = :new, updated_at = :now",
                            ConditionExpression="secrets = :old",
                            ExpressionAttributeValues={
                                ":new": _s(new), ":old": _s(json.dumps([s.to_json() for s in expected])),
                                ":now": _s(iso(now))})
        if item is None:
            stored = self.client.get_item(TableName=self.table, Key=self._endpoint_key(merchant_id),
                                          ConsistentRead=True).get("Item")
            item = stored if stored and _text(stored, "secrets") == new else None
        return _endpoint(item) if item else None

    def delete_endpoint(self, merchant_id: str) -> bool:
        """Delete the endpoint; False when there is none. Read first and then deleted unconditionally, so a
        retried delete whose first attempt committed still answers True (deleting is idempotent)."""
        if self.get_endpoint(merchant_id) is None:
            return False
        self.client.delete_item(TableName=self.table, Key=self._endpoint_key(merchant_id))
        return True

    def record_success(self, merchant_id: str) -> None:
        """A 2xx ends a failure streak. Conditional, so a healthy endpoint is not rewritten per delivery."""
        self._update(self._endpoint_key(merchant_id), UpdateExpression="SET consecutive_failures = :zero "
                     "REMOVE failing_since", ConditionExpression="consecutive_failures > :zero",
                     ExpressionAttributeValues={":zero": _n(0)})

    def record_failure(self, merchant_id: str, now: datetime) -> EndpointHealth | None:
        """Count one failed attempt (an atomic ADD, so concurrent senders never lose a count)."""
        item = self._update(self._endpoint_key(merchant_id),
                            UpdateExpression="ADD consecutive_failures :one "
                                             "SET failing_since = if_not_exists(failing_since, :now)",
                            ConditionExpression="attribute_exists(PK)",
                            ExpressionAttributeValues={":one": _n(1), ":now": _s(iso(now))})
        return _endpoint(item).health if item else None

    def pause(self, merchant_id: str, now: datetime) -> bool:
        """Pause the endpoint and claim the merchant's email; True for exactly one caller."""
        return self._update(self._endpoint_key(merchant_id),
                            UpdateExpression="SET paused_at = :now, pause_notice_claimed_at = :now "
                                             "REMOVE pause_notified_at",
                            ConditionExpression="attribute_exists(PK) AND attribute_not_exists(paused_at)",
                            ExpressionAttributeValues={":now": _s(iso(now))}) is not None

    def claim_pause_notice(self, merchant_id: str, now: datetime, stale_before: datetime) -> bool:
        """Retry the pause email after an earlier send failed (its claim was released or went stale)."""
        return self._update(self._endpoint_key(merchant_id), UpdateExpression="SET pause_notice_claimed_at = :now",
                            ConditionExpression="attribute_exists(paused_at) AND attribute_not_exists("
                                                "pause_notified_at) AND (attribute_not_exists(pause_notice_claimed_at)"
                                                " OR pause_notice_claimed_at < :stale)",
                            ExpressionAttributeValues={":now": _s(iso(now)),
                                                       ":stale": _s(iso(stale_before))}) is not None

    def finish_pause_notice(self, merchant_id: str, now: datetime, *, sent: bool) -> None:
        if sent:
            self._update(self._endpoint_key(merchant_id), UpdateExpression="SET pause_notified_at = :now",
                         ConditionExpression="attribute_exists(paused_at)",
                         ExpressionAttributeValues={":now": _s(iso(now))})
        else:  # released: the next held delivery tries the email again
            self._update(self._endpoint_key(merchant_id), UpdateExpression="REMOVE pause_notice_claimed_at",
                         ConditionExpression="attribute_exists(PK)")

    def resume(self, merchant_id: str, now: datetime) -> Endpoint | None:
        item = self._update(self._endpoint_key(merchant_id),
                            UpdateExpression="SET consecutive_failures = :zero, updated_at = :now REMOVE paused_at, "
                                             "failing_since, pause_notice_claimed_at, pause_notified_at",
                            ConditionExpression="attribute_exists(PK)",
                            ExpressionAttributeValues={":zero": _n(0), ":now": _s(iso(now))})
        return _endpoint(item) if item else None

    # --- deliveries: create, read ------------------------------------------------------------

    def _delivery_key(self, merchant_id: str, delivery_id: str) -> dict[str, Any]:
        return {"PK": _s(webhooks_pk(merchant_id)), "SK": _s(webhook_delivery_sk(delivery_id))}

    def create_delivery(self, record: DeliveryRecord) -> bool:
        """Log a new delivery, pending (due now) or held; False when this event's delivery exists already."""
        item: dict[str, Any] = {
            **self._delivery_key(record.merchant_id, record.delivery_id),
            "merchant_id": _s(record.merchant_id), "delivery_id": _s(record.delivery_id),
            "endpoint_id": _s(record.endpoint_id), "event_id": _s(record.event_id),
            "event_type": _s(record.event_type), "shipment_id": _s(record.shipment_id),
            "created_at": _s(iso(record.created_at)), "state": _s(record.state.value), "body": _s(record.body),
            "attempts": _n(0), "replays": _n(0)}
        if record.state is D.HELD:
            item.update(GSI1PK=_s(webhook_held_gsi_pk(record.merchant_id)), GSI1SK=_s(record.delivery_id))
        else:
            at = record.next_attempt_at or record.created_at
            item.update(next_attempt_at=_s(iso(at)), GSI1PK=_s(webhook_due_gsi_pk(due_shard(record.delivery_id))),
                        GSI1SK=_s(f"{iso(at)}#{record.delivery_id}"))
        try:
            self.client.put_item(TableName=self.table, Item=item, ConditionExpression="attribute_not_exists(PK)")
        except self.client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def get_delivery(self, merchant_id: str, delivery_id: str) -> DeliveryRecord | None:
        if not DELIVERY_ID.match(delivery_id):
            return None
        item = self.client.get_item(TableName=self.table, Key=self._delivery_key(merchant_id, delivery_id),
                                    ConsistentRead=True).get("Item")
        return _delivery(item) if item else None

    # --- deliveries: attempts -----------------------------------------------------------------

    def claim(self, record: DeliveryRecord | DueDelivery, claim_id: str, now: datetime, lease: timedelta
              ) -> DeliveryRecord | None:
        """Take the next attempt of a due delivery: pending, not yet attempted by anyone else (the attempt
        count is the one read) and due. Its due time moves to the end of the lease, so a crashed sender's
        attempt is retried after the lease and a concurrent run never finds it due meanwhile."""
        lease_until = iso(now + lease)
        item = self._update(
            self._delivery_key(record.merchant_id, record.delivery_id),
            UpdateExpression="SET attempts = :next, claim_id = :claim, next_attempt_at = :lease, GSI1SK = :sk, "
                             "last_attempt_at = :now, first_attempt_at = if_not_exists(first_attempt_at, :now)",
            ConditionExpression="#s = :pending AND attempts = :seen AND next_attempt_at <= :now",
            ExpressionAttributeNames={"#s": "state"},
            ExpressionAttributeValues={":next": _n(record.attempts + 1), ":seen": _n(record.attempts),
                                       ":claim": _s(claim_id), ":lease": _s(lease_until),
                                       ":sk": _s(f"{lease_until}#{record.delivery_id}"), ":now": _s(iso(now)),
                                       ":pending": _s(D.PENDING.value)})
        if item is None:  # ours after all if this attempt committed and botocore retried it (claim ids are fresh)
            stored = self.client.get_item(TableName=self.table, ConsistentRead=True,
                                          Key=self._delivery_key(record.merchant_id, record.delivery_id)).get("Item")
            item = stored if stored and _text(stored, "claim_id") == claim_id else None
        return _delivery(item) if item else None

    def record_attempt(self, claimed: DeliveryRecord, outcome: WebhookDelivery, entry: AttemptEntry,
                       now: datetime) -> bool:
        """Store what the claimed attempt got; False when a replay or resume took the delivery over meanwhile."""
        values: dict[str, Any] = {":state": _s(outcome.state.value), ":claim": _s(str(claimed.claim_id)),
                                  ":latency": _n(entry.latency_ms),
                                  ":log": _s(_log_json([*claimed.attempt_log, entry]))}
        sets = ["#s = :state", "last_latency_ms = :latency", "attempt_log = :log"]
        removes = ["claim_id"]
        if outcome.last_status is not None:
            sets.append("last_status = :status")
            values[":status"] = _n(outcome.last_status)
        else:
            removes.append("last_status")
        if outcome.last_error:
            sets.append("last_error = :error")
            values[":error"] = _s(outcome.last_error[:300])
        else:
            removes.append("last_error")
        if outcome.state is D.PENDING and outcome.next_attempt_at is not None:
            at = iso(outcome.next_attempt_at)
            sets += ["next_attempt_at = :at", "GSI1SK = :sk"]
            values.update({":at": _s(at), ":sk": _s(f"{at}#{claimed.delivery_id}")})
        else:  # delivered or given up: out of the due list, into the log's retention
            removes += ["next_attempt_at", "GSI1PK", "GSI1SK"]
            sets.append("expires_at = :ttl")
            values[":ttl"] = _n(int((now + timedelta(days=DELIVERY_LOG_DAYS)).timestamp()))
            if outcome.delivered_at is not None:
                sets.append("delivered_at = :delivered")
                values[":delivered"] = _s(iso(outcome.delivered_at))
        return self._update(self._delivery_key(claimed.merchant_id, claimed.delivery_id),
                            UpdateExpression="SET " + ", ".join(sets) + " REMOVE " + ", ".join(removes),
                            ConditionExpression="claim_id = :claim", ExpressionAttributeNames={"#s": "state"},
                            ExpressionAttributeValues=values) is not None

    def hold(self, record: DeliveryRecord | DueDelivery, now: datetime) -> bool:
        """Park a due delivery because its endpoint is paused (same conditions as a claim)."""
        return self._update(
            self._delivery_key(record.merchant_id, record.delivery_id),
            UpdateExpression="SET #s = :held, GSI1PK = :pk, GSI1SK = :id REMOVE next_attempt_at, claim_id",
            ConditionExpression="#s = :pending AND attempts = :seen AND next_attempt_at <= :now",
            ExpressionAttributeNames={"#s": "state"},
            ExpressionAttributeValues={":held": _s(D.HELD.value), ":pending": _s(D.PENDING.value),
                                       ":pk": _s(webhook_held_gsi_pk(record.merchant_id)),
                                       ":id": _s(record.delivery_id), ":seen": _n(record.attempts),
                                       ":now": _s(iso(now))}) is not None

    def give_up(self, record: DeliveryRecord | DueDelivery, reason: str, now: datetime) -> bool:
        """Fail a due delivery without an attempt (its endpoint was deleted)."""
        return self._update(
            self._delivery_key(record.merchant_id, record.delivery_id),
            UpdateExpression="SET #s = :failed, last_error = :reason, expires_at = :ttl "
                             "REMOVE next_attempt_at, claim_id, GSI1PK, GSI1SK",
            ConditionExpression="#s = :pending AND attempts = :seen AND next_attempt_at <= :now",
            ExpressionAttributeNames={"#s": "state"},
            ExpressionAttributeValues={":failed": _s(D.FAILED.value), ":pending": _s(D.PENDING.value),
                                       ":reason": _s(reason), ":seen": _n(record.attempts), ":now": _s(iso(now)),
                                       ":ttl": _n(int((now + timedelta(days=DELIVERY_LOG_DAYS)).timestamp()))}
        ) is not None

    def requeue(self, merchant_id: str, delivery_id: str, now: datetime, *, only_held: bool = False,
                endpoint_id: str | None = None) -> DeliveryRecord | None:
        """Due now with a fresh 24-hour budget (domain `replay`): a manual replay (any state) or a resumed
        endpoint's held delivery (`only_held`). None when there is no such delivery (or it is not held)."""
        at = iso(now)
        values: dict[str, Any] = {":pending": _s(D.PENDING.value), ":zero": _n(0), ":at": _s(at),
                                  ":pk": _s(webhook_due_gsi_pk(due_shard(delivery_id))),
                                  ":sk": _s(f"{at}#{delivery_id}")}
        sets = ["#s = :pending", "attempts = :zero", "next_attempt_at = :at", "GSI1PK = :pk", "GSI1SK = :sk"]
        if only_held:
            condition = "#s = :held"
            values[":held"] = _s(D.HELD.value)
        else:
            condition = "attribute_exists(PK)"
            sets.append("replays = if_not_exists(replays, :zero) + :one")
            values[":one"] = _n(1)
        if endpoint_id:  # a replay goes to the endpoint configured now
            sets.append("endpoint_id = :endpoint")
            values[":endpoint"] = _s(endpoint_id)
        item = self._update(self._delivery_key(merchant_id, delivery_id),
                            UpdateExpression="SET " + ", ".join(sets) + " REMOVE first_attempt_at, claim_id, "
                                             "delivered_at, expires_at",
                            ConditionExpression=condition, ExpressionAttributeNames={"#s": "state"},
                            ExpressionAttributeValues=values)
        return _delivery(item) if item else None

    # --- deliveries: lists ---------------------------------------------------------------------

    def due(self, shard: int, now: datetime, limit: int) -> list[DueDelivery]:
        """Deliveries of one shard whose next attempt is due (GSI1, eventually consistent: claims re-check)."""
        response = self.client.query(TableName=self.table, IndexName="GSI1", Limit=limit,
                                     KeyConditionExpression="GSI1PK = :pk AND GSI1SK <= :until",
                                     ExpressionAttributeValues={":pk": _s(webhook_due_gsi_pk(shard)),
                                                                ":until": _s(f"{iso(now)}#~")},
                                     ProjectionExpression="merchant_id, delivery_id, endpoint_id, attempts, "
                                                          "next_attempt_at")
        return [DueDelivery(str(_text(item, "merchant_id")), str(_text(item, "delivery_id")),
                            str(_text(item, "endpoint_id")), _int(item, "attempts") or 0,
                            _time(item, "next_attempt_at")) for item in response.get("Items", [])]

    def held_ids(self, merchant_id: str, limit: int) -> tuple[list[str], bool]:
        """Up to `limit` held delivery ids, oldest first, and whether more are held."""
        ids: list[str] = []
        start: dict[str, Any] | None = None
        while len(ids) < limit:
            kwargs: dict[str, Any] = {"ExclusiveStartKey": start} if start else {}
            response = self.client.query(TableName=self.table, IndexName="GSI1", Limit=min(100, limit - len(ids)),
                                         KeyConditionExpression="GSI1PK = :pk",
                                         ExpressionAttributeValues={":pk": _s(webhook_held_gsi_pk(merchant_id))},
                                         **kwargs)
            ids += [str(item["delivery_id"]["S"]) for item in response.get("Items", [])]
            start = response.get("LastEvaluatedKey")
            if not start:
                return ids, False
        return ids, True

    def _range_condition(self, merchant_id: str, from_ms: int | None, to_ms: int | None
                         ) -> tuple[str, dict[str, Any]]:
        values: dict[str, Any] = {":pk": _s(webhooks_pk(merchant_id))}
        if from_ms is None and to_ms is None:
            values[":prefix"] = _s(_SK_PREFIX)
            return "PK = :pk AND begins_with(SK, :prefix)", values
        values[":low"] = _s(f"{_SK_PREFIX}whd_{max(0, from_ms or 0):013d}")
        values[":high"] = _s(f"{_SK_PREFIX}whd_{to_ms:013d}_~" if to_ms is not None else f"{_SK_PREFIX}~")
        return "PK = :pk AND SK BETWEEN :low AND :high", values

    def list_deliveries(self, merchant_id: str, *, from_ms: int | None, to_ms: int | None,
                        state: DeliveryState | None, limit: int, start: dict[str, Any] | None,
                        max_pages: int = 10) -> tuple[list[DeliveryRecord], dict[str, Any] | None]:
        """Newest first, and the key to continue from (None: the end). A state filter reads through the time
        range page by page (at most `max_pages` per call); a page that holds more matches than wanted ends
        at the last one returned, whose key is then the cursor, so no match is ever skipped."""
        condition, values = self._range_condition(merchant_id, from_ms, to_ms)
        kwargs: dict[str, Any] = {}
        if state is not None:
            kwargs.update(FilterExpression="#s = :state", ExpressionAttributeNames={"#s": "state"})
            values[":state"] = _s(state.value)
        page_size = limit if state is None else max(limit, 100)
        found: list[DeliveryRecord] = []
        for _ in range(max_pages):
            page: dict[str, Any] = {"ExclusiveStartKey": start} if start else {}
            response = self.client.query(TableName=self.table, KeyConditionExpression=condition,
                                         ExpressionAttributeValues=values, ScanIndexForward=False,
                                         Limit=page_size, **kwargs, **page)
            items = response.get("Items", [])
            start = response.get("LastEvaluatedKey")
            for n, item in enumerate(items, start=1):
                found.append(_delivery(item))
                if len(found) == limit:
                    more = n < len(items) or start is not None
                    return found, ({"PK": item["PK"], "SK": item["SK"]} if more else None)
            if not start:
                break
        return found, start

    def delivery_ids_between(self, merchant_id: str, from_ms: int, to_ms: int, limit: int) -> list[str]:
        """Up to `limit` delivery ids in the time range (keys only), oldest first."""
        condition, values = self._range_condition(merchant_id, from_ms, to_ms)
        ids: list[str] = []
        start: dict[str, Any] | None = None
        while len(ids) < limit:
            page: dict[str, Any] = {"ExclusiveStartKey": start} if start else {}
            response = self.client.query(TableName=self.table, KeyConditionExpression=condition,
                                         ExpressionAttributeValues=values, ProjectionExpression="SK",
                                         Limit=limit - len(ids), **page)
            ids += [str(item["SK"]["S"]).removeprefix(_SK_PREFIX) for item in response.get("Items", [])]
            start = response.get("LastEvaluatedKey")
            if not start:
                break
        return ids


def with_secret(endpoint: Endpoint, secret: StoredSecret, now: datetime, keep_old_for: timedelta,
                max_secrets: int = 4) -> tuple[StoredSecret, ...]:
    """The secret list after a rotation: the new one first; the previous current one signs alongside until
    `now + keep_old_for`; expired ones are dropped (and at most `max_secrets` are kept)."""
    kept = [secret]
    for old in endpoint.secrets:
        if old.expires_at is None:
            kept.append(replace(old, expires_at=now + keep_old_for))
        elif old.expires_at > now:
            kept.append(old)
    return tuple(kept[:max_secrets])
