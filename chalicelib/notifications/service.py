"""The one entry to the recipient's messages: the stream, the schedules and the replay tool all call `notify`.

Sending is decided and done in `dispatch` (policy, templates, ledger, SNS/SES); this module builds what it needs
once per warm container (the ledger and the senders, loaded on the first event that may notify, so a cold
pipeline that only geofences never imports them) and reads the merchant through fleet's cached profile.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from chalicelib.core.config import get_settings
from chalicelib.core.observability import MetricUnit, metrics
from chalicelib.fleet.service import cached_merchant_profile
from chalicelib.storage.repository import Repository

if TYPE_CHECKING:
    from chalicelib.notifications.dispatch import Outcome
    from chalicelib.notifications.ledger import Ledger
    from chalicelib.notifications.senders import Notifier

_parts: tuple[Ledger, Notifier] | None = None
_parts_lock = threading.Lock()


def notify(r: Repository, image: dict[str, Any], *, now: datetime | None = None,
           due_at: datetime | None = None, channel_only: str | None = None, replay: bool = False) -> list[Outcome]:
    """Send the recipient's messages for a lifecycle event, once per channel (the ledger's claim).

    A transient provider failure raises, so the stream retries the record. The scheduled functions (day-before
    reminders, release of deferred messages) come through here too, with `due_at` when a deferred message is
    released; the replay tool with `replay=True`. Returns the per-channel outcomes.
    """
    from chalicelib.notifications import dispatch

    if str(image.get("type")) not in dispatch.EVENT_KINDS:
        return []
    ledger, notifier = notify_parts(r)
    profile = cached_merchant_profile(r, str(image["merchant_id"]))
    policy, templates = dispatch.load_settings(profile.notifications_json)
    look = dispatch.merchant_look(profile.settings, profile.name, get_settings().email_sender)
    return dispatch.notify_for_event(r, ledger, notifier, get_settings(), image, look, now, policy=policy,
                                     templates=templates, due_at=due_at, channel_only=channel_only, replay=replay,
                                     preferences=dispatch.load_preferences(profile.notifications_json))


def notify_parts(r: Repository) -> tuple[Ledger, Notifier]:
    """The notification ledger and senders, built once per container."""
    global _parts
    with _parts_lock:  # the pipeline notifies from several threads: one ledger and one notifier all the same
        if _parts is None:
            from chalicelib.notifications.ledger import Ledger
            from chalicelib.notifications.senders import Notifier

            _parts = (Ledger(r.client), Notifier())
        return _parts


def notify_dispatch(r: Repository, merchant_id: str, subject_id: str, message_kind: str, *, email: str | None,
                    phone: str | None, subject: str, text: str, quiet: bool) -> list[str]:
    """Tell the merchant's dispatch contact (not a recipient) about something in its queue, once per channel.

    The same ledger as the recipient's messages keeps it exactly once: its item is `PK = SHIPMENT#<subject id>`
    (the exception's id stands where a shipment's would), `SK = NOTIFY#<subject id>#<kind>#<channel>`. In quiet
    hours the message is dropped, not deferred: the queue shows it, and a dispatcher coming on shift reads the
    queue rather than a backlog of texts. A transient provider failure leaves the claim to expire; the ledger
    then lets a redelivered record send it. Returns the per-channel outcomes."""
    from chalicelib.core.security import new_id
    from chalicelib.notifications.rules import LedgerState
    from chalicelib.notifications.senders import SendFailed

    ledger, notifier = notify_parts(r)
    now = datetime.now(UTC)
    sender = get_settings().email_sender
    outcomes: list[str] = []
    for channel, address in (("email", email), ("sms", phone)):
        if not address:
            continue
        key = f"NOTIFY#{subject_id}#{message_kind}#{channel}"
        if quiet or (channel == "email" and not sender):
            reason = "quiet_hours" if quiet else "no_sender_identity"
            ledger.settle(subject_id, key, LedgerState.DROPPED, now, detail=reason)
            outcomes.append(f"{channel}:dropped:{reason}")
            continue
        claim_id = new_id("clm")
        if not ledger.claim(subject_id, key, claim_id, now):
            outcomes.append(f"{channel}:skipped")  # sent, dropped or being sent by another worker
            continue
        try:
            if channel == "email":
                sent = notifier.send_email(str(sender), address, subject, text, _plain_html(text))
            else:
                sent = notifier.send_sms(address, text[:300])
        except SendFailed as exc:
            ledger.finish(subject_id, key, claim_id, LedgerState.FAILED_PERMANENT, now, detail=exc.verdict.code)
            metrics.add_metric(name="DispatchMessagesFailed", unit=MetricUnit.Count, value=1)
            outcomes.append(f"{channel}:failed:{exc.verdict.code}")
            continue
        ledger.finish(subject_id, key, claim_id, LedgerState.SENT, now, detail=sent.provider_id)
        metrics.add_metric(name="DispatchMessagesSent", unit=MetricUnit.Count, value=1)
        outcomes.append(f"{channel}:sent")
    return outcomes


def _plain_html(text: str) -> str:
    import html

    return "<p>" + "<br>".join(html.escape(line) for line in text.splitlines()) + "</p>"


# --- messaging: "your driver wrote" (chalicelib/messaging) ------------------------------------------------------

_MESSAGE_TEXTS = {
    "en": ("{merchant}: {driver}, your driver, sent you a message about your delivery. Read and reply: {url}",
           "{merchant}: a message from your driver"),
    "de": ("{merchant}: {driver}, Ihr Fahrer, hat Ihnen eine Nachricht zu Ihrer Lieferung geschickt. Lesen und "
           "antworten: {url}", "{merchant}: eine Nachricht von Ihrem Fahrer"),
}


def notify_recipient_message(r: Repository, merchant_id: str, shipment_id: str, episode: str, driver_first_name: str,
                             now: datetime | None = None) -> list[str]:
    """Tell the recipient that the driver wrote, with a link back to the conversation (never the text): by SMS
    when the shipment has a phone, else by email; once per `episode` (the caller's count of driver messages the
    recipient had read: one note per run of unread messages) through the ledger's conditional claim, so a
    duplicated stream batch sends nothing twice. Opted-out contacts and the merchant's quiet hours drop it: the
    page shows the message whenever the recipient looks."""
    from chalicelib.core.links import tracking_url
    from chalicelib.core.security import new_id
    from chalicelib.notifications import dispatch
    from chalicelib.notifications.contacts import contact_key
    from chalicelib.notifications.rules import Channel, LedgerState, recipient_zone
    from chalicelib.notifications.senders import SendFailed
    from chalicelib.storage.tables import as_dict

    now = now or datetime.now(UTC)
    shipment = r.get_shipment(merchant_id, shipment_id)
    if shipment is None:
        return []
    recipient = as_dict(shipment.recipient)
    phone, email = recipient.get("phone"), recipient.get("email")
    channel, address = (Channel.SMS, str(phone)) if phone else (Channel.EMAIL, str(email)) if email else (None, "")
    if channel is None:
        return []
    ledger, notifier = notify_parts(r)
    profile = cached_merchant_profile(r, merchant_id)
    policy, _ = dispatch.load_settings(profile.notifications_json)
    key = f"NOTIFY#{shipment_id}#driver_message#{episode}#{channel.value}"
    try:
        opted_out = bool(ledger.opted_out(merchant_id, [contact_key(channel.value, address)]))
    except ValueError:  # not a valid address: nothing to send to
        return [f"{channel.value}:dropped:no_contact"]
    zone = recipient_zone(str(recipient.get("time_zone") or ""), profile.settings.time_zone)
    quiet = policy.quiet_hours is not None and channel in policy.quiet_channels and \
        policy.quiet_hours.ends_at(now, zone) is not None
    sender = get_settings().email_sender
    if opted_out or quiet or (channel is Channel.EMAIL and not sender):
        reason = "opted_out" if opted_out else "quiet_hours" if quiet else "no_sender_identity"
        ledger.settle(shipment_id, key, LedgerState.DROPPED, now, detail=reason)
        return [f"{channel.value}:dropped:{reason}"]
    claim_id = new_id("clm")
    if not ledger.claim(shipment_id, key, claim_id, now):
        return [f"{channel.value}:skipped"]  # sent, dropped or being sent by another worker
    locale = "de" if str(recipient.get("locale") or profile.settings.locale).lower().startswith("de") else "en"
    body, subject = _MESSAGE_TEXTS[locale]
    look = dispatch.merchant_look(profile.settings, profile.name, sender)
    text = body.format(merchant=look.branding.name, driver=driver_first_name,
                       url=tracking_url(get_settings(), shipment_id, int(shipment.token_version)) + "#messages")
    try:
        if channel is Channel.SMS:
            sent = notifier.send_sms(address, text)
        else:
            sent = notifier.send_email(str(sender), address, subject.format(merchant=look.branding.name), text,
                                       _plain_html(text))
    except SendFailed as exc:
        ledger.finish(shipment_id, key, claim_id, LedgerState.FAILED_PERMANENT, now, detail=exc.verdict.code)
        return [f"{channel.value}:failed:{exc.verdict.code}"]
    ledger.finish(shipment_id, key, claim_id, LedgerState.SENT, now, detail=sent.provider_id)
    metrics.add_metric(name="MessageNotificationsSent", unit=MetricUnit.Count, value=1)
    return [f"{channel.value}:sent"]


def record_sms_opt_out(r: Repository, merchant_id: str, phone: str, now: datetime | None = None) -> None:
    """A recipient texted STOP: no more SMS from this merchant to that number (the opt-out the ledger checks)."""
    from chalicelib.notifications.contacts import contact_key

    ledger, _ = notify_parts(r)
    ledger.record_opt_out(merchant_id, contact_key("sms", phone), now or datetime.now(UTC), "recipient")


def send_sms_reply(r: Repository, phone: str, text: str) -> None:
    """An automatic answer to an inbound SMS (HELP); a provider failure is not retried (they can text again)."""
    from chalicelib.notifications.senders import SendFailed

    _, notifier = notify_parts(r)
    try:
        notifier.send_sms(phone, text[:300])
    except SendFailed:
        metrics.add_metric(name="SmsRepliesFailed", unit=MetricUnit.Count, value=1)
