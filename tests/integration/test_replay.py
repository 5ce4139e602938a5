"""The replay commands (infra/replay.py) against in-process moto: nothing parked is lost, and replaying
twice sends nothing twice."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import boto3
from botocore.stub import Stubber

from tests.conftest import TEST_ENV
from tests.integration.test_notifications import _sms_to
from tests.integration.test_scheduled import _ledger_states, _out_for_delivery, _policy, zone_at_hour


def _records_of(shipment_id: str) -> tuple[str, str, list[dict[str, Any]]]:
    """The stream's records of one shipment's timeline: (stream arn, shard id, records)."""
    streams = boto3.client("dynamodbstreams")
    arn = boto3.client("dynamodb").describe_table(TableName=TEST_ENV["DOORSTEP_TABLE_NAME"])["Table"]["LatestStreamArn"]
    for shard in streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]:
        iterator = streams.get_shard_iterator(StreamArn=arn, ShardId=shard["ShardId"],
                                              ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        found: list[dict[str, Any]] = []
        while iterator:
            page = streams.get_records(ShardIterator=iterator, Limit=1000)
            if not page["Records"]:
                break
            found += [r for r in page["Records"] if r["dynamodb"]["Keys"]["PK"]["S"] == f"SHIPMENT#{shipment_id}"]
            iterator = page.get("NextShardIterator")
        if found:
            return arn, shard["ShardId"], found
    raise AssertionError("no stream records for the shipment")


def test_a_parked_stream_batch_is_read_again_from_the_stream_and_replayed_once(merchant):
    from chalicelib.pipeline.api import stream_pipeline
    from infra.replay import replay_queue

    _policy(merchant, quiet_hours=None, events={"out_for_delivery": ["sms"]})
    phone = "+14155550501"
    shipment = _out_for_delivery(merchant, phone, zone_at_hour(12))
    arn, shard, records = _records_of(shipment["id"])  # the stream function never ran: as if it had failed
    info = {"streamArn": arn, "shardId": shard, "startSequenceNumber": records[0]["dynamodb"]["SequenceNumber"],
            "endSequenceNumber": records[-1]["dynamodb"]["SequenceNumber"], "batchSize": len(records)}
    sqs = boto3.client("sqs")
    queue = sqs.create_queue(QueueName="doorstep-test-dlq")["QueueUrl"]
    for _ in range(2):  # parked twice (a retried batch): replaying both must still send once
        sqs.send_message(QueueUrl=queue, MessageBody=json.dumps({"requestContext": {}, "DDBStreamBatchInfo": info}))
    seen: list[int] = []

    def invoke(event: dict[str, Any], context: Any) -> Any:
        seen.append(len(event["Records"]))
        return stream_pipeline(event, context)

    done, failing = replay_queue(sqs, boto3.client("dynamodbstreams"), queue, invoke, "us-east-1")
    # The batch is the shard's range: the shipment's records and whatever else landed between them.
    assert (done, failing) == (2, 0) and len(seen) == 2 and seen[0] == seen[1] >= len(records)
    assert len(_sms_to(phone)) == 1 and _ledger_states(shipment["id"]) == {"out_for_delivery#sms": "sent"}
    assert sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=0).get("Messages") is None


def test_a_local_dead_letter_file_keeps_only_what_still_fails(tmp_path):
    from infra.replay import replay_file

    records = [{"eventID": str(n), "dynamodb": {"SequenceNumber": str(n)}} for n in (1, 2)]
    path = tmp_path / "dlq.jsonl"
    path.write_text("".join(json.dumps({"failed_at": 0, "record": r}) + "\n" for r in records))
    calls: list[str] = []

    def handler(event: dict[str, Any], context: Any) -> Any:
        record = event["Records"][0]
        calls.append(record["eventID"])
        if record["eventID"] == "2" and calls.count("2") == 1:
            raise RuntimeError("still broken")
        return {"batchItemFailures": []}

    assert replay_file(path, handler) == (1, 1)
    assert [json.loads(line)["record"]["eventID"] for line in path.read_text().splitlines()] == ["2"]
    assert replay_file(path, handler) == (1, 0) and path.read_text() == ""
    assert replay_file(tmp_path / "absent.jsonl", handler) == (0, 0)


def test_a_permanently_failed_notification_is_replayed_once_on_request(merchant):
    from chalicelib.notifications import service as notifications_service
    from chalicelib.storage import get_repository
    from infra.replay import replay_notifications

    _policy(merchant, quiet_hours=None, events={"out_for_delivery": ["sms"]})
    phone = "+14155550502"
    shipment = _out_for_delivery(merchant, phone, zone_at_hour(12))
    repo = get_repository()
    _, notifier = notifications_service.notify_parts(repo)
    image = {"merchant_id": merchant.id, "shipment_id": shipment["id"], "type": "out_for_delivery",
             "occurred_at": datetime.now(UTC).isoformat()}
    with Stubber(notifier._client("sns")) as stub:
        stub.add_client_error("publish", service_error_code="InvalidParameter", http_status_code=400)
        notifications_service.notify(repo, image)
    assert _ledger_states(shipment["id"]) == {"out_for_delivery#sms": "failed_permanent"}
    assert _sms_to(phone) == []
    (line,) = replay_notifications(shipment["id"])
    assert line.endswith(": sent"), line
    assert len(_sms_to(phone)) == 1 and _ledger_states(shipment["id"]) == {"out_for_delivery#sms": "sent"}
    assert replay_notifications(shipment["id"]) == []  # nothing failed any more
