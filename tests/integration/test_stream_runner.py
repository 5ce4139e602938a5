"""The local stream runner delivers Lambda-shaped events, retries reported failures and checkpoints."""

from __future__ import annotations

import json
import uuid

import boto3
import pytest
from moto import mock_aws

from infra.local.resources import create_table
from infra.local.streams import RunnerConfig, StreamRunner

TABLE = {"name": ""}


@pytest.fixture()
def table():
    # moto's state is shared with the session's mock, so each test gets its own table (and stream).
    TABLE["name"] = f"stream-test-{uuid.uuid4().hex[:8]}"
    with mock_aws():
        client = boto3.client("dynamodb")
        create_table(client, TABLE["name"])
        yield client
        client.delete_table(TableName=TABLE["name"])  # the session's other tests list the tables


def put(client, n: int) -> None:
    client.put_item(TableName=TABLE["name"], Item={"PK": {"S": f"K#{n}"}, "SK": {"S": "X"}, "n": {"N": str(n)}})


def runner(client, handler, tmp_path, retries: int = 2) -> StreamRunner:
    return StreamRunner(client, boto3.client("dynamodbstreams"), TABLE["name"], handler, tmp_path / "cp.json",
                        tmp_path / "dlq.jsonl", RunnerConfig(max_retry_attempts=retries, poll_interval_s=0))


def test_events_have_the_lambda_shape_and_checkpoint_survives_restart(table, tmp_path):
    seen: list[dict] = []
    put(table, 1)
    put(table, 2)
    first = runner(table, lambda event, ctx: seen.append(event), tmp_path)
    assert first.poll_once() == 2
    record = seen[0]["Records"][0]
    assert set(record) == {"eventID", "eventName", "eventVersion", "eventSource", "awsRegion", "dynamodb",
                           "eventSourceARN"}
    assert record["eventSource"] == "aws:dynamodb" and record["eventName"] == "INSERT"
    assert record["dynamodb"]["NewImage"]["n"] == {"N": "1"}
    assert isinstance(record["dynamodb"]["ApproximateCreationDateTime"], int)
    put(table, 3)
    restarted = runner(table, lambda event, ctx: seen.append(event), tmp_path)
    assert restarted.poll_once() == 1  # only the new record, not a replay
    assert seen[-1]["Records"][0]["dynamodb"]["NewImage"]["n"] == {"N": "3"}


def test_reported_failures_are_retried_from_the_first_failed_record(table, tmp_path):
    for n in range(1, 5):
        put(table, n)
    calls: list[list[str]] = []
    failed_once: set[str] = set()

    def handler(event, ctx):
        numbers = [r["dynamodb"]["NewImage"]["n"]["N"] for r in event["Records"]]
        calls.append(numbers)
        failures = []
        for r in event["Records"]:
            n = r["dynamodb"]["NewImage"]["n"]["N"]
            if n == "3" and n not in failed_once:
                failed_once.add(n)
                failures.append({"itemIdentifier": r["dynamodb"]["SequenceNumber"]})
        return {"batchItemFailures": failures}

    runner(table, handler, tmp_path).poll_once()
    assert calls == [["1", "2", "3", "4"], ["3", "4"]]


def test_a_record_that_keeps_failing_goes_to_the_dead_letter_file(table, tmp_path):
    put(table, 1)
    put(table, 2)
    calls: list[int] = []

    def handler(event, ctx):
        calls.append(len(event["Records"]))
        bad = [r for r in event["Records"] if r["dynamodb"]["NewImage"]["n"]["N"] == "1"]
        return {"batchItemFailures": [{"itemIdentifier": r["dynamodb"]["SequenceNumber"]} for r in bad]}

    run = runner(table, handler, tmp_path, retries=2)
    run.poll_once()
    parked = [json.loads(line) for line in (tmp_path / "dlq.jsonl").read_text().splitlines()]
    assert [p["record"]["dynamodb"]["NewImage"]["n"]["N"] for p in parked] == ["1"]
    assert calls == [2, 2, 2, 1]  # first try + 2 retries, then the rest of the batch


def test_the_batching_window_fills_batches_only_while_there_is_a_backlog(table, tmp_path):
    """MaximumBatchingWindowInSeconds: records read in one poll wait for more within the window; a poll that
    finds the shard caught up delivers what is pending at once; a full batch goes at once; the checkpoint
    never passes a record still pending."""
    batches: list[list[int]] = []

    def keep(event, ctx):
        batches.append([int(r["dynamodb"]["NewImage"]["n"]["N"]) for r in event["Records"]])

    config = RunnerConfig(batch_size=4, batching_window_s=60, poll_interval_s=0)
    run = StreamRunner(table, boto3.client("dynamodbstreams"), TABLE["name"], keep, tmp_path / "cp.json",
                       tmp_path / "dlq.jsonl", config)
    for n in range(1, 4):
        put(table, n)
    assert run.poll_once() == 3
    assert batches == []  # 3 < 4 and the window is open: waiting for more
    assert run.checkpoints == {}  # nothing delivered, nothing passed
    for n in range(4, 7):
        put(table, n)
    assert run.poll_once() == 3
    assert batches == [[1, 2, 3, 4]]  # full: delivered at once; 5 and 6 still wait
    assert run.poll_once() == 0  # the shard is caught up: what waits goes now
    assert batches == [[1, 2, 3, 4], [5, 6]]
    restarted = StreamRunner(table, boto3.client("dynamodbstreams"), TABLE["name"], keep, tmp_path / "cp.json",
                             tmp_path / "dlq.jsonl", config)
    assert restarted.poll_once() == 0  # the checkpoint is past everything delivered


def test_raw_records_are_what_lambda_delivers(table, tmp_path):
    """The runner takes GetRecords' records from the wire: binaries stay base64 text, as in Lambda's event."""
    seen: list[dict] = []
    table.put_item(TableName=TABLE["name"], Item={"PK": {"S": "K#b"}, "SK": {"S": "X"}, "blob": {"B": b"\x00\x01"}})
    run = runner(table, lambda event, ctx: seen.extend(event["Records"]), tmp_path)
    assert run.poll_once() == 1
    assert seen[0]["dynamodb"]["NewImage"]["blob"] == {"B": "AAE="}
    assert isinstance(seen[0]["dynamodb"]["ApproximateCreationDateTime"], int)
