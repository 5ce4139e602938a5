"""Scheduled functions: the day-before reminders and the release of deferred messages.

Both go through the same notification path as the stream (`notifications.service.notify`), so
the ledger's conditional claim keeps every message to one send however often,
late or concurrently a schedule fires. Neither scans: merchants come from their
sparse index, tomorrow's shipments from the delivery-date index (GSI2), and
deferred messages from the ledger's due index.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from chalicelib.core.observability import MetricUnit, logger, metrics
from chalicelib.fleet.service import cached_merchant_profile
from chalicelib.notifications.dispatch import RetryLater
from chalicelib.notifications.rules import LedgerState, reminder_day, reminder_statuses
from chalicelib.notifications.service import notify, notify_parts
from chalicelib.storage.repository import Repository
from chalicelib.storage.tables import merchant_pk, reminders_sk

RELEASE_BATCH = 200  # deferred messages per run; the rest wait for the next minute


@dataclass
class RunReport:
    """What a scheduled run did, for its log line and the tests."""

    considered: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    retry_later: int = 0
    skipped_merchants: int = 0

    def count(self, outcomes: list[Any]) -> None:
        self.considered += 1
        for outcome in outcomes:
            key = str(outcome.result).split(":")[0]
            self.outcomes[key] = self.outcomes.get(key, 0) + 1

    def as_dict(self) -> dict[str, Any]:
        return {"considered": self.considered, "outcomes": dict(sorted(self.outcomes.items())),
                "retry_later": self.retry_later, "skipped_merchants": self.skipped_merchants}


def _notify(r: Repository, image: dict[str, Any], report: RunReport, now: datetime,
            due_at: datetime | None = None) -> None:
    try:
        report.count(notify(r, image, now=now, due_at=due_at))
    except RetryLater:
        # The claim was released and the item is back in the due index: a later run sends it.
        report.retry_later += 1


def send_day_before_reminders(r: Repository, now: datetime | None = None) -> RunReport:
    """Remind tomorrow's recipients, once, from 17:00 in each merchant's time zone.

    A merchant whose reminders for a date are all handled gets a marker item, so the hourly schedule costs
    one GetItem per merchant for the rest of the evening.
    """
    now = now or datetime.now(UTC)
    report = RunReport()
    for merchant_id in r.merchant_ids():
        context = cached_merchant_profile(r, merchant_id)
        day = reminder_day(now, context.settings.time_zone)
        if day is None or r.has_item(merchant_pk(merchant_id), reminders_sk(day.isoformat())):
            report.skipped_merchants += 1
            continue
        retries_before = report.retry_later
        for status in sorted(reminder_statuses()):
            for shipment_id in r.shipment_ids_of_day(merchant_id, day.isoformat(), status.value):
                _notify(r, {"type": "day_before", "merchant_id": merchant_id, "shipment_id": shipment_id,
                            "occurred_at": now.isoformat()}, report, now)
        if report.retry_later == retries_before:  # a transient failure leaves the day open for the next run
            r.mark_once(merchant_pk(merchant_id), reminders_sk(day.isoformat()), now)
    if report.considered:  # the schedule runs hourly (every few seconds locally): log only what did something
        metrics.add_metric(name="RemindersConsidered", unit=MetricUnit.Count, value=report.considered)
        logger.info("day-before reminders", extra=report.as_dict())
    return report


def release_deferred(r: Repository, now: datetime | None = None) -> RunReport:
    """Decide again every deferred message whose wait has ended (quiet hours over, a retry due)."""
    now = now or datetime.now(UTC)
    report = RunReport()
    ledger, _ = notify_parts(r)
    for message in ledger.due(now, RELEASE_BATCH):
        try:
            outcomes = notify(r, message.event, now=now, due_at=message.not_before,
                                       channel_only=message.channel)
        except RetryLater:
            report.retry_later += 1  # back in the due index for a later run
            continue
        if not outcomes:  # its shipment or kind is gone: settle it, or it would come due every minute
            ledger.settle(message.shipment_id, message.key, LedgerState.DROPPED, now, detail="nothing_to_send")
        report.count(outcomes)
    if report.considered:
        metrics.add_metric(name="DeferredReleased", unit=MetricUnit.Count, value=report.considered)
        logger.info("deferred notifications released", extra=report.as_dict())
    return report
