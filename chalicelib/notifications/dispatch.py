"""Notification dispatch: a lifecycle event on a shipment's timeline becomes at most one message per channel.

The stream function calls `notify_for_event` for each new timeline item. Per
channel the domain decides (policy, contact, opt-out, freshness, quiet hours);
a message to send is claimed on the ledger first (a conditional write keyed by
shipment, kind, channel and occurrence), sent, then marked sent. A transient
provider error releases the claim and raises `RetryLater`, so the stream
retries the record (and, after its retries, parks it on the dead-letter
queue); a permanent one is recorded on the ledger and the timeline. Nothing is
dropped without a ledger record and a log line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Any

from chalicelib.core.config import Settings
from chalicelib.core.links import tracking_url
from chalicelib.core.observability import MetricUnit, logger, metrics
from chalicelib.core.security import new_id
from chalicelib.core.times import now_ms
from chalicelib.fleet.models import MerchantSettings
from chalicelib.geo.day_window import before_window, shown_window, zone_label
from chalicelib.notifications.contacts import contact_key
from chalicelib.notifications.ledger import Ledger
from chalicelib.notifications.preferences import (
    PreferenceSettings,
    blocked,
    delivery_key,
    list_unsubscribe_headers,
    sms_opt_out_hint,
    unsubscribe_url,
)
from chalicelib.notifications.rules import (
    NOTIFY_MAX_ATTEMPTS,
    NOTIFY_RETRY_BASE_S,
    NOTIFY_RETRY_CAP_S,
    Action,
    Channel,
    Contacts,
    DropReason,
    ErrorClass,
    LedgerState,
    NotificationPolicy,
    NotifyEvent,
    NotifyKind,
    backoff_delay,
    decide,
    ledger_key,
    occurrence_for,
)
from chalicelib.notifications.senders import Notifier, SendFailed
from chalicelib.notifications.templates import (
    RenderedEmail,
    RenderedSms,
    TemplateSet,
    delivery_pin_note,
    format_day,
    format_early,
    format_later_today,
    format_window,
    message_values,
    render,
)
from chalicelib.shipments.failures import failure_reason_text
from chalicelib.shipments.lifecycle import ShipmentStatus
from chalicelib.storage.repository import Repository
from chalicelib.storage.tables import ShipmentItem, as_dict, event_item
from chalicelib.web.branding import Branding

EVENT_KINDS: dict[str, NotifyKind] = {
    "day_before": NotifyKind.DAY_BEFORE,  # not a timeline event: the scheduled reminder raises it
    "out_for_delivery": NotifyKind.OUT_FOR_DELIVERY,
    "approaching": NotifyKind.APPROACHING,
    "delivered": NotifyKind.DELIVERED,
    "failed": NotifyKind.FAILED,
    "delayed": NotifyKind.DELAYED,
    "rescheduled": NotifyKind.RESCHEDULED,
    "returned": NotifyKind.RETURNED,
    "cancelled": NotifyKind.CANCELLED,
}
# What a deferred message keeps of its event, to be decided again when it comes due.
_KEPT = ("type", "merchant_id", "shipment_id", "occurred_at", "data")
# A transient failure is retried by the stream at once; the scheduled release picks it up after this if the
# stream has given up on the record (nothing waits on the dead-letter queue alone).
RELEASE_RETRY_AFTER_S = 120
# Drops that are the normal case (the merchant did not ask for it, no address): logged, no ledger item.
_QUIET_DROPS = (DropReason.DISABLED, DropReason.NO_CONTACT)


class RetryLater(Exception):
    """A provider failed transiently: the stream record should be retried (the ledger claim was released)."""


@dataclass(frozen=True, slots=True)
class Outcome:
    channel: str
    result: str  # sent | dropped:<reason> | deferred | skipped (already handled) | failed:<code>


@dataclass(frozen=True, slots=True)
class MerchantLook:
    branding: Branding
    sender: str | None  # the verified SES identity to send from; None: email cannot be sent
    time_zone: str
    locale: str


@lru_cache(maxsize=256)
def load_settings(stored_json: str | None) -> tuple[NotificationPolicy, TemplateSet]:
    """A merchant's stored notification policy and templates (the defaults when none); cached by content."""
    stored = json.loads(stored_json) if stored_json else {}
    policy = NotificationPolicy.from_dict(stored["policy"]) if stored.get("policy") else NotificationPolicy()
    templates = TemplateSet.from_dict(stored["templates"]) if stored.get("templates") else TemplateSet()
    return policy, templates


@lru_cache(maxsize=256)
def load_preferences(stored_json: str | None) -> PreferenceSettings:
    """The merchant's recipient-preference settings (critical kinds, SMS hint); cached by content."""
    stored = json.loads(stored_json) if stored_json else {}
    return PreferenceSettings.from_dict(stored.get("preferences"))


def merchant_look(settings: MerchantSettings, merchant_name: str, sender: str | None) -> MerchantLook:
    """The merchant's branding as messages show it (the tracking page's settings serve both)."""
    return MerchantLook(Branding.of(settings.branding, merchant_name), sender, settings.time_zone, settings.locale)


