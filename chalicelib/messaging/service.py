"""Messaging's use cases: read and send in a shipment's conversation (recipient, driver, dispatch) or a driver's
dispatch thread, broadcast to the drivers on duty, unread counts for the driver app, the webhook body of a
message, and (from the stream) telling a recipient whose page is closed that the driver wrote.

Nobody is shown another party's number or email: a message carries its sender's role and display name only
(the driver's first name). Message text never reaches a log line or a timeline event."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from chalicelib.core import errors
from chalicelib.core.observability import MetricUnit, metrics
from chalicelib.core.security import new_id
from chalicelib.messaging.models import BroadcastOut, ConversationOut, DriverUnread, MessageOut, StopUnread
from chalicelib.messaging.rules import (
    BROADCAST_RATE_LIMIT,
    MAX_PAGE,
    POLL_RECORD_S,
    RATE_LIMIT_PER_WINDOW,
    RATE_WINDOW_S,
    ConversationState,
    Role,
    clean_message_text,
    closed_error,
    closes_at,
    expires_at_s,
    is_open,
    rate_bucket,
    rate_limited_error,
    read_by,
    sender_name,
    unread,
)
from chalicelib.messaging.store import Conversation, MessageRecord, MessageStore, event_wire_item

if TYPE_CHECKING:
    from chalicelib.storage.repository import Repository
    from chalicelib.storage.tables import ShipmentItem


def store(repo: Repository) -> MessageStore:
    return MessageStore(repo.client)


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _out(message: MessageRecord, state: ConversationState, roles: tuple[Role, ...]) -> MessageOut:
    return MessageOut(id=message.message_id, sender_role=message.sender_role.value, sender_name=message.sender_name,
                      text=message.text, sent_at=message.sent_at,
                      read_by=[r.value for r in read_by(state, message.sender_role, message.sent_ms, roles)])


def read(repo: Repository, conversation: Conversation, reader: Role, now: datetime, *,
         final_at: datetime | None = None, limit: int = 50, page_poll: bool = False) -> ConversationOut:
    """The latest messages, and from now on they count as read by `reader` (read receipts, unread counts)."""
    s = store(repo)
    state = s.state(conversation)
    messages = s.messages(conversation, min(limit, MAX_PAGE))
    newest_other = max((m.sent_ms for m in messages if m.sender_role is not reader), default=None)
    # The page polls every 2 s; recording it every 15 s is enough for "open" (PAGE_OPEN_S) at an eighth the writes.
    polled = _ms(now) if page_poll and (state.recipient_polled_ms or 0) < _ms(now) - POLL_RECORD_S * 1000 else None
    s.mark_read(conversation, reader, state, newest_other, polled)
    return ConversationOut(
        conversation="shipment" if conversation.shipment_id else "driver", shipment_id=conversation.shipment_id,
        driver_id=conversation.driver_id, open=is_open(final_at, now), closes_at=closes_at(final_at),
        unread=unread(state, reader), messages=[_out(m, state, conversation.roles) for m in messages])


def send(repo: Repository, conversation: Conversation, role: Role, text: object, now: datetime, *,
         display_name: str, final_at: datetime | None = None, driver_id: str | None = None,
         broadcast_id: str | None = None, once_key: str | None = None) -> MessageOut:
    """One message: the text checked, the sender's minute counted (429 past the limit), then the message, its
    count and its event in one transaction. 409 once the conversation is closed."""
    clean = clean_message_text(text)
    if not is_open(final_at, now):
        raise closed_error()
    s = store(repo)
    if broadcast_id is None and not s.take_rate(conversation, f"{conversation.name}#{role.value}", rate_bucket(now),
                                                RATE_LIMIT_PER_WINDOW, int(now.timestamp()) + 2 * RATE_WINDOW_S):
        metrics.add_metric(name="MessagesRateLimited", unit=MetricUnit.Count, value=1)
        raise rate_limited_error()
    message = MessageRecord(new_id("msg"), role, display_name, clean, now.astimezone(UTC),
                            expires_at_s(final_at, now), broadcast_id)
    data = {"message_id": message.message_id, "sent_ms": message.sent_ms, "sender_role": role.value,
            "conversation": "shipment" if conversation.shipment_id else "driver",
            "driver_id": driver_id or conversation.driver_id, "broadcast_id": broadcast_id}
    pk = f"SHIPMENT#{conversation.shipment_id}" if conversation.shipment_id else conversation.pk
    source = "merchant" if role is Role.DISPATCH else role.value  # the timeline's sources: dispatch is the merchant
    event = event_wire_item(pk, conversation.merchant_id, new_id("evt"), now, source, data,
                            shipment_id=conversation.shipment_id, driver_id=driver_id or conversation.driver_id)
    if not s.send(conversation, message, event, once_key=once_key):
        raise errors.conflict("This message was stored already.", code="duplicate_message")
    metrics.add_metric(name="MessagesSent", unit=MetricUnit.Count, value=1)
    return _out(message, ConversationState({}, {}, {}), conversation.roles)


# --- the merchant (dispatch) -------------------------------------------------------------------------------


def _shipment(repo: Repository, merchant_id: str, shipment_id: str) -> ShipmentItem:
    shipment = repo.get_shipment(merchant_id, shipment_id)
    if shipment is None:
        raise errors.not_found("Shipment")
    return shipment


def _driver_name(repo: Repository, merchant_id: str, driver_id: str | None) -> str | None:
    if not driver_id:
        return None
    driver = repo.get_driver(merchant_id, driver_id)
    return str(driver.name) if driver is not None else None


def shipment_messages(repo: Repository, merchant_id: str, shipment_id: str, limit: int,
                      now: datetime) -> ConversationOut:
    shipment = _shipment(repo, merchant_id, shipment_id)
    return read(repo, Conversation(merchant_id, shipment_id=shipment_id), Role.DISPATCH, now,
                final_at=shipment.final_at, limit=limit)


def post_shipment_message(repo: Repository, merchant_id: str, shipment_id: str, text: str,
                          now: datetime) -> MessageOut:
    shipment = _shipment(repo, merchant_id, shipment_id)
    return send(repo, Conversation(merchant_id, shipment_id=shipment_id), Role.DISPATCH, text, now,
                display_name=sender_name(Role.DISPATCH, None), final_at=shipment.final_at,
                driver_id=shipment.driver_id)


def _require_driver(repo: Repository, merchant_id: str, driver_id: str) -> str:
    from chalicelib.fleet.service import require_driver

    return str(require_driver(repo, merchant_id, driver_id).name)


def driver_messages(repo: Repository, merchant_id: str, driver_id: str, limit: int, now: datetime) -> ConversationOut:
    _require_driver(repo, merchant_id, driver_id)
    return read(repo, Conversation(merchant_id, driver_id=driver_id), Role.DISPATCH, now, limit=limit)


def post_driver_message(repo: Repository, merchant_id: str, driver_id: str, text: str, now: datetime) -> MessageOut:
    _require_driver(repo, merchant_id, driver_id)
    return send(repo, Conversation(merchant_id, driver_id=driver_id), Role.DISPATCH, text, now,
                display_name=sender_name(Role.DISPATCH, None))


def broadcast(repo: Repository, merchant_id: str, text: str, now: datetime) -> BroadcastOut:
    """The same message in the dispatch thread of every driver on duty (presence), under one broadcast id."""
    from chalicelib.fleet.presence import list_presence

    clean = clean_message_text(text)
    s = store(repo)
    if not s.take_rate(Conversation(merchant_id, driver_id="*"), "broadcast", rate_bucket(now), BROADCAST_RATE_LIMIT,
                       int(now.timestamp()) + 2 * RATE_WINDOW_S):
        raise rate_limited_error()
    broadcast_id = new_id("bcs")
    on_duty = sorted(p.driver_id for p in list_presence(repo, merchant_id) if p.presence.on_duty and p.driver_id)
    for driver_id in on_duty:
        send(repo, Conversation(merchant_id, driver_id=driver_id), Role.DISPATCH, clean, now,
             display_name=sender_name(Role.DISPATCH, None), broadcast_id=broadcast_id)
    metrics.add_metric(name="MessageBroadcasts", unit=MetricUnit.Count, value=1)
    return BroadcastOut(broadcast_id=broadcast_id, driver_ids=on_duty)


# --- the driver ----------------------------------------------------------------------------------------------


def _drivers_shipment(repo: Repository, merchant_id: str, driver_id: str, shipment_id: str) -> ShipmentItem:
    """A shipment the driver is assigned to; any other answers the same 404."""
    shipment = repo.get_shipment(merchant_id, shipment_id)
    if shipment is None or shipment.driver_id != driver_id:
        raise errors.not_found("Shipment")
    return shipment


def driver_dispatch_thread(repo: Repository, merchant_id: str, driver_id: str, limit: int,
                           now: datetime) -> ConversationOut:
    return read(repo, Conversation(merchant_id, driver_id=driver_id), Role.DRIVER, now, limit=limit)


def driver_post_dispatch(repo: Repository, merchant_id: str, driver_id: str, text: str, now: datetime) -> MessageOut:
    name = _driver_name(repo, merchant_id, driver_id)
    return send(repo, Conversation(merchant_id, driver_id=driver_id), Role.DRIVER, text, now,
                display_name=sender_name(Role.DRIVER, name))


def driver_shipment_thread(repo: Repository, merchant_id: str, driver_id: str, shipment_id: str, limit: int,
                           now: datetime) -> ConversationOut:
    shipment = _drivers_shipment(repo, merchant_id, driver_id, shipment_id)
    return read(repo, Conversation(merchant_id, shipment_id=shipment_id), Role.DRIVER, now,
                final_at=shipment.final_at, limit=limit)


def driver_post_shipment(repo: Repository, merchant_id: str, driver_id: str, shipment_id: str, text: str,
                         now: datetime) -> MessageOut:
    shipment = _drivers_shipment(repo, merchant_id, driver_id, shipment_id)
    name = _driver_name(repo, merchant_id, driver_id)
    return send(repo, Conversation(merchant_id, shipment_id=shipment_id), Role.DRIVER, text, now,
                display_name=sender_name(Role.DRIVER, name), final_at=shipment.final_at, driver_id=driver_id)


def driver_unread(repo: Repository, merchant_id: str, driver_id: str, now: datetime) -> DriverUnread:
    """Unread counts of the dispatch thread and of each stop of today's route: one BatchGetItem of their states."""
    from chalicelib.driver_app.service import driver_route

    stops = [stop.shipment_id for stop in driver_route(repo, merchant_id, driver_id, now).stops]
    threads = [Conversation(merchant_id, driver_id=driver_id)] + [Conversation(merchant_id, shipment_id=sid)
                                                                   for sid in stops]
    states = store(repo).states(threads)
    empty = ConversationState({}, {}, {})
    return DriverUnread(dispatch=unread(states.get(threads[0].pk, empty), Role.DRIVER),
                        stops=[StopUnread(shipment_id=c.shipment_id or "",
                                          unread=unread(states.get(c.pk, empty), Role.DRIVER)) for c in threads[1:]])


