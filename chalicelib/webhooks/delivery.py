"""Merchant webhook delivery: the `webhook_sender` stream function and the `webhook_retries` schedule.

`webhook_sender` consumes the table's stream through its own event source mapping (a slow merchant
endpoint never delays the ping pipeline). For each new timeline event of a merchant with an endpoint
(cached 60 s) it logs the delivery once (a conditional put keyed by the event), claims the first
attempt (a conditional update on the attempt count), POSTs the signed JSON and records the outcome on
the delivery and on the endpoint's health. A failed POST never fails the stream record: the delivery
has its own retries. A DynamoDB failure does, so the stream retries that record.

`webhook_retries` runs every minute: it reads due deliveries from the sparse GSI1 list (4 shards),
claims each attempt conditionally (two overlapping runs never send one attempt twice), and holds
the deliveries of paused endpoints. After N consecutive failed attempts spanning an hour (domain
`should_pause`) the endpoint is paused, exactly one worker wins the pause and emails the merchant.
"""

from __future__ import annotations

import html
import json
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

from chalicelib.core.config import get_settings
from chalicelib.core.observability import MetricUnit, logger, metrics
from chalicelib.core.security import new_id
from chalicelib.storage.dead_letters import keep_failed
from chalicelib.storage.tables import WEBHOOK_DUE_SHARDS
from chalicelib.webhooks.rules import (
    PAUSE_AFTER_FAILURES,
    PAUSE_MIN_FAILING,
    DeliveryState,
    after_attempt,
    attempt_succeeded,
    encode_event,
    should_pause,
    signed_headers,
)
from chalicelib.webhooks.store import (
    AttemptEntry,
    DeliveryRecord,
    DueDelivery,
    Endpoint,
    WebhookStore,
    delivery_id_for,
    parse_time,
)
from chalicelib.webhooks.transport import Answer, Transport

D = DeliveryState
CONFIG_CACHE_S = 60.0  # a changed endpoint (URL, events, pause) reaches a warm sender within this
CLAIM_LEASE = timedelta(minutes=2)  # longer than one POST (5 s timeouts) plus recording it
RETRY_SHARD_LIMIT = 100  # due deliveries read per shard and run; the rest wait for the next minute
RETRY_RUN_BUDGET_S = 40.0  # stop claiming new attempts after this, well inside the function's timeout
SEND_WORKERS = 8  # parallel POSTs per batch or run: one slow endpoint does not serialise the rest
EXCEPTION_EVENT_PK = "EXCEPTION#"  # the exception queue's events (chalicelib/exceptions/store.py)
PAUSE_NOTICE_RETRY = timedelta(minutes=10)  # a pause email whose send failed is tried again after this


@dataclass(frozen=True)
class Job:
    """One claimed attempt: the delivery as claimed and the endpoint to POST it to."""

    delivery: DeliveryRecord
    endpoint: Endpoint


