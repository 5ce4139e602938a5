"""Merchant webhooks: the endpoint, its delivery log and replays; the sender (stream) and retries (schedule).

Delivery runs in its own Lambda functions, `webhook_sender` (on the table stream, with its own event source
mapping in infra/resources.json) and `webhook_retries` (every minute), so a slow merchant endpoint never delays
the pipeline.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chalice.app import Blueprint, Rate, Response

from chalicelib.core.config import get_settings
from chalicelib.core.observability import flushes_metrics
from chalicelib.http.routes import Answer, Call, Routes, json_response
from chalicelib.storage import get_repository

if TYPE_CHECKING:  # the route models load on first use of a route (`Routes(models=...)`)
    from chalicelib.webhooks.models import (
        WebhookDeliveryDetail,
        WebhookDeliveryOut,
        WebhookDeliveryPage,
        WebhookEndpointOut,
        WebhookReplayResult,
        WebhookResumeResult,
    )

blueprint = Blueprint(__name__)
routes = Routes(blueprint, models="chalicelib.webhooks.models")


@routes.route("/v1/webhook", "GET", summary="The webhook endpoint (the secret is never shown again, only its prefix)",
              tag="webhooks", response="WebhookEndpointOut", errors_=(401, 404))
def get_webhook(call: Call) -> WebhookEndpointOut:
    from chalicelib.webhooks import service

    return service.get_endpoint(get_repository(), call.merchant_id)


@routes.route("/v1/webhook", "PUT", summary="Create (201, with the signing secret once) or replace the webhook "
              "endpoint", tag="webhooks", body="WebhookEndpointIn", response="WebhookEndpointOut",
              errors_=(400, 401, 413, 415, 422),
              also=(Answer(201, "Created: the answer carries the signing secret, once"),))
def put_webhook(call: Call) -> Response:
    from chalicelib.webhooks import service

    endpoint, created = service.put_endpoint(get_repository(), get_settings(), call.merchant_id, call.body)
    return json_response(endpoint, 201 if created else 200)


@routes.route("/v1/webhook", "DELETE", summary="Delete the webhook endpoint (the delivery log stays)", tag="webhooks",
              status=204, errors_=(401, 404))
def delete_webhook(call: Call) -> Response:
    from chalicelib.webhooks import service

    service.delete_endpoint(get_repository(), call.merchant_id)
    return Response(body="", status_code=204)


@routes.route("/v1/webhook/secret", "POST", summary="Rotate the signing secret (the old one also signs for 24 h)",
              tag="webhooks", response="WebhookEndpointOut", errors_=(401, 404, 409))
def rotate_webhook_secret(call: Call) -> WebhookEndpointOut:
    from chalicelib.webhooks import service

    return service.rotate_secret(get_repository(), call.merchant_id)


@routes.route("/v1/webhook/resume", "POST", summary="Un-pause the endpoint and send its held deliveries",
              tag="webhooks", response="WebhookResumeResult", errors_=(401, 404))
def resume_webhook(call: Call) -> WebhookResumeResult:
    from chalicelib.webhooks import service

    return service.resume(get_repository(), call.merchant_id)


@routes.route("/v1/webhook/deliveries", "GET", summary="The delivery log, newest first", tag="webhooks",
              query="WebhookDeliveryQuery", response="WebhookDeliveryPage", errors_=(400, 401, 422))
def list_webhook_deliveries(call: Call) -> WebhookDeliveryPage:
    from chalicelib.webhooks import service

    return service.list_deliveries(get_repository(), get_settings(), call.merchant_id,
                                      call.query)


@routes.route("/v1/webhook/deliveries/{delivery_id}", "GET", summary="One delivery with its attempts and payload",
              tag="webhooks", response="WebhookDeliveryDetail", errors_=(401, 404))
def get_webhook_delivery(call: Call, delivery_id: str) -> WebhookDeliveryDetail:
    from chalicelib.webhooks import service

    return service.get_delivery(get_repository(), call.merchant_id, delivery_id)


@routes.route("/v1/webhook/deliveries/{delivery_id}/replay", "POST", summary="Send a delivery again (same event id, "
              "fresh signature) within a minute", tag="webhooks", response="WebhookDeliveryOut", status=202,
              errors_=(401, 404, 409))
def replay_webhook_delivery(call: Call, delivery_id: str) -> WebhookDeliveryOut:
    from chalicelib.webhooks import service

    return service.replay_delivery(get_repository(), call.merchant_id, delivery_id)


@routes.route("/v1/webhook/replay", "POST", summary="Send again every delivery created in a time range (at most 7 days "
              "and 1000 deliveries)", tag="webhooks", body="WebhookReplayRange", response="WebhookReplayResult",
              status=202, errors_=(400, 401, 409, 413, 415, 422))
def replay_webhook_range(call: Call) -> WebhookReplayResult:
    from chalicelib.webhooks import service

    return service.replay_range(get_repository(), call.merchant_id, call.body)


@blueprint.lambda_function(name="webhook_sender")
@flushes_metrics
def webhook_sender(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Merchant webhooks from the table stream. Failed POSTs are retried by webhook_retries."""
    from chalicelib.webhooks.delivery import handle_stream_event

    return handle_stream_event(event, context)


@blueprint.schedule(Rate(1, unit=Rate.MINUTES), name="webhook_retries")
@flushes_metrics
def webhook_retries(event: Any) -> dict[str, Any]:
    """Webhook deliveries whose next attempt is due (backoff over 24 h), and held ones of paused endpoints."""
    from chalicelib.webhooks.delivery import run_retries

    return run_retries(event.context)
