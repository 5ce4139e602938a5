"""Merchant webhook use cases behind the API: the endpoint (config, secret, resume), the delivery log, replay.

Sending is not done here: a replay or a resume makes deliveries due now, and the `webhook_retries`
schedule sends them within a minute, so the API function never makes an outbound request.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

from chalicelib.core import errors
from chalicelib.core.config import Settings
from chalicelib.core.security import CursorError, decode_cursor, encode_cursor, new_id
from chalicelib.core.times import to_ms
from chalicelib.storage.repository import Repository
from chalicelib.webhooks.models import (
    WebhookAttempt,
    WebhookDeliveryDetail,
    WebhookDeliveryOut,
    WebhookDeliveryPage,
    WebhookDeliveryQuery,
    WebhookEndpointIn,
    WebhookEndpointOut,
    WebhookReplayRange,
    WebhookReplayResult,
    WebhookResumeResult,
)
from chalicelib.webhooks.rules import DeliveryState, check_webhook_url, new_webhook_secret
from chalicelib.webhooks.store import DeliveryRecord, Endpoint, StoredSecret, WebhookStore, with_secret

SECRET_OVERLAP = timedelta(hours=24)  # a rotated-out secret keeps signing this long, so receivers can roll
SECRET_PREFIX_CHARS = 12
MAX_REPLAY_DELIVERIES = 1000
MAX_RESUME_REQUEUE = 1000  # per call; `more_held` says to call again
REQUEUE_WORKERS = 8


def store(repo: Repository) -> WebhookStore:
    return WebhookStore(repo.client)


def _now() -> datetime:
    return datetime.now(UTC)


# --- the endpoint ----------------------------------------------------------------------------


def _support_email(repo: Repository, merchant_id: str) -> str | None:
    from chalicelib.fleet.service import merchant_settings

    return merchant_settings(repo, merchant_id).branding.support_email


def _endpoint_out(repo: Repository, endpoint: Endpoint, *, secret: str | None = None,
                  now: datetime | None = None) -> WebhookEndpointOut:
    now = now or _now()
    current = endpoint.secrets[0].value if endpoint.secrets else ""
    rotated = [s.expires_at for s in endpoint.secrets[1:] if s.expires_at is not None and s.expires_at > now]
    h = endpoint.health
    return WebhookEndpointOut(
        id=endpoint.endpoint_id, url=endpoint.url, events=list(endpoint.events) if endpoint.events else None,
        alert_email=endpoint.alert_email,
        alerts_to=endpoint.alert_email or _support_email(repo, endpoint.merchant_id),
        secret_prefix=current[:SECRET_PREFIX_CHARS], secret=secret,
        previous_secret_expires_at=max(rotated) if rotated else None, paused=h.paused, paused_at=h.paused_at,
        consecutive_failures=h.consecutive_failures, failing_since=h.failing_since,
        created_at=endpoint.created_at, updated_at=endpoint.updated_at)


def _require_endpoint(repo: Repository, merchant_id: str) -> Endpoint:
    endpoint = store(repo).get_endpoint(merchant_id)
    if endpoint is None:
        raise errors.not_found("Webhook endpoint")
    return endpoint


def get_endpoint(repo: Repository, merchant_id: str) -> WebhookEndpointOut:
    return _endpoint_out(repo, _require_endpoint(repo, merchant_id))


def put_endpoint(repo: Repository, settings: Settings, merchant_id: str,
                 body: WebhookEndpointIn) -> tuple[WebhookEndpointOut, bool]:
    """Create the endpoint (answering its secret, once) or replace its config; (endpoint, created)."""
    problem = check_webhook_url(body.url, allow_http_local=settings.webhook_allow_local, field="url")
    if problem is not None:
        raise errors.validation_failed([errors.FieldProblem(problem.field, problem.message)])
    events = tuple(dict.fromkeys(body.events)) if body.events is not None else None
    s, now = store(repo), _now()
    updated = s.update_endpoint(merchant_id, body.url, events, body.alert_email, now)
    if updated is not None:
        return _endpoint_out(repo, updated, now=now), False
    secret = new_webhook_secret()
    endpoint = Endpoint(merchant_id, new_id("whe"), body.url, events, body.alert_email,
                        (StoredSecret(secret, now),), now, now)
    if s.create_endpoint(endpoint):
        return _endpoint_out(repo, endpoint, secret=secret, now=now), True
    # A concurrent PUT created it first: apply this config to that one (its secret was answered there).
    updated = s.update_endpoint(merchant_id, body.url, events, body.alert_email, now)
    if updated is None:
        raise errors.conflict("The webhook endpoint changed concurrently; retry.")
    return _endpoint_out(repo, updated, now=now), False


def delete_endpoint(repo: Repository, merchant_id: str) -> None:
    """Stop sending; the delivery log stays readable, and pending deliveries give up when next due."""
    if not store(repo).delete_endpoint(merchant_id):
        raise errors.not_found("Webhook endpoint")


def rotate_secret(repo: Repository, merchant_id: str) -> WebhookEndpointOut:
    s, now = store(repo), _now()
    endpoint = _require_endpoint(repo, merchant_id)
    secret = new_webhook_secret()
    secrets = with_secret(endpoint, StoredSecret(secret, now), now, SECRET_OVERLAP)
    updated = s.set_secrets(merchant_id, secrets, endpoint.secrets, now)
    if updated is None:
        raise errors.conflict("The secret was rotated concurrently; GET /v1/webhook and retry.")
    return _endpoint_out(repo, updated, secret=secret, now=now)


def resume(repo: Repository, merchant_id: str) -> WebhookResumeResult:
    """Un-pause first, then requeue held deliveries: a delivery held meanwhile is either listed here or
    sees the endpoint resumed and requeues itself (chalicelib.webhook_delivery)."""
    s, now = store(repo), _now()
    endpoint = s.resume(merchant_id, now)
    if endpoint is None:
        raise errors.not_found("Webhook endpoint")
    ids, more = s.held_ids(merchant_id, MAX_RESUME_REQUEUE)
    # To the endpoint configured now (one deleted and created again while they were held gets them).
    requeued = _requeue_all(s, merchant_id, ids, now, only_held=True, endpoint_id=endpoint.endpoint_id)
    return WebhookResumeResult(endpoint=_endpoint_out(repo, endpoint, now=now), requeued=requeued, more_held=more)


def _requeue_all(s: WebhookStore, merchant_id: str, ids: list[str], now: datetime, *, only_held: bool = False,
                 endpoint_id: str | None = None) -> int:
    def one(delivery_id: str) -> bool:
        return s.requeue(merchant_id, delivery_id, now, only_held=only_held, endpoint_id=endpoint_id) is not None

    if not ids:
        return 0
    with ThreadPoolExecutor(max_workers=min(REQUEUE_WORKERS, len(ids))) as pool:
        return sum(pool.map(one, ids))


# --- the delivery log -----------------------------------------------------------------------


def _delivery_out(d: DeliveryRecord) -> WebhookDeliveryOut:
    return WebhookDeliveryOut(
        id=d.delivery_id, event_id=d.event_id, event_type=d.event_type, shipment_id=d.shipment_id,
        state=d.state.value, created_at=d.created_at, attempts=d.attempts, last_status_code=d.last_status,
        last_error=d.last_error, last_attempt_at=d.last_attempt_at,
        next_attempt_at=d.next_attempt_at if d.state is DeliveryState.PENDING else None,
        delivered_at=d.delivered_at, replays=d.replays)


def list_deliveries(repo: Repository, settings: Settings, merchant_id: str,
                    query: WebhookDeliveryQuery) -> WebhookDeliveryPage:
    # The scope binds a cursor to this merchant and these filters: another listing's cursor is a 400.
    scope = f"webhook-deliveries:{merchant_id}:{to_ms(query.from_)}:{to_ms(query.to)}:{query.state}"
    start: dict[str, Any] | None = None
    if query.cursor is not None:
        try:
            start = decode_cursor(settings.token_secret, scope, query.cursor)
        except CursorError as exc:
            raise errors.bad_request("The cursor is not valid for this listing.", "cursor", str(exc)) from None
    items, last = store(repo).list_deliveries(
        merchant_id, from_ms=to_ms(query.from_), to_ms=to_ms(query.to),
        state=DeliveryState(query.state) if query.state else None, limit=query.limit, start=start)
    return WebhookDeliveryPage(items=[_delivery_out(d) for d in items],
                               next_cursor=encode_cursor(settings.token_secret, scope, last) if last else None)


def _require_delivery(repo: Repository, merchant_id: str, delivery_id: str) -> DeliveryRecord:
    found = store(repo).get_delivery(merchant_id, delivery_id)
    if found is None:
        raise errors.not_found("Webhook delivery")
    return found


def get_delivery(repo: Repository, merchant_id: str, delivery_id: str) -> WebhookDeliveryDetail:
    from chalicelib.webhooks.delivery import payload

    d = _require_delivery(repo, merchant_id, delivery_id)
    return WebhookDeliveryDetail(
        **_delivery_out(d).model_dump(), payload=payload(d),
        attempt_log=[WebhookAttempt(at=a.at, status_code=a.status, latency_ms=a.latency_ms, error=a.error)
                     for a in d.attempt_log])


def _endpoint_for_replay(repo: Repository, merchant_id: str) -> Endpoint:
    endpoint = store(repo).get_endpoint(merchant_id)
    if endpoint is None:
        raise errors.conflict("No webhook endpoint is configured; PUT /v1/webhook first.")
    if endpoint.paused:
        raise errors.conflict("The webhook endpoint is paused; POST /v1/webhook/resume first.")
    return endpoint


def replay_delivery(repo: Repository, merchant_id: str, delivery_id: str) -> WebhookDeliveryOut:
    """Send one delivery again (same event id and body, fresh timestamp and signature) within a minute."""
    _require_delivery(repo, merchant_id, delivery_id)
    endpoint = _endpoint_for_replay(repo, merchant_id)
    replayed = store(repo).requeue(merchant_id, delivery_id, _now(), endpoint_id=endpoint.endpoint_id)
    if replayed is None:
        raise errors.not_found("Webhook delivery")
    return _delivery_out(replayed)


def replay_range(repo: Repository, merchant_id: str, body: WebhookReplayRange) -> WebhookReplayResult:
    """Send again every delivery created in [from, to]; refused (nothing replayed) above 1000 deliveries."""
    endpoint = _endpoint_for_replay(repo, merchant_id)
    s = store(repo)
    ids = s.delivery_ids_between(merchant_id, to_ms(body.from_), to_ms(body.to), MAX_REPLAY_DELIVERIES + 1)
    if len(ids) > MAX_REPLAY_DELIVERIES:
        raise errors.validation_failed([errors.FieldProblem(
            "to", f"the range holds more than {MAX_REPLAY_DELIVERIES} deliveries; replay a shorter range")])
    return WebhookReplayResult(replayed=_requeue_all(s, merchant_id, ids, _now(), endpoint_id=endpoint.endpoint_id))