def notify_for_event(repo: Repository, ledger: Ledger, notifier: Notifier, settings: Settings,
                     image: dict[str, Any], look: MerchantLook, now: datetime | None = None, *,
                     policy: NotificationPolicy | None = None, templates: TemplateSet | None = None,
                     due_at: datetime | None = None, channel_only: str | None = None,
                     replay: bool = False, preferences: PreferenceSettings | None = None) -> list[Outcome]:
    """The messages of one event. A released deferred message comes with `due_at` (freshness counts from
    the end of its wait, not from when the event happened) and `channel_only`, the channel it was for.
    `replay` (an operator's) may also claim a message that failed for good; it is due now."""
    kind = EVENT_KINDS.get(str(image.get("type")))
    if kind is None:
        return []
    now = now or datetime.now(UTC)
    merchant_id, shipment_id = str(image["merchant_id"]), str(image["shipment_id"])
    shipment = repo.get_shipment(merchant_id, shipment_id)
    if shipment is None:
        return []
    recipient = as_dict(shipment.recipient)
    contacts = Contacts(recipient.get("phone"), recipient.get("email"))
    zone = str(recipient.get("time_zone") or look.time_zone)
    occurred = _when(image.get("occurred_at"), now)
    keys = [contact_key(channel, address) for channel, address in
            ((Channel.SMS, contacts.phone), (Channel.EMAIL, contacts.email)) if address]
    # The merchant-wide and this delivery's opt-outs in one read; a recipient's own spares critical kinds.
    found = ledger.opt_outs(merchant_id, keys + [delivery_key(k, shipment_id) for k in keys])
    opted_out = blocked(kind, keys, shipment_id, found, preferences or PreferenceSettings())
    if replay:
        due_at = now
    event = NotifyEvent(kind, shipment_id, occurred, due_at=due_at, status=ShipmentStatus(shipment.status))
    kept = {name: image[name] for name in _KEPT if image.get(name) is not None}  # to decide again when due
    decisions = decide(event, policy or NotificationPolicy(), contacts, opted_out, now, zone)
    occurrence = occurrence_for(kind, date.fromisoformat(shipment.delivery_date))
    outcomes: list[Outcome] = []
    etas: list[tuple[int, int, int, int] | None] = []
    retry = False
    for decision in decisions:
        if channel_only is not None and decision.channel.value != channel_only:
            continue
        key = ledger_key(shipment_id, kind, decision.channel, occurrence)
        channel = decision.channel.value
        if decision.action is Action.DROP:
            reason = decision.reason.value if decision.reason else "dropped"
            if decision.reason not in _QUIET_DROPS or due_at is not None:  # a released item must leave the index
                ledger.settle(shipment_id, key, LedgerState.DROPPED, now, detail=reason)
            logger.info("notification dropped", extra={"kind": kind.value, "channel": channel, "reason": reason})
            outcomes.append(Outcome(channel, f"dropped:{reason}"))
            continue
        if decision.action is Action.DEFER:
            # Waits on the ledger with not_before; a scheduled release re-decides it then.
            ledger.settle(shipment_id, key, LedgerState.DEFERRED, now, detail="quiet_hours", not_before=decision.until,
                          event=kept)
            outcomes.append(Outcome(channel, "deferred"))
            continue
        if channel == Channel.EMAIL.value and not look.sender:
            ledger.settle(shipment_id, key, LedgerState.DROPPED, now, detail="no_sender_identity")
            outcomes.append(Outcome(channel, "dropped:no_sender_identity"))
            continue
        claim_id = new_id("clm")
        attempts = ledger.claim(shipment_id, key, claim_id, now, replay=replay)
        if not attempts:
            outcomes.append(Outcome(channel, "skipped"))  # sent, dropped or being sent by another worker
            continue
        if not etas:  # read once, and only when a message is rendered
            etas.append(_shipment_eta(repo, shipment))
        eta = etas[0]
        unsubscribe = unsubscribe_url(settings.public_base_url, settings.token_secret, merchant_id, shipment_id,
                                      decision.channel) if decision.channel is Channel.EMAIL else None
        message = render(kind, channel, recipient.get("locale") or look.locale,
                         _values(repo, settings, shipment, look, zone, image, eta), look.branding,
                         templates or TemplateSet(), unsubscribe_url=unsubscribe)
        if isinstance(message, RenderedSms) and (preferences or PreferenceSettings()).sms_opt_out_hint:
            message = sms_opt_out_hint(message, recipient.get("locale") or look.locale)
        try:
            sent = _send(notifier, look, decision.address or "", message, unsubscribe)
        except SendFailed as exc:
            verdict = exc.verdict
            if verdict.retry and attempts < NOTIFY_MAX_ATTEMPTS:
                # The stream retries the record at once; the release schedule takes over with backoff.
                wait = max(RELEASE_RETRY_AFTER_S, backoff_delay(attempts, base=NOTIFY_RETRY_BASE_S,
                                                                cap=NOTIFY_RETRY_CAP_S))
                ledger.finish(shipment_id, key, claim_id, LedgerState.DEFERRED, now, detail=verdict.code,
                              not_before=now, event=kept, release_at=now + timedelta(seconds=wait))
                metrics.add_metric(name="NotificationsRetried", unit=MetricUnit.Count, value=1)
                outcomes.append(Outcome(channel, f"retry:{verdict.code}"))
                retry = True
                continue
            code = verdict.code if not verdict.retry else f"gave_up_after_{attempts}_attempts:{verdict.code}"
            ledger.finish(shipment_id, key, claim_id, LedgerState.FAILED_PERMANENT, now, detail=code,
                          event=kept)  # kept for `python -m infra.replay notifications`
            if verdict.cls is ErrorClass.UNREACHABLE and decision.address:
                ledger.record_opt_out(merchant_id, contact_key(decision.channel, decision.address), now, "provider")
            repo.put_event_once(event_item(merchant_id, shipment_id, f"notify-failed-{key}", "notification_failed",
                                           "system", now, now, data={"channel": channel, "kind": kind.value,
                                                                     "code": code}))
            metrics.add_metric(name="NotificationsFailed", unit=MetricUnit.Count, value=1)
            outcomes.append(Outcome(channel, f"failed:{code}"))
            continue
        ledger.finish(shipment_id, key, claim_id, LedgerState.SENT, now, detail=sent)
        metrics.add_metric(name="NotificationsSent", unit=MetricUnit.Count, value=1)
        logger.info("notification sent", extra={"kind": kind.value, "channel": channel, "shipment_id": shipment_id})
        outcomes.append(Outcome(channel, "sent"))
    if retry:
        raise RetryLater(f"{shipment_id} {kind.value}: a provider failed transiently")
    return outcomes