@dataclass
class RetryReport:
    due: int = 0
    attempted: int = 0
    delivered: int = 0
    rescheduled: int = 0
    failed: int = 0  # given up after 24 h, or the endpoint is gone
    held: int = 0
    errors: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def _plain(value: Any) -> Any:
    """A deserialized DynamoDB value as JSON-ready Python (numbers come back as Decimal)."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted(_plain(v) for v in value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def _image(record: dict[str, Any]) -> dict[str, Any]:
    from boto3.dynamodb.types import TypeDeserializer

    deserializer = TypeDeserializer()
    raw = (record.get("dynamodb") or {}).get("NewImage") or {}
    return {name: _plain(deserializer.deserialize(value)) for name, value in raw.items()}


def _failure_text(answer: Answer) -> str | None:
    if answer.status is None:
        return answer.error or "no answer"
    if attempt_succeeded(answer.status):
        return None
    text = f"HTTP {answer.status}"
    if 300 <= answer.status < 400:
        text += " (redirects are not followed)"
    snippet = answer.body[:120].decode("utf-8", "replace").strip()
    return f"{text}: {snippet}" if snippet else text


class Deliverer:
    def __init__(self, store: WebhookStore, repo: Any, transport: Transport, notifier: Any, *,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 pause_after: int = PAUSE_AFTER_FAILURES, min_failing: timedelta = PAUSE_MIN_FAILING,
                 workers: int = SEND_WORKERS) -> None:
        self.store = store
        self.repo = repo  # chalicelib.storage.repository.Repository: shipments and merchants
        self.transport = transport
        self.notifier = notifier  # chalicelib.storage.notifier.Notifier: the pause email
        self.clock = clock
        self.pause_after = pause_after
        self.min_failing = min_failing
        self.workers = workers
        self._endpoints: dict[str, tuple[float, Endpoint | None]] = {}

    def now(self) -> datetime:
        return self.clock()

    # --- endpoint cache -------------------------------------------------------------------

    def endpoint(self, merchant_id: str) -> Endpoint | None:
        """The merchant's endpoint, cached 60 s (merchants without one too: one read a minute, not per event)."""
        cached = self._endpoints.get(merchant_id)
        if cached is not None and time.monotonic() - cached[0] < CONFIG_CACHE_S:
            return cached[1]
        return self._refresh(merchant_id)

    def _refresh(self, merchant_id: str) -> Endpoint | None:
        endpoint = self.store.get_endpoint(merchant_id)
        self._endpoints[merchant_id] = (time.monotonic(), endpoint)
        return endpoint

    # --- the stream function ---------------------------------------------------------------

    def handle_stream_event(self, event: dict[str, Any]) -> dict[str, Any]:
        """Log and attempt each record's delivery; report the records whose storage failed."""
        failures: list[str] = []
        jobs: list[tuple[str, Job]] = []
        for record in event.get("Records") or []:
            sequence = str((record.get("dynamodb") or {}).get("SequenceNumber", ""))
            try:
                job = self.prepare(record)
            except Exception:
                logger.exception("webhook delivery could not be logged", extra={"sequence": sequence})
                failures.append(sequence)
                continue
            if job is not None:
                jobs.append((sequence, job))
        for (sequence, _), result in zip(jobs, self.run_jobs([job for _, job in jobs]), strict=True):
            if isinstance(result, Exception):
                failures.append(sequence)
        if failures:  # their bodies outlive the stream's 24 h (storage/dead_letters.py)
            keep_failed("webhook_sender", event, failures)
        return {"batchItemFailures": [{"itemIdentifier": s} for s in failures]}

    def prepare(self, record: dict[str, Any]) -> Job | None:
        """Log the delivery of one timeline event (once) and claim its first attempt, if it is due."""
        keys = (record.get("dynamodb") or {}).get("Keys") or {}
        sort_key, partition = str((keys.get("SK") or {}).get("S", "")), str((keys.get("PK") or {}).get("S", ""))
        if record.get("eventName") != "INSERT" or not sort_key.startswith(("EVENT#", "ZONEEVENT#")):
            return None
        image = _image(record)
        merchant_id, shipment_id, event_id = (str(image.get(k, "")) for k in ("merchant_id", "shipment_id",
                                                                              "event_id"))
        event_type = str(image.get("type", ""))
        # Not every event is a shipment's: a zone event is a driver's, an exception's events are the queue's,
        # presence's (driver_offline, driver_online, driver_off_duty) a driver's.
        subject = shipment_id
        if sort_key.startswith("ZONEEVENT#"):
            event_type, subject = f"zone_{event_type}", str(image.get("driver_id", ""))
        elif partition.startswith(EXCEPTION_EVENT_PK):
            subject = str(image.get("exception_id", ""))
        elif not subject:
            subject = str(image.get("driver_id", ""))
        if not (merchant_id and subject and event_id and event_type):
            return None
        endpoint = self.endpoint(merchant_id)
        if endpoint is not None and endpoint.paused:
            endpoint = self._refresh(merchant_id)  # resumed within the cache time? then send, do not hold
        if endpoint is None or not endpoint.wants(event_type):
            return None
        now = self.now()
        # A zone event has no recorded time: its occurred time keeps the delivery id the same on redelivery.
        recorded = parse_time(str(image.get("recorded_at") or image.get("occurred_at") or "")) or now
        delivery = DeliveryRecord(
            merchant_id=merchant_id, delivery_id=delivery_id_for(recorded, subject, event_id),
            endpoint_id=endpoint.endpoint_id, event_id=event_id, event_type=event_type, shipment_id=shipment_id,
            created_at=recorded, state=D.HELD if endpoint.paused else D.PENDING,
            body=self._body(image, merchant_id, shipment_id, event_id, event_type, recorded), next_attempt_at=now)
        if self.store.create_delivery(delivery):
            metrics.add_metric(name="WebhooksCreated", unit=MetricUnit.Count, value=1)
            if delivery.state is D.HELD:
                self._after_hold(merchant_id, delivery.delivery_id, now)
                return None
        else:  # the stream delivered this record again: attempt only if nobody has yet
            found = self.store.get_delivery(merchant_id, delivery.delivery_id)
            if found is None or found.state is not D.PENDING or found.attempts > 0:
                return None
            delivery = found
        claimed = self.store.claim(delivery, new_id("clm"), now, CLAIM_LEASE)
        return Job(claimed, endpoint) if claimed else None

    def _body(self, image: dict[str, Any], merchant_id: str, shipment_id: str, event_id: str, event_type: str,
              recorded: datetime) -> str:
        occurred = parse_time(str(image.get("occurred_at") or "")) or recorded
        if event_type == "message_sent":  # the event has no text (the timeline's); the merchant's webhook does
            return self._message_body(image, merchant_id, shipment_id, event_id, occurred, recorded)
        if event_type.startswith("zone_"):  # a driver's zone event: no shipment to read
            data: dict[str, Any] = {name: image.get(name) for name in ("driver_id", "zone_id", "zone_name", "lat",
                                                                        "lng")}
            return encode_event(event_id, event_type, occurred, data, merchant_id=merchant_id).decode("utf-8")
        if not shipment_id:  # the queue's events carry their exception whole; a driver's event its details
            raw = image.get("data")
            data = json.loads(raw) if isinstance(raw, str) else dict(raw or {})
            if image.get("driver_id") and not event_type.startswith("exception_"):
                data = {"driver_id": image.get("driver_id"), "source": image.get("source"),
                        "recorded_at": recorded.isoformat().replace("+00:00", "Z"), "details": data}
            return encode_event(event_id, event_type, occurred, data, merchant_id=merchant_id).decode("utf-8")
        shipment = self.repo.get_shipment(merchant_id, shipment_id)
        data = {"shipment_id": shipment_id, "external_ref": shipment.external_ref if shipment else None,
                "from_status": image.get("from_status"), "to_status": image.get("to_status"),
                "source": image.get("source"), "recorded_at": recorded.isoformat().replace("+00:00", "Z"),
                "details": image.get("data") or {}}
        return encode_event(event_id, event_type, occurred, data, merchant_id=merchant_id).decode("utf-8")

    def _message_body(self, image: dict[str, Any], merchant_id: str, shipment_id: str, event_id: str,
                      occurred: datetime, recorded: datetime) -> str:
        from chalicelib.messaging.service import webhook_data

        raw = image.get("data")
        details = json.loads(raw) if isinstance(raw, str) else dict(raw or {})
        data = {"shipment_id": shipment_id or None, "driver_id": image.get("driver_id"), "source": image.get("source"),
                "recorded_at": recorded.isoformat().replace("+00:00", "Z"),
                "details": webhook_data(self.repo, merchant_id, shipment_id, details)}
        return encode_event(event_id, "message_sent", occurred, data, merchant_id=merchant_id).decode("utf-8")

    # --- the scheduled function -------------------------------------------------------------

    def run_retries(self, budget_s: float = RETRY_RUN_BUDGET_S) -> RetryReport:
        started = time.monotonic()
        now = self.now()
        report = RetryReport()
        due: list[DueDelivery] = []
        for shard in range(WEBHOOK_DUE_SHARDS):
            due += self.store.due(shard, now, RETRY_SHARD_LIMIT)
        due.sort(key=lambda d: (d.next_attempt_at or now, d.delivery_id))
        report.due = len(due)
        endpoints: dict[str, Endpoint | None] = {}  # read fresh once per run, not from the sender's cache
        jobs: list[Job] = []
        for delivery in due:
            if time.monotonic() - started > budget_s:
                break
            if delivery.merchant_id not in endpoints:
                endpoints[delivery.merchant_id] = self.store.get_endpoint(delivery.merchant_id)
            endpoint = endpoints[delivery.merchant_id]
            try:
                if endpoint is None or endpoint.endpoint_id != delivery.endpoint_id:
                    if self.store.give_up(delivery, "endpoint deleted", now):
                        report.failed += 1
                    continue
                if endpoint.paused:
                    if self.store.hold(delivery, now):
                        report.held += 1
                        self._notice_again(endpoint, now)
                    continue
                claimed = self.store.claim(delivery, new_id("clm"), now, CLAIM_LEASE)
            except Exception:
                logger.exception("webhook retry could not be claimed", extra={"delivery_id": delivery.delivery_id})
                report.errors += 1
                continue
            if claimed is not None:
                jobs.append(Job(claimed, endpoint))
        for result in self.run_jobs(jobs):
            if isinstance(result, Exception):
                report.errors += 1
                continue
            report.attempted += 1
            if result is D.DELIVERED:
                report.delivered += 1
            elif result is D.FAILED:
                report.failed += 1
            else:
                report.rescheduled += 1
        logger.info("webhook retries", extra=report.as_dict())
        return report

    # --- attempts ------------------------------------------------------------------------------

    def run_jobs(self, jobs: Sequence[Job]) -> list[DeliveryState | Exception]:
        """Attempt the claimed deliveries in parallel; per job its new state, or the storage error."""

        def one(job: Job) -> DeliveryState | Exception:
            try:
                return self.attempt(job)
            except Exception as exc:
                logger.exception("webhook attempt could not be recorded",
                                 extra={"delivery_id": job.delivery.delivery_id})
                return exc

        if len(jobs) <= 1:
            return [one(job) for job in jobs]
        with ThreadPoolExecutor(max_workers=min(self.workers, len(jobs))) as pool:
            return list(pool.map(one, jobs))

    def attempt(self, job: Job) -> DeliveryState:
        """POST one claimed delivery, record the outcome on it and on the endpoint's health."""
        delivery, endpoint = job.delivery, job.endpoint
        body = delivery.body.encode("utf-8")
        sent_at = self.now()  # a replay gets a fresh timestamp and signature over the same bytes
        headers = signed_headers(endpoint.active_secrets(sent_at), body, sent_at.timestamp(), delivery.event_id)
        try:
            answer = self.transport.post(endpoint.url, body, headers)
        except Exception as exc:  # a sending failure is an attempt that failed, never a stream record error
            logger.exception("webhook transport failed", extra={"delivery_id": delivery.delivery_id})
            answer = Answer(None, 0, f"could not send ({exc.__class__.__name__})")
        now = self.now()
        error = _failure_text(answer)
        # The claim already counted this attempt; the domain counts it again from the count before.
        before = replace(delivery.domain(), attempts=delivery.attempts - 1)
        outcome = after_attempt(before, now, answer.status, error)
        entry = AttemptEntry(now, answer.status, answer.latency_ms, error)
        if not self.store.record_attempt(delivery, outcome, entry, now):
            logger.info("webhook attempt superseded by a replay", extra={"delivery_id": delivery.delivery_id})
        ok = attempt_succeeded(answer.status)
        logger.info("webhook attempt", extra={"delivery_id": delivery.delivery_id, "status": answer.status,
                                              "latency_ms": answer.latency_ms, "state": outcome.state.value,
                                              "attempt": delivery.attempts})
        metrics.add_metric(name="WebhookAttempts", unit=MetricUnit.Count, value=1)
        if ok:
            metrics.add_metric(name="WebhooksDelivered", unit=MetricUnit.Count, value=1)
            self.store.record_success(delivery.merchant_id)
            return outcome.state
        metrics.add_metric(name="WebhookAttemptsFailed", unit=MetricUnit.Count, value=1)
        if outcome.state is D.FAILED:
            logger.warning("webhook delivery given up after 24 hours", extra={
                "delivery_id": delivery.delivery_id, "merchant_id": delivery.merchant_id,
                "attempts": outcome.attempts, "last_error": error})
            metrics.add_metric(name="WebhooksGivenUp", unit=MetricUnit.Count, value=1)
        health = self.store.record_failure(delivery.merchant_id, now)
        if health is not None and not health.paused and should_pause(
                health.consecutive_failures, health.failing_since, now, pause_after=self.pause_after,
                min_failing=self.min_failing) and self.store.pause(delivery.merchant_id, now):
            logger.warning("webhook endpoint paused", extra={"merchant_id": delivery.merchant_id,
                                                             "consecutive_failures": health.consecutive_failures})
            metrics.add_metric(name="WebhookEndpointsPaused", unit=MetricUnit.Count, value=1)
            paused = self._refresh(delivery.merchant_id)
            if paused is not None:
                self._send_pause_notice(paused, now)
        return outcome.state

    # --- pausing ---------------------------------------------------------------------------------

    def _after_hold(self, merchant_id: str, delivery_id: str, now: datetime) -> None:
        """After logging a held delivery: if the endpoint was resumed meanwhile (the resume's list of held
        deliveries may have missed this one), requeue it; else retry a pause email that did not go out."""
        fresh = self._refresh(merchant_id)
        if fresh is not None and not fresh.paused:
            self.store.requeue(merchant_id, delivery_id, now, only_held=True)
        elif fresh is not None:
            self._notice_again(fresh, now)

    def _notice_again(self, endpoint: Endpoint, now: datetime) -> None:
        if endpoint.pause_notified_at is None and self.store.claim_pause_notice(
                endpoint.merchant_id, now, now - PAUSE_NOTICE_RETRY):
            self._send_pause_notice(endpoint, now)

    def _send_pause_notice(self, endpoint: Endpoint, now: datetime) -> None:
        """Email the merchant that its endpoint is paused (platform sender, to alert_email or support_email)."""
        to = endpoint.alert_email or self._support_email(endpoint.merchant_id)
        sender = get_settings().email_sender
        if not to or not sender:
            logger.warning("webhook endpoint paused, but there is no alert address or sender to email",
                           extra={"merchant_id": endpoint.merchant_id, "has_address": bool(to)})
            self.store.finish_pause_notice(endpoint.merchant_id, now, sent=True)  # nothing to retry
            return
        subject, text, body_html = pause_email(endpoint, now)
        try:
            self.notifier.send_email(f"Doorstep <{sender}>", to, subject, text, body_html)
        except Exception:
            logger.exception("webhook pause email failed; a later held delivery retries it",
                             extra={"merchant_id": endpoint.merchant_id})
            self.store.finish_pause_notice(endpoint.merchant_id, now, sent=False)
            return
        self.store.finish_pause_notice(endpoint.merchant_id, now, sent=True)

    def _support_email(self, merchant_id: str) -> str | None:
        from chalicelib.fleet.service import merchant_profile

        profile = merchant_profile(self.repo, merchant_id)
        return profile.settings.branding.support_email if profile is not None else None


