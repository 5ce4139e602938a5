"""Conversations and messages in DynamoDB (docs/data-model.md, access patterns 134-141).

Items, all in the conversation's partition `MSGS#<mid>#SHIPMENT#<sid>` (recipient, driver, dispatch) or
`MSGS#<mid>#DRIVER#<did>` (dispatch and the driver), so every read starts from the merchant's id:
- message: `SK = MSG#<sent ms, 13 digits>#<message id>`: sender role and display name, text, sent time,
  `expires_at` (TTL).
- state: `SK = STATE`: messages sent per role (`n_<role>`), what each role has read (`r_<reader>_<author>` counts,
  `read_ms_<reader>`), when the recipient's page last polled (`polled_ms`).
- rate counter: `PK = MSGRATE#<mid>#<conversation>#<role>`, `SK = <minute bucket>`, `n`, `expires_at` (TTL).
- the dispatch thread's events: `SK = EVENT#<occurred>#<event id>` in its partition (a shipment's go to its
  timeline, `SHIPMENT#<sid>`), type `message_sent`, without the text: they reach the stream and the webhook sender.

Sending is one transaction: the message (absent), the state's count (ADD) and the event (absent). Written with
the low-level client, as the exception store.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from chalicelib.core.config import get_settings
from chalicelib.messaging.rules import DRIVER_ROLES, SHIPMENT_ROLES, ConversationState, Role

STATE_SK = "STATE"
MESSAGE_PREFIX = "MSG#"


def _s(value: str) -> dict[str, str]:
    return {"S": value}


def _n(value: int) -> dict[str, str]:
    return {"N": str(value)}


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass(frozen=True)
class Conversation:
    """A shipment's (recipient, driver, dispatch) or a driver's (dispatch, driver) conversation."""

    merchant_id: str
    shipment_id: str | None = None
    driver_id: str | None = None  # of a dispatch thread; a shipment's driver is read from the shipment

    @property
    def pk(self) -> str:
        subject = f"SHIPMENT#{self.shipment_id}" if self.shipment_id else f"DRIVER#{self.driver_id}"
        return f"MSGS#{self.merchant_id}#{subject}"

    @property
    def name(self) -> str:
        return f"shipment:{self.shipment_id}" if self.shipment_id else f"driver:{self.driver_id}"

    @property
    def roles(self) -> tuple[Role, ...]:
        return SHIPMENT_ROLES if self.shipment_id else DRIVER_ROLES


@dataclass(frozen=True)
class MessageRecord:
    message_id: str
    sender_role: Role
    sender_name: str
    text: str
    sent_at: datetime
    expires_at: int
    broadcast_id: str | None = None

    @property
    def sent_ms(self) -> int:
        return int(self.sent_at.timestamp() * 1000)


def _message(item: dict[str, Any]) -> MessageRecord:
    return MessageRecord(
        message_id=item["message_id"]["S"], sender_role=Role(item["sender_role"]["S"]),
        sender_name=item["sender_name"]["S"], text=item["text"]["S"],
        sent_at=datetime.fromtimestamp(int(item["sent_ms"]["N"]) / 1000, UTC), expires_at=int(item["expires_at"]["N"]),
        broadcast_id=item.get("broadcast_id", {}).get("S"))


def _state(item: dict[str, Any] | None) -> ConversationState:
    item = item or {}

    def num(name: str) -> int:
        value = item.get(name)
        return int(value["N"]) if value and "N" in value else 0

    sent = {r: num(f"n_{r.value}") for r in Role if f"n_{r.value}" in item}
    read_counts = {(reader, author): num(f"r_{reader.value}_{author.value}") for reader in Role for author in Role
                   if f"r_{reader.value}_{author.value}" in item}
    read_ms = {r: num(f"read_ms_{r.value}") for r in Role if f"read_ms_{r.value}" in item}
    return ConversationState(sent, read_counts, read_ms, num("polled_ms") if "polled_ms" in item else None)


class MessageStore:
    def __init__(self, client: Any) -> None:
        self.client = client  # the low-level DynamoDB client
        self.table = get_settings().table_name

    def claim_sms_number(self, number: str, merchant_id: str) -> bool:
        """The merchant's two-way SMS number: inbound messages to it are this merchant's. False when another
        merchant holds it."""
        try:
            self.client.put_item(
                TableName=self.table, Item={"PK": _s(f"SMSNUMBER#{number}"), "SK": _s("SMSNUMBER"),
                                            "merchant_id": _s(merchant_id)},
                ConditionExpression="attribute_not_exists(PK) OR merchant_id = :m",
                ExpressionAttributeValues={":m": _s(merchant_id)})
        except self.client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def merchant_of_sms_number(self, number: str) -> str | None:
        item = self.client.get_item(TableName=self.table,
                                    Key={"PK": _s(f"SMSNUMBER#{number}"), "SK": _s("SMSNUMBER")}).get("Item")
        return str(item["merchant_id"]["S"]) if item else None

    def take_rate(self, conversation: Conversation, sender: str, bucket: int, limit: int, expires_at: int) -> bool:
        """Count one message of `sender` in this minute; False when the minute's limit is reached."""
        try:
            self.client.update_item(
                TableName=self.table,
                Key={"PK": _s(f"MSGRATE#{conversation.merchant_id}#{sender}"), "SK": _s(str(bucket))},
                UpdateExpression="ADD n :one SET expires_at = :exp",
                ConditionExpression="attribute_not_exists(n) OR n < :limit",
                ExpressionAttributeValues={":one": _n(1), ":limit": _n(limit), ":exp": _n(expires_at)})
        except self.client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def send(self, conversation: Conversation, message: MessageRecord, event: dict[str, Any], *,
             once_key: str | None = None) -> bool:
        """The message, its count on the conversation's state and its event (a wire item), all or nothing; with
        `once_key` (an inbound SMS's id) also a claim of that key, so a redelivery stores nothing: False then."""
        item: dict[str, Any] = {
            "PK": _s(conversation.pk), "SK": _s(f"{MESSAGE_PREFIX}{message.sent_ms:013d}#{message.message_id}"),
            "merchant_id": _s(conversation.merchant_id), "message_id": _s(message.message_id),
            "sender_role": _s(message.sender_role.value), "sender_name": _s(message.sender_name),
            "text": _s(message.text), "sent_ms": _n(message.sent_ms), "expires_at": _n(message.expires_at)}
        if conversation.shipment_id:
            item["shipment_id"] = _s(conversation.shipment_id)
        if conversation.driver_id:
            item["driver_id"] = _s(conversation.driver_id)
        if message.broadcast_id:
            item["broadcast_id"] = _s(message.broadcast_id)
        role = message.sender_role.value
        once: list[dict[str, Any]] = [] if once_key is None else [{"Put": {
            "TableName": self.table, "ConditionExpression": "attribute_not_exists(PK)",
            "Item": {"PK": _s(once_key), "SK": _s("ONCE"), "message_id": _s(message.message_id),
                     "expires_at": _n(message.expires_at)}}}]
        try:
            self._send(conversation, item, role, message, event, once)
        except self.client.exceptions.TransactionCanceledException as exc:
            reasons = getattr(exc, "response", {}).get("CancellationReasons") or []
            if once and reasons and str(reasons[-1].get("Code")) == "ConditionalCheckFailed":
                return False
            raise
        return True

    def _send(self, conversation: Conversation, item: dict[str, Any], role: str, message: MessageRecord,
              event: dict[str, Any], once: list[dict[str, Any]]) -> None:
        self.client.transact_write_items(TransactItems=[
            {"Put": {"TableName": self.table, "Item": item, "ConditionExpression": "attribute_not_exists(PK)"}},
            {"Update": {"TableName": self.table, "Key": {"PK": _s(conversation.pk), "SK": _s(STATE_SK)},
                        "UpdateExpression": f"ADD n_{role} :one SET merchant_id = :m, expires_at = :exp, "
                                            f"read_ms_{role} = :ms",
                        "ExpressionAttributeValues": {":one": _n(1), ":m": _s(conversation.merchant_id),
                                                      ":exp": _n(message.expires_at), ":ms": _n(message.sent_ms)}}},
            {"Put": {"TableName": self.table, "Item": event, "ConditionExpression": "attribute_not_exists(PK)"}},
            *once])

    def state(self, conversation: Conversation) -> ConversationState:
        item = self.client.get_item(TableName=self.table, Key={"PK": _s(conversation.pk), "SK": _s(STATE_SK)},
                                    ConsistentRead=True).get("Item")
        return _state(item)

    def states(self, conversations: Sequence[Conversation]) -> dict[str, ConversationState]:
        """Many conversations' states by their partition key: BatchGetItem, 100 a request."""
        found: dict[str, ConversationState] = {}
        keys = [{"PK": _s(c.pk), "SK": _s(STATE_SK)} for c in conversations]
        for start in range(0, len(keys), 100):
            pending: dict[str, Any] = {self.table: {"Keys": keys[start:start + 100]}}
            for _ in range(5):
                response = self.client.batch_get_item(RequestItems=pending)
                for item in response.get("Responses", {}).get(self.table, []):
                    found[item["PK"]["S"]] = _state(item)
                pending = response.get("UnprocessedKeys") or {}
                if not pending:
                    break
        return found

    def messages(self, conversation: Conversation, limit: int) -> list[MessageRecord]:
        """The latest `limit` messages, oldest first."""
        response = self.client.query(
            TableName=self.table, KeyConditionExpression="PK = :pk AND begins_with(SK, :p)", ScanIndexForward=False,
            Limit=limit, ExpressionAttributeValues={":pk": _s(conversation.pk), ":p": _s(MESSAGE_PREFIX)})
        return [_message(i) for i in reversed(response.get("Items", []))]

    def message(self, conversation: Conversation, sent_ms: int, message_id: str) -> MessageRecord | None:
        item = self.client.get_item(TableName=self.table, Key={
            "PK": _s(conversation.pk), "SK": _s(f"{MESSAGE_PREFIX}{sent_ms:013d}#{message_id}")}).get("Item")
        return _message(item) if item else None

    def mark_read(self, conversation: Conversation, reader: Role, state: ConversationState, newest_ms: int | None,
                  polled_ms: int | None) -> None:
        """What `reader` has now seen: every author's count as read, the newest message's time, and for the
        recipient's page when it polled. Counts and times only move forward (a slower, older read loses)."""
        sets: list[str] = []
        values: dict[str, Any] = {}
        conditions: list[str] = []
        for author, count in state.sent.items():
            if author is reader or state.read_counts.get((reader, author), 0) >= count:
                continue
            name = f"r_{reader.value}_{author.value}"
            sets.append(f"{name} = :{name}")
            values[f":{name}"] = _n(count)
            conditions.append(f"(attribute_not_exists({name}) OR {name} < :{name})")
        if newest_ms is not None and state.read_ms.get(reader, -1) < newest_ms:
            sets.append(f"read_ms_{reader.value} = :read_ms")
            values[":read_ms"] = _n(newest_ms)
        if polled_ms is not None:
            sets.append("polled_ms = :polled")
            values[":polled"] = _n(polled_ms)
        if not sets:
            return
        kwargs: dict[str, Any] = {"ConditionExpression": " AND ".join(conditions)} if conditions else {}
        # A newer read of the same reader may get there first: it recorded at least as much.
        with contextlib.suppress(self.client.exceptions.ConditionalCheckFailedException):
            self.client.update_item(TableName=self.table, Key={"PK": _s(conversation.pk), "SK": _s(STATE_SK)},
                                    UpdateExpression="SET " + ", ".join(sets), ExpressionAttributeValues=values,
                                    **kwargs)


def event_wire_item(pk: str, merchant_id: str, event_id: str, at: datetime, source: str, data: dict[str, Any],
                    *, shipment_id: str | None, driver_id: str | None) -> dict[str, Any]:
    """A `message_sent` event in the table's wire format: a shipment's in its timeline (the EventItem shape)."""
    stamp = iso(at)
    item: dict[str, Any] = {
        "PK": _s(pk), "SK": _s(f"EVENT#{stamp}#{event_id}"), "merchant_id": _s(merchant_id),
        "event_id": _s(event_id), "type": _s("message_sent"), "source": _s(source),
        # pynamodb's UTCDateTimeAttribute format, so the timeline's EventItem reads it
        "occurred_at": _s(at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+0000")),
        "recorded_at": _s(at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+0000"))}
    if shipment_id:
        item["shipment_id"] = _s(shipment_id)
    item["data"] = {"M": {k: _s(str(v)) for k, v in data.items() if v is not None}}
    if driver_id:
        item["driver_id"] = _s(driver_id)
    return item
