"""Edge models of conversations and messages."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import ConfigDict, Field

from chalicelib.core.types import E164Phone, Model_, QueryInt, Strict_

RoleName = Literal["recipient", "driver", "dispatch"]


class MessageIn(Strict_):
    """A text message: plain text, 1 to 500 characters after trimming; never HTML (shown as typed, links inert)."""

    text: Annotated[str, Field(min_length=1, max_length=2000)] = Field(description="1 to 500 characters of text")


class MessagesQuery(Model_):
    model_config = ConfigDict(extra="forbid")
    limit: Annotated[QueryInt, Field(ge=1, le=100)] = 50


class MessageOut(Model_):
    id: str
    sender_role: RoleName
    sender_name: str = Field(description="The driver's first name, or Dispatch / Recipient: never a number or email")
    text: str
    sent_at: datetime
    read_by: list[RoleName] = Field(default_factory=list, description="The other parties that have seen it")


class ConversationOut(Model_):
    conversation: Literal["shipment", "driver"]
    shipment_id: str | None = None
    driver_id: str | None = None
    open: bool = Field(description="False once the shipment is final and the closing time has passed")
    closes_at: datetime | None = None
    unread: int = Field(description="Messages of the other parties the caller had not seen before this read")
    messages: list[MessageOut] = Field(description="The latest messages, oldest first")


class BroadcastOut(Model_):
    broadcast_id: str
    driver_ids: list[str] = Field(description="The drivers on duty it was sent to")


class StopUnread(Model_):
    shipment_id: str
    unread: int


class DriverUnread(Model_):
    dispatch: int = Field(description="Unread messages from dispatch")
    stops: list[StopUnread] = Field(description="Unread messages per stop of today's route")


class SmsNumberIn(Strict_):
    """The merchant's two-way number in AWS End User Messaging SMS: replies to it reach the conversations."""

    number: E164Phone


class SmsNumberOut(Model_):
    number: str