# --- the recipient (behind the tracking token) ---------------------------------------------------------------


def recipient_thread(repo: Repository, shipment: ShipmentItem, now: datetime, *, page_poll: bool = True
                     ) -> ConversationOut:
    return read(repo, Conversation(shipment.merchant_id, shipment_id=shipment.shipment_id), Role.RECIPIENT, now,
                final_at=shipment.final_at, page_poll=page_poll)


def recipient_send(repo: Repository, shipment: ShipmentItem, text: str, now: datetime, *,
                   once_key: str | None = None) -> MessageOut:
    return send(repo, Conversation(shipment.merchant_id, shipment_id=shipment.shipment_id), Role.RECIPIENT, text,
                now, display_name=sender_name(Role.RECIPIENT, None), final_at=shipment.final_at,
                driver_id=shipment.driver_id, once_key=once_key)


# --- the webhook sender -------------------------------------------------------------------------------------


def webhook_data(repo: Repository, merchant_id: str, shipment_id: str | None, details: dict[str, Any]
                 ) -> dict[str, Any]:
    """A `message_sent` event's details with the message's text (for the merchant's own systems only)."""
    conversation = Conversation(merchant_id, shipment_id=shipment_id or None,
                                driver_id=None if shipment_id else str(details.get("driver_id") or ""))
    message_id, sent_ms = str(details.get("message_id") or ""), str(details.get("sent_ms") or "")
    found = store(repo).message(conversation, int(sent_ms), message_id) if sent_ms.isdigit() and message_id else None
    return {**details, "text": found.text if found else None,
            "sender_name": found.sender_name if found else None}


