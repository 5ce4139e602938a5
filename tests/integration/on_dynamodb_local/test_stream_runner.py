"""The local stream runner on DynamoDB Local's stream: tests/integration/test_stream_runner.py again, plus what
only the real engine shows (cancelled transactions lose nothing, the deployed filters drop what Lambda drops)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from infra.local.streams import RunnerConfig, StreamRunner, mapping_config
from tests.integration.test_stream_runner import *  # noqa: F403  (re-collected here on purpose)
from tests.integration.test_stream_runner import TABLE, put  # and its `table` fixture, through the line above


def numbers(event: dict[str, Any]) -> list[int]:
    return [int(r["dynamodb"]["NewImage"]["n"]["N"]) for r in event["Records"]]


def test_records_after_a_cancelled_transaction_still_arrive(table: Any, tmp_path: Any) -> None:
    """A cancelled transaction changes nothing, not even the stream a runner already follows (moto's server
    swapped in a restored table copy there, and the runner used to re-open idle shards to cope)."""
    import boto3

    seen: list[int] = []
    follow = StreamRunner(table, boto3.client("dynamodbstreams"), TABLE["name"],
                          lambda event, ctx: seen.extend(numbers(event)), tmp_path / "cp.json",
                          tmp_path / "dlq.jsonl", RunnerConfig(poll_interval_s=0))
    put(table, 1)
    assert follow.poll_once() == 1
    with pytest.raises(table.exceptions.TransactionCanceledException):
        table.transact_write_items(TransactItems=[
            {"Put": {"TableName": TABLE["name"], "Item": {"PK": {"S": "K#1"}, "SK": {"S": "X"}, "n": {"N": "9"}},
                     "ConditionExpression": "attribute_not_exists(PK)"}}])
    put(table, 2)
    put(table, 3)
    while follow.poll_once():
        pass
    assert seen == [1, 2, 3]


def test_concurrent_writes_survive_cancelled_transactions_and_all_reach_the_stream(table: Any, tmp_path: Any) -> None:
    """What moto lost (issue 12): writes acknowledged while other transactions were cancelled."""
    import boto3

    writers, per_writer = 4, 50

    def write(offset: int) -> None:
        client = boto3.client("dynamodb")
        for n in range(offset, offset + per_writer):
            put(client, n)
            with pytest.raises(client.exceptions.TransactionCanceledException):
                client.transact_write_items(TransactItems=[{"Put": {
                    "TableName": TABLE["name"], "Item": {"PK": {"S": f"K#{n}"}, "SK": {"S": "X"}, "n": {"N": "-1"}},
                    "ConditionExpression": "attribute_not_exists(PK)"}}])

    threads = [threading.Thread(target=write, args=(w * 1000,)) for w in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    stored = {int(i["n"]["N"]) for page in table.get_paginator("scan").paginate(TableName=TABLE["name"])
              for i in page["Items"]}
    expected = {w * 1000 + k for w in range(writers) for k in range(per_writer)}
    assert stored == expected
    seen: list[int] = []
    run = StreamRunner(table, boto3.client("dynamodbstreams"), TABLE["name"],
                       lambda event, ctx: seen.extend(numbers(event)), tmp_path / "cp.json",
                       tmp_path / "dlq.jsonl", RunnerConfig(poll_interval_s=0))
    while run.poll_once():
        pass
    assert sorted(seen) == sorted(expected)  # one INSERT each, no record of a cancelled transaction


def test_the_runner_drops_what_the_deployed_filter_drops(table: Any, tmp_path: Any) -> None:
    import boto3

    name = TABLE["name"]
    table.put_item(TableName=name, Item={"PK": {"S": "DRIVER#d"}, "SK": {"S": "PING#1"}})           # kept
    table.put_item(TableName=name, Item={"PK": {"S": "ROUTE#r"}, "SK": {"S": "ROUTE"}})             # no pattern
    table.put_item(TableName=name, Item={"PK": {"S": "SHIPMENT#s"}, "SK": {"S": "EVENT#1"},
                                         "type": {"S": "note"}})                                    # type not listed
    table.put_item(TableName=name, Item={"PK": {"S": "SHIPMENT#s"}, "SK": {"S": "EVENT#2"},
                                         "type": {"S": "approaching"}})                             # kept
    table.delete_item(TableName=name, Key={"PK": {"S": "DRIVER#d"}, "SK": {"S": "PING#1"}})         # REMOVE
    delivered: list[tuple[str, str]] = []
    config = mapping_config("StreamPipelineEventSourceMapping")
    config.poll_interval_s = 0
    run = StreamRunner(table, boto3.client("dynamodbstreams"), name,
                       lambda event, ctx: delivered.extend((r["eventName"], r["dynamodb"]["Keys"]["SK"]["S"])
                                                           for r in event["Records"]),
                       tmp_path / "cp.json", tmp_path / "dlq.jsonl", config)
    while run.poll_once():
        pass
    assert delivered == [("INSERT", "PING#1"), ("INSERT", "EVENT#2")]
    assert run.filtered_out == 3
    # The checkpoint moved past the dropped records too: a restart offers nothing again.
    again = StreamRunner(table, boto3.client("dynamodbstreams"), name, lambda event, ctx: delivered.append(("", "")),
                         tmp_path / "cp.json", tmp_path / "dlq.jsonl", config)
    assert again.poll_once() == 0
