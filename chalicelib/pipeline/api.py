"""The table-stream consumer: geofencing, ETAs, transitions and notifications for every ping.

Declared as a plain Lambda function: its event source mapping (filters, ReportBatchItemFailures, bisect on error,
bounded retries, SQS on-failure destination) lives in infra/resources.json, which @on_dynamodb_record cannot
express. The local stream runner calls the same function with the same event shape.
"""

from __future__ import annotations

from typing import Any

from chalice.app import Blueprint

from chalicelib.core.observability import flushes_metrics

blueprint = Blueprint(__name__)


@blueprint.lambda_function(name="stream_pipeline")
@flushes_metrics
def stream_pipeline(event: dict[str, Any], context: Any) -> dict[str, Any]:
    from chalicelib.pipeline.service import handle_stream_event

    return handle_stream_event(event, context)