# --- the stream: the recipient is told when the driver wrote and the page is not open --------------------------


def on_message_sent(repo: Repository, image: dict[str, Any], now: datetime | None = None) -> list[str]:
    """A driver's message in a shipment's conversation (its `message_sent` event from the stream): when the
    recipient's page has not polled lately and the recipient has unread driver messages, notify them once per
    run of unread messages (the run is named by how many driver messages they had read)."""
    from chalicelib.messaging.rules import page_open
    from chalicelib.notifications.service import notify_recipient_message

    now = now or datetime.now(UTC)
    merchant_id, shipment_id = str(image.get("merchant_id") or ""), str(image.get("shipment_id") or "")
    if image.get("source") != Role.DRIVER.value or not (merchant_id and shipment_id):
        return []
    state = store(repo).state(Conversation(merchant_id, shipment_id=shipment_id))
    read_count = state.read_counts.get((Role.RECIPIENT, Role.DRIVER), 0)
    if page_open(state.recipient_polled_ms, _ms(now)) or state.sent.get(Role.DRIVER, 0) <= read_count:
        return []  # the page shows it now, or the recipient has read it already
    shipment = repo.get_shipment(merchant_id, shipment_id)
    name = sender_name(Role.DRIVER, _driver_name(repo, merchant_id, shipment.driver_id if shipment else None))
    return notify_recipient_message(repo, merchant_id, shipment_id, str(read_count), name, now)


