"""Messaging's pure rules: who may write to which conversation and until when, what a message's text may be,
rate limits, read receipts and unread counts, retention, the page-open test and inbound SMS keywords."""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from chalicelib.core import errors

MAX_TEXT_CHARS = 500
RATE_WINDOW_S = 60
RATE_LIMIT_PER_WINDOW = 10  # per sender and conversation a minute: a person typing, never a script
BROADCAST_RATE_LIMIT = 5  # broadcasts a merchant may send a minute
RETENTION_DAYS = 30  # after the shipment is final
# A message of a still-active shipment cannot know when it will be final; shipments rarely stay active a month,
# so it keeps RETENTION_DAYS past that bound.
ACTIVE_BOUND_DAYS = 30
CLOSE_AFTER_FINAL = timedelta(hours=2)  # the recipient may still say "thanks, found it" a while after delivery
PAGE_OPEN_S = 45  # a tracking page polled this recently is open: its reader sees new messages without an SMS
POLL_RECORD_S = 15  # how often a page's polls are recorded (well inside PAGE_OPEN_S)
MAX_PAGE = 100


class Role(StrEnum):
    RECIPIENT = "recipient"
    DRIVER = "driver"
    DISPATCH = "dispatch"


SHIPMENT_ROLES = (Role.RECIPIENT, Role.DRIVER, Role.DISPATCH)
DRIVER_ROLES = (Role.DRIVER, Role.DISPATCH)

# Quick replies on the tracking page and canned replies in the driver app: keys into the page catalogues
# (chalicelib/web/locales), sent as the text of the sender's language.
QUICK_REPLIES = ("im_home", "leave_at_door", "call_on_arrival")
CANNED_REPLIES = ("five_minutes_away", "at_the_door", "cant_find_entrance")
STOP_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "OPTOUT", "STOPP"})
HELP_WORDS = frozenset({"HELP", "INFO", "HILFE"})


class Keyword(StrEnum):
    STOP = "stop"
    HELP = "help"


def clean_message_text(text: object, field_name: str = "text") -> str:
    """The text as stored: NFC, control characters out (newlines kept), trimmed, 1 to MAX_TEXT_CHARS characters.

    It is never HTML: every page writes it as text (escaped), and no page turns a URL in it into a link."""
    if not isinstance(text, str):
        raise errors.validation_failed([errors.FieldProblem(field_name, "must be text")])
    value = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    kept = "".join(c for c in value if c == "\n" or unicodedata.category(c)[0] != "C").strip()
    if not kept:
        raise errors.validation_failed([errors.FieldProblem(field_name, "must not be empty")])
    if len(kept) > MAX_TEXT_CHARS:
        raise errors.validation_failed([errors.FieldProblem(field_name, f"at most {MAX_TEXT_CHARS} characters")])
    return kept


def closes_at(final_at: datetime | None) -> datetime | None:
    """When a shipment's conversation stops taking messages: a set time after it became final."""
    return None if final_at is None else final_at.astimezone(UTC) + CLOSE_AFTER_FINAL


def is_open(final_at: datetime | None, now: datetime) -> bool:
    closing = closes_at(final_at)
    return closing is None or now < closing


def closed_error() -> errors.DomainError:
    return errors.conflict("The conversation is closed: the shipment was completed.", "text",
                           "the conversation is closed", code="conversation_closed")


def expires_at_s(final_at: datetime | None, now: datetime) -> int:
    """The message's TTL (epoch seconds): RETENTION_DAYS after the shipment is final, or after the active bound."""
    base = final_at if final_at is not None else now + timedelta(days=ACTIVE_BOUND_DAYS)
    return int((base + timedelta(days=RETENTION_DAYS)).timestamp())


def rate_bucket(now: datetime) -> int:
    return int(now.timestamp()) // RATE_WINDOW_S


def rate_limited_error() -> errors.DomainError:
    return errors.DomainError(errors.ErrorKind.RATE_LIMITED, "rate_limited",
                              "Too many messages; wait a minute before sending more.",
                              [errors.FieldProblem("text", f"at most {RATE_LIMIT_PER_WINDOW} a minute")],
                              retry_after_s=RATE_WINDOW_S)


@dataclass(frozen=True)
class ConversationState:
    """Counts of messages by role and what each role has read (by count, and the newest time it saw)."""

    sent: Mapping[Role, int]
    read_counts: Mapping[tuple[Role, Role], int]  # (reader, author) -> messages of author read by reader
    read_ms: Mapping[Role, int]  # reader -> sent time of the newest message it has seen
    recipient_polled_ms: int | None = None


def unread(state: ConversationState, reader: Role) -> int:
    """Messages by the other roles that `reader` has not seen."""
    return sum(max(0, n - state.read_counts.get((reader, author), 0))
               for author, n in state.sent.items() if author is not reader)


def read_by(state: ConversationState, author: Role, sent_ms: int, roles: tuple[Role, ...]) -> list[Role]:
    """Who, of the roles of the conversation other than its author, has seen a message sent at `sent_ms`."""
    return [r for r in roles if r is not author and state.read_ms.get(r, -1) >= sent_ms]


def page_open(polled_ms: int | None, now_ms: int) -> bool:
    return polled_ms is not None and now_ms - polled_ms <= PAGE_OPEN_S * 1000


def sms_keyword(text: str) -> Keyword | None:
    """STOP / HELP (and their usual synonyms), as a whole message in any case."""
    word = "".join(c for c in text.strip().upper() if c.isalnum())
    if word in STOP_WORDS:
        return Keyword.STOP
    if word in HELP_WORDS:
        return Keyword.HELP
    return None


def sender_name(role: Role, driver_full_name: str | None) -> str:
    """What the other side sees as the sender: the driver's first name only, never a number or an email."""
    if role is Role.DRIVER:
        first = (driver_full_name or "").strip().split(" ")[0]
        return first[:40] or "Driver"
    return "Dispatch" if role is Role.DISPATCH else "Recipient"