def _send(notifier: Notifier, look: MerchantLook, address: str, message: RenderedSms | RenderedEmail,
          unsubscribe: str | None = None) -> str:
    if isinstance(message, RenderedSms):
        return notifier.send_sms(address, message.text).provider_id
    sender = f"{look.branding.display_sender} <{look.sender}>" if look.branding.display_sender else str(look.sender)
    # Raw email, so the one-click unsubscribe headers (RFC 8058) reach the mailbox.
    return notifier.send_email(sender, address, message.subject, message.text, message.html,
                               reply_to=look.branding.support_email,
                               headers=list_unsubscribe_headers(unsubscribe) if unsubscribe else None).provider_id


def _shipment_eta(repo: Repository, shipment: ShipmentItem) -> tuple[int, int, int, int] | None:
    """(low, expected, high, computed at) epoch ms of the shipment's stop, from its route's ETA item."""
    if not shipment.route_id or shipment.stop_index is None:
        return None
    item = repo.route_eta(shipment.route_id)
    window = item.window(int(shipment.stop_index)) if item is not None else None
    return (*window, int(item.at_ms)) if item is not None and window is not None else None


def _values(repo: Repository, settings: Settings, shipment: ShipmentItem, look: MerchantLook, zone: str,
            image: dict[str, Any], eta: tuple[int, int, int, int] | None) -> dict[str, str]:
    from zoneinfo import ZoneInfo

    url = tracking_url(settings, shipment.shipment_id, int(shipment.token_version))
    tz = ZoneInfo(zone)
    locale = as_dict(shipment.recipient).get("locale") or look.locale
    window = None
    # The route's ETA item (the pipeline's one item per route), shown by the one rule (geo/day_window.py):
    # bounded, same local day or "later today", with the zone's abbreviation; else the promised window.
    shown = shown_window(eta[:3], eta[3], (shipment.window_start, shipment.window_end), tz, now_ms()) \
        if eta is not None else None
    if shown is not None and shown.kind == "later_today":
        window = format_later_today(locale)
    elif shown is not None:
        window = f"{format_window(shown.earliest, shown.latest, tz, locale)} {shown.zone_label}"
        if before_window(shown, shipment.window_start):
            window = format_early(window, locale)
    elif shipment.window_start is not None and shipment.window_end is not None:
        window = f"{format_window(shipment.window_start, shipment.window_end, tz, locale)} " \
                 f"{zone_label(shipment.window_start, tz)}"
    else:  # no ETA yet and no promised window: the day is still worth saying
        window = format_day(date.fromisoformat(shipment.delivery_date), locale)
    data = image.get("data") or {}
    reason = None
    if image.get("type") == "failed":
        reason = failure_reason_text(data.get("reason"), locale)
    elif image.get("type") == "returned":  # the reason of the attempt that reached the limit
        last = as_dict(shipment.last_failure) if shipment.last_failure is not None else {}
        reason = failure_reason_text(last.get("reason"), locale)
    pin = None
    if image.get("type") == "out_for_delivery":
        from chalicelib.custody.service import pin_for_message

        pin = pin_for_message(repo, shipment.merchant_id, shipment.shipment_id)
    return message_values(look.branding, recipient_name=str(as_dict(shipment.recipient).get("name") or ""),
                          tracking_url=url, eta_window=window, proof_url=url, reschedule_url=url,
                          reason=reason, delivery_date=shipment.delivery_date,
                          delivery_pin_note=delivery_pin_note(pin, locale))


def _when(value: Any, default: datetime) -> datetime:
    if not value:
        return default
    moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