# --- inbound SMS (AWS End User Messaging SMS -> SNS -> inbound_sms) ---------------------------------------------

HELP_TEXT = ("{merchant}: replies to this number go to your driver. Reply STOP to stop texts. "
             "Open your tracking link to read the conversation.")


def set_sms_number(repo: Repository, merchant_id: str, number: str) -> str:
    if not store(repo).claim_sms_number(number, merchant_id):
        raise errors.conflict("Another merchant uses this number.", "number", "in use by another merchant")
    return number


def inbound_sms(repo: Repository, message: dict[str, Any], now: datetime | None = None) -> str:
    """One inbound SMS (End User Messaging's JSON: originationNumber, destinationNumber, messageBody): STOP
    becomes an opt-out, HELP is answered, anything else is the recipient's message in the conversation of
    their latest shipment that is still open (found by the merchant's contact index). Returns what it did
    (for the log: never the text or the number)."""
    from chalicelib.messaging.rules import Keyword, sms_keyword
    from chalicelib.notifications.contacts import normalize_phone
    from chalicelib.notifications.service import record_sms_opt_out, send_sms_reply

    now = now or datetime.now(UTC)
    try:
        phone = normalize_phone(str(message.get("originationNumber") or ""))
        to = normalize_phone(str(message.get("destinationNumber") or ""))
    except ValueError:
        return "ignored:bad_number"
    merchant_id = store(repo).merchant_of_sms_number(to)
    if merchant_id is None:
        return "ignored:unknown_number"
    text = str(message.get("messageBody") or "")
    keyword = sms_keyword(text)
    if keyword is Keyword.STOP:
        record_sms_opt_out(repo, merchant_id, phone, now)
        metrics.add_metric(name="InboundSmsOptOuts", unit=MetricUnit.Count, value=1)
        return "opted_out"
    merchant = repo.get_merchant(merchant_id)
    if keyword is Keyword.HELP:
        send_sms_reply(repo, phone, HELP_TEXT.format(merchant=merchant.name if merchant else "Doorstep"))
        return "help"
    ids = repo.shipment_ids_of_contact(merchant_id, phone, 20)  # newest first
    shipments = repo.get_shipments(merchant_id, ids) if ids else {}
    for shipment_id in ids:
        shipment = shipments.get(shipment_id)
        if shipment is not None and is_open(shipment.final_at, now):
            # SNS may deliver the same inbound message twice: its id is claimed in the message's transaction.
            inbound_id = str(message.get("inboundMessageId") or "") or None
            try:
                recipient_send(repo, shipment, text, now, once_key=f"SMSIN#{inbound_id}" if inbound_id else None)
            except errors.DomainError as exc:
                return f"refused:{exc.code}"  # empty, too long, rate limited, a duplicate: nothing to store
            metrics.add_metric(name="InboundSmsMessages", unit=MetricUnit.Count, value=1)
            return "delivered"
    return "ignored:no_open_conversation"
