"""The table's stream run into the stream pipeline in process, as Lambda would (one runner per test)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import boto3

from infra.local.streams import RunnerConfig, StreamRunner
from tests.conftest import TEST_ENV


def pipeline_runner(tmp_path: Path) -> StreamRunner:
    """A runner of the stream pipeline positioned at the stream's end (LATEST), before the test writes."""
    from chalicelib.pipeline.api import stream_pipeline

    run = StreamRunner(boto3.client("dynamodb"), boto3.client("dynamodbstreams"), TEST_ENV["DOORSTEP_TABLE_NAME"],
                       stream_pipeline, tmp_path / "cp.json", tmp_path / "dlq.jsonl",
                       RunnerConfig(starting_position="LATEST", poll_interval_s=0))
    run.refresh_shards()
    return run


def recording_pipeline_runner(tmp_path: Path) -> StreamRunner:
    """`pipeline_runner` that also keeps every batch it delivers in `run.events`, so a test can deliver them all
    again as Lambda may."""
    from chalicelib.pipeline.api import stream_pipeline

    run = pipeline_runner(tmp_path)
    events: list[dict[str, Any]] = []

    def handler(event: dict[str, Any], context: Any) -> Any:
        events.append(event)
        return stream_pipeline(event, context)

    run.handler = handler
    run.events = events  # type: ignore[attr-defined]
    return run


def drain(run: StreamRunner) -> None:
    """Deliver every record written so far (and those the deliveries write), batch by batch."""
    while run.poll_once():
        pass


def record_collector(tmp_path: Path) -> tuple[StreamRunner, list[dict[str, Any]]]:
    """A runner positioned at the stream's end that only collects the records it delivers (the test hands them to
    the stream functions itself, once or twice, in order or not), and the list they go to."""
    records: list[dict[str, Any]] = []

    def keep(event: dict[str, Any], context: Any) -> dict[str, Any]:
        records.extend(event["Records"])
        return {"batchItemFailures": []}

    run = StreamRunner(boto3.client("dynamodb"), boto3.client("dynamodbstreams"), TEST_ENV["DOORSTEP_TABLE_NAME"],
                       keep, tmp_path / "cp.json", tmp_path / "dlq.jsonl",
                       RunnerConfig(starting_position="LATEST", poll_interval_s=0, batch_size=1000))
    run.refresh_shards()
    return run, records


def webhook_runner(client: Any, tmp_path: Path) -> StreamRunner:
    """A runner positioned at the stream's end that delivers to the webhook_sender Lambda (through chalice's test
    client), 25 records a batch; `run.batches` keeps every batch, so a test can deliver them again."""
    batches: list[dict[str, Any]] = []

    def handler(event: dict[str, Any], context: Any) -> Any:
        batches.append(event)
        return client.lambda_.invoke("webhook_sender", event).payload

    run = StreamRunner(boto3.client("dynamodb"), boto3.client("dynamodbstreams"), TEST_ENV["DOORSTEP_TABLE_NAME"],
                       handler, tmp_path / "hcp.json", tmp_path / "hdlq.jsonl",
                       RunnerConfig(starting_position="LATEST", poll_interval_s=0, batch_size=25))
    run.refresh_shards()
    run.batches = batches  # type: ignore[attr-defined]
    return run
