"""The table-stream consumer: geofencing, ETAs, transitions and notifications for every ping.

Declared as a plain Lambda function: its event source mapping (filters, ReportBatchItemFailures, bisect on error,
bounded retries, SQS on-failure destination) lives in infra/resources.json, which @on_dynamodb_record cannot
express. The local stream runner calls the same function with the same event shape.

`recalibrate_eta_windows` (daily) sets each merchant's ETA window margin from its own arrivals of the last 30
days (chalicelib/pipeline/honesty.py), so its windows hold 8 arrivals in 10 and no wider than that needs.
"""

from __future__ import annotations

from typing import Any

from chalice.app import Blueprint, Rate

from chalicelib.core.observability import flushes_metrics

blueprint = Blueprint(__name__)


@blueprint.lambda_function(name="stream_pipeline")
@flushes_metrics
def stream_pipeline(event: dict[str, Any], context: Any) -> dict[str, Any]:
    from chalicelib.pipeline.service import handle_stream_event

    return handle_stream_event(event, context)


@blueprint.schedule(Rate(1, unit=Rate.DAYS), name="recalibrate_eta_windows")
@flushes_metrics
def recalibrate_eta_windows(event: Any) -> dict[str, Any]:
    from datetime import UTC, datetime

    from chalicelib.pipeline.honesty import recalibrate_all
    from chalicelib.storage import get_repository

    margins = recalibrate_all(get_repository(), datetime.now(UTC).date())
    return {"merchants": len(margins), "calibrated": sum(m is not None for m in margins.values())}
