"""The Lambda proxy path with a real API Gateway event shape, and what the logs and metrics carry."""

from __future__ import annotations

import json
from pathlib import Path

from tests.integration.helpers import iso, make_driver, now_ms, shipment_body

EVENTS = Path(__file__).resolve().parents[2] / "events"


def test_api_gateway_proxy_event_reaches_the_ping_handler(merchant, chalice_app):
    driver = make_driver(merchant)
    event = json.loads((EVENTS / "apigw_post_pings.json").read_text())
    event["headers"]["Authorization"] = f"Bearer {driver['token']}"
    event["body"] = event["body"].replace("REPLACED_BY_TEST", iso(now_ms() - 1000))
    response = chalice_app(event, None)
    assert response["statusCode"] == 200, response
    assert json.loads(response["body"])["accepted"] == 1


def test_logs_have_correlation_ids_and_no_personal_data(merchant, chalice_app, monkeypatch):
    import io

    from chalicelib.core.observability import logger, metrics

    emitted: list[dict] = []
    monkeypatch.setattr(metrics, "flush_metrics", lambda *a, **k: (emitted.append(dict(metrics.metric_set)),
                                                                   metrics.metric_set.clear()))
    buffer = io.StringIO()
    previous_stream = logger.registered_handler.setStream(buffer)
    try:
        merchant.call("POST", "/v1/shipments", shipment_body(7))
        driver = make_driver(merchant, "Zebedee Quux")
        event = json.loads((EVENTS / "apigw_post_pings.json").read_text())
        event["headers"]["Authorization"] = f"Bearer {driver['token']}"
        event["body"] = event["body"].replace("REPLACED_BY_TEST", iso(now_ms() - 1000))
        chalice_app(event, None)
        out = buffer.getvalue()
    finally:
        logger.registered_handler.setStream(previous_stream)
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    requests = [line for line in lines if line.get("message") == "request"]
    assert requests and all("status" in r and "latency_ms" in r for r in requests)
    assert any(r.get("correlation_id") == "c6af9ac6-7b61-11e6-9a41-93e8deadbeef" for r in requests)
    for private in ("Lovelace", "+1415", "ada@example.com", "Main St", "Zebedee", "Gate code"):
        assert private not in out
    assert any("PingsAccepted" in m for m in emitted)



def test_every_lambda_function_emits_its_metrics_when_it_returns_or_raises(chalice_app, monkeypatch):
    from datetime import UTC, datetime

    import pytest

    import app as app_module
    from chalicelib.core import observability
    from chalicelib.pipeline.api import stream_pipeline
    from infra.local.functions import handler_of
    from infra.local.scheduler import scheduled_event

    flushed: list[str] = []
    monkeypatch.setattr(observability, "flush_metrics", lambda: flushed.append("flush"))

    @observability.flushes_metrics
    def failing(event, context):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        failing({}, None)
    assert flushed == ["flush"]
    # The stream and scheduled functions have no middleware to flush for them: each does it itself.
    ignored = {"Records": [{"eventID": "1", "eventName": "REMOVE", "eventVersion": "1.1", "eventSource": "aws:dynamodb",
                            "awsRegion": "us-east-1", "dynamodb": {"Keys": {"PK": {"S": "X"}, "SK": {"S": "Y"}},
                                                                   "SequenceNumber": "1", "SizeBytes": 1,
                                                                   "StreamViewType": "NEW_AND_OLD_IMAGES"}}]}
    stream_pipeline(ignored, None)
    handler_of(app_module.app, "webhook_sender")(ignored, None)
    for name in ("release_deferred_notifications", "day_before_reminders", "webhook_retries"):
        handler_of(app_module.app, name)(scheduled_event(name, datetime.now(UTC)), None)
    assert len(flushed) == 1 + 5