def pause_email(endpoint: Endpoint, now: datetime) -> tuple[str, str, str]:
    """(subject, text, html) of the pause notice; the URL is shown by host only (its path may hold a token)."""
    host = urlsplit(endpoint.url).hostname or "your endpoint"
    since = endpoint.health.failing_since or now
    failures = endpoint.health.consecutive_failures
    subject = "Doorstep paused your webhook endpoint"
    lines = [
        f"Your webhook endpoint at {host} did not accept {failures} deliveries in a row "
        f"since {since.astimezone(UTC):%Y-%m-%d %H:%M} UTC, so Doorstep paused it at "
        f"{now.astimezone(UTC):%Y-%m-%d %H:%M} UTC.",
        "New events are kept as held deliveries, not dropped. Fix the endpoint, then resume it with "
        "POST /v1/webhook/resume: every held delivery is sent again.",
        "The delivery log (GET /v1/webhook/deliveries) shows each attempt's status code and error.",
    ]
    text = "\n\n".join(lines) + "\n"
    body_html = "".join(f"<p>{html.escape(line)}</p>" for line in lines)
    return subject, text, body_html


# --- the functions' entry points (app.py) -----------------------------------------------------------

_deliverer: Deliverer | None = None


def deliverer() -> Deliverer:
    """The process-wide deliverer, built on first use (tests replace it with `use`)."""
    global _deliverer
    if _deliverer is None:
        from chalicelib.notifications.service import notify_parts
        from chalicelib.storage.repository import Repository
        from chalicelib.webhooks.transport import HttpTransport

        repo = Repository()
        _deliverer = Deliverer(WebhookStore(repo.client), repo,
                               HttpTransport(allow_local=get_settings().webhook_allow_local), notify_parts(repo)[1])
    return _deliverer


def use(replacement: Deliverer | None) -> None:
    global _deliverer
    _deliverer = replacement


def handle_stream_event(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return deliverer().handle_stream_event(event)


def run_retries(context: Any = None) -> dict[str, int]:
    return deliverer().run_retries().as_dict()


def payload(delivery: DeliveryRecord) -> dict[str, Any]:
    """The JSON a delivery POSTs, as an object (the delivery log shows it)."""
    data: dict[str, Any] = json.loads(delivery.body)
    return data
