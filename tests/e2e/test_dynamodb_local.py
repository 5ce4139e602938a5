"""The local stack keeps its data in DynamoDB Local, the engine AWS ships; moto holds no table at all."""

from __future__ import annotations

from typing import Any

import boto3
import pytest

from infra.local.stack import LocalStack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _client(service: str, url: str) -> Any:
    return boto3.client(service, endpoint_url=url, region_name="us-east-1", aws_access_key_id="testing",
                        aws_secret_access_key="testing", aws_session_token="testing")


def test_the_app_writes_to_dynamodb_local_and_moto_has_no_table(stack: LocalStack, demo: dict[str, Any]) -> None:
    table = stack.app_env["DOORSTEP_TABLE_NAME"]
    assert demo["dynamodb_url"] == stack.dynamodb_url
    assert _client("dynamodb", stack.moto_url).list_tables()["TableNames"] == []
    ddb = _client("dynamodb", stack.dynamodb_url)
    assert ddb.list_tables()["TableNames"] == [table]
    # The demo seeding went through the API: its shipments are in DynamoDB Local.
    shipment_id = demo["shipment_ids"][0]
    items = ddb.query(TableName=table, KeyConditionExpression="PK = :pk",
                      ExpressionAttributeValues={":pk": {"S": f"SHIPMENT#{shipment_id}"}})["Items"]
    assert items, f"shipment {shipment_id} is not in DynamoDB Local"
    # The real engine refuses what AWS refuses (moto stored it): a number below DynamoDB's 1e-130.
    with pytest.raises(ddb.exceptions.ClientError, match="ValidationException"):
        ddb.put_item(TableName=table, Item={"PK": {"S": "E2E#tiny"}, "SK": {"S": "X"}, "n": {"N": "1e-200"}})


def test_the_stream_runner_follows_dynamodb_locals_stream(stack: LocalStack, demo: dict[str, Any]) -> None:
    """Starting the demo route wrote out_for_delivery events; the pipeline (fed by the runner from DynamoDB
    Local's stream) turned them into notifications in the ledger."""
    import time

    table = stack.app_env["DOORSTEP_TABLE_NAME"]
    ddb = _client("dynamodb", stack.dynamodb_url)
    shipment_id = demo["shipment_ids"][0]
    deadline = time.monotonic() + 20
    ledger: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not ledger:
        ledger = ddb.query(TableName=table, KeyConditionExpression="PK = :pk AND begins_with(SK, :n)",
                           ExpressionAttributeValues={":pk": {"S": f"SHIPMENT#{shipment_id}"},
                                                      ":n": {"S": "NOTIFY#"}})["Items"]
        time.sleep(0.2)
    assert ledger, "no notification ledger entry: the stream runner did not deliver the route's events"
