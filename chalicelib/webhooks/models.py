"""Edge models of the webhook endpoint, its delivery log and replays."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
)

from chalicelib.core.types import Email, Instant, Model_, QueryInt, Strict_

# The timeline event types a webhook can carry (the `type` of /v1/shipments/{id}/timeline events), and a
# driver's presence events (`data.driver_id`, `data.details.reason`; no shipment) and behaviour events
# (driver reports: `data.details` kind, value, threshold, lat, lng).
WebhookEventType = Literal[
    "created", "assigned", "unassigned", "out_for_delivery", "approaching", "arrived", "dwell", "departed",
    "delayed", "delivered", "failed", "returned", "cancelled", "rescheduled", "instructions_updated", "rated",
    "tracking_link_revoked", "notification_failed", "updated", "route_changed", "route_optimized", "reassigned",
    "route_completed", "exception_opened", "exception_acknowledged", "exception_resolved", "zone_enter", "zone_exit",
    "zone_dwell", "driver_offline", "driver_online", "driver_off_duty", "driver_speeding", "driver_harsh_braking",
    "driver_harsh_acceleration", "driver_long_idle", "message_sent",
]


WebhookDeliveryState = Literal["pending", "delivered", "failed", "held"]


MAX_WEBHOOK_REPLAY_DAYS = 7


class WebhookEndpointIn(Strict_):
    """The merchant's webhook endpoint (PUT replaces url, events and alert_email; the secret stays)."""

    url: Annotated[str, Field(min_length=1, max_length=2048)] = Field(
        description="https:// URL that receives the POSTs (public addresses only)")
    events: Annotated[list[WebhookEventType], Field(min_length=1, max_length=40)] | None = Field(
        default=None, description="Event types to send; omitted or null: every type")
    alert_email: Email | None = Field(
        default=None, description="Who is emailed when the endpoint is paused; default: branding.support_email")


class WebhookEndpointOut(Model_):
    id: str
    url: str
    events: list[str] | None = Field(description="null: every event type")
    alert_email: str | None
    alerts_to: str | None = Field(description="Who a pause is emailed to now: alert_email, else branding.support_email")
    secret_prefix: str = Field(description="The start of the current signing secret, to recognise it")
    secret: str | None = Field(default=None, description="The signing secret: only in the answer that created or "
                                                         "rotated it, never again")
    previous_secret_expires_at: datetime | None = Field(
        default=None, description="After a rotation the previous secret also signs until this time")
    paused: bool
    paused_at: datetime | None = None
    consecutive_failures: int
    failing_since: datetime | None = None
    created_at: datetime
    updated_at: datetime


class WebhookResumeResult(Model_):
    endpoint: WebhookEndpointOut
    requeued: int = Field(description="Held deliveries queued to be sent within a minute")
    more_held: bool = Field(description="More deliveries are still held: call resume again")


class WebhookAttempt(Model_):
    at: datetime
    status_code: int | None = Field(description="null: no HTTP answer (timeout, refused, address not allowed)")
    latency_ms: int
    error: str | None = None


class WebhookDeliveryOut(Model_):
    id: str
    event_id: str = Field(description="Sent as Doorstep-Event-Id; the same on every retry and replay")
    event_type: str
    shipment_id: str
    state: WebhookDeliveryState
    created_at: datetime
    attempts: int = Field(description="Attempts since it was created or last replayed")
    last_status_code: int | None = None
    last_error: str | None = None
    last_attempt_at: datetime | None = None
    next_attempt_at: datetime | None = Field(default=None, description="While pending")
    delivered_at: datetime | None = None
    replays: int = 0


class WebhookDeliveryDetail(WebhookDeliveryOut):
    attempt_log: list[WebhookAttempt] = Field(description="The latest attempts, oldest first")
    payload: dict[str, Any] = Field(description="The JSON body every attempt sends")


class WebhookDeliveryPage(Model_):
    items: list[WebhookDeliveryOut]
    next_cursor: str | None = None


def _after_from(value: datetime | None, info: ValidationInfo) -> datetime | None:
    start = info.data.get("from_")
    if value is not None and start is not None and value < start:
        raise ValueError("must not be before from")
    return value


class WebhookDeliveryQuery(Model_):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    from_: Instant | None = Field(default=None, alias="from", description="Created at or after (RFC 3339)")
    to: Instant | None = Field(default=None, description="Created at or before (RFC 3339)")
    state: WebhookDeliveryState | None = None
    limit: Annotated[QueryInt, Field(ge=1, le=100)] = 50
    cursor: Annotated[str, Field(max_length=2000)] | None = None

    _to_after_from = field_validator("to")(_after_from)


class WebhookReplayRange(Strict_):
    """Send again every delivery created in [from, to] (at most 7 days and 1000 deliveries)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    from_: Instant = Field(alias="from", description="RFC 3339")
    to: Instant = Field(description="RFC 3339; at most 7 days after from")

    @field_validator("to")
    @classmethod
    def _bounded(cls, value: datetime, info: ValidationInfo) -> datetime:
        start = info.data.get("from_")
        if start is not None and not start <= value <= start + timedelta(days=MAX_WEBHOOK_REPLAY_DAYS):
            raise ValueError(f"must be after from and at most {MAX_WEBHOOK_REPLAY_DAYS} days later")
        return value


class WebhookReplayResult(Model_):
    replayed: int = Field(description="Deliveries queued to be sent again within a minute")
