"""The table's stream run into the stream pipeline in process, as Lambda would (one runner per test)."""

from __future__ import annotations

from pathlib import Path

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


def drain(run: StreamRunner) -> None:
    """Deliver every record written so far (and those the deliveries write), batch by batch."""
    while run.poll_once():
        pass
