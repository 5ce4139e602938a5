"""The deployable template and the local resources built from it.

The packaging tests run `chalice package` plus cfn-lint once per module
(about 5-60 s, depending on the wheel cache), so they are marked `slow`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from infra.local.resources import (
    BUCKET_LOGICAL_ID,
    TABLE_LOGICAL_ID,
    create_bucket,
    create_table,
    load_table_definition,
)

PROJECT_DIR = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def packaged_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("package")
    proc = subprocess.run(
        [sys.executable, "-m", "infra.package", "--stage", "dev", "--out", str(out)],
        check=False,
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"package/lint failed:\n{proc.stdout}\n{proc.stderr}"
    # chalice skips a dependency with no wheel for Lambda's glibc and still succeeds: that must fail here.
    assert "Could not install dependencies" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    return out / "sam.json"


def test_the_package_holds_every_dependency_and_fits_lambda(packaged_file: Path) -> None:
    import zipfile

    from infra.package import LAMBDA_UNZIPPED_LIMIT_BYTES

    with zipfile.ZipFile(packaged_file.parent / "deployment.zip") as bundle:
        infos = bundle.infolist()
    tops = {info.filename.split("/")[0] for info in infos}
    assert {"vroom", "numpy", "pandas", "pydantic_core", "h3", "chalicelib"} <= tops  # the route solver's too
    assert not [i.filename for i in infos if "/tests/" in i.filename and not i.filename.startswith("chalicelib/")]
    assert sum(i.file_size for i in infos) < 0.8 * LAMBDA_UNZIPPED_LIMIT_BYTES  # room left under Lambda's limit


@pytest.fixture(scope="module")
def packaged(packaged_file: Path) -> dict[str, Any]:
    template: dict[str, Any] = json.loads(packaged_file.read_text())
    return template


@pytest.mark.slow
def test_table_is_packaged_with_stream_ttl_pitr_and_sse(
    packaged: dict[str, Any],
) -> None:
    table = packaged["Resources"][TABLE_LOGICAL_ID]
    props = table["Properties"]
    assert table["Type"] == "AWS::DynamoDB::Table"
    assert table["DeletionPolicy"] == table["UpdateReplacePolicy"] == "Retain"
    assert props["StreamSpecification"] == {"StreamViewType": "NEW_AND_OLD_IMAGES"}
    assert props["TimeToLiveSpecification"] == {
        "AttributeName": "expires_at",
        "Enabled": True,
    }
    assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert props["SSESpecification"]["SSEEnabled"] is True


@pytest.mark.slow
def test_bucket_is_private_and_encrypted(packaged: dict[str, Any]) -> None:
    props = packaged["Resources"][BUCKET_LOGICAL_ID]["Properties"]
    assert set(props["PublicAccessBlockConfiguration"].values()) == {True}
    assert len(props["PublicAccessBlockConfiguration"]) == 4
    assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"]


@pytest.mark.slow
def test_api_handler_is_wired_to_table_bucket_and_data_policy(
    packaged: dict[str, Any],
) -> None:
    resources = packaged["Resources"]
    variables = resources["APIHandler"]["Properties"]["Environment"]["Variables"]
    assert variables["DOORSTEP_TABLE_NAME"] == {"Ref": TABLE_LOGICAL_ID}
    assert variables["DOORSTEP_BUCKET_NAME"] == {"Ref": BUCKET_LOGICAL_ID}
    # The merge only adds to the role Chalice emits; a renamed role would
    # leave a Type-less stub behind, so check the real one carries the policy.
    role = resources["ApiHandlerRole"]
    assert role["Type"] == "AWS::IAM::Role"
    assert {"Ref": "DataAccessPolicy"} in role["Properties"]["ManagedPolicyArns"]


@pytest.mark.slow
def test_gateway_errors_use_the_api_error_shape(packaged: dict[str, Any]) -> None:
    body = packaged["Resources"]["RestAPI"]["Properties"]["DefinitionBody"]
    responses = body["x-amazon-apigateway-gateway-responses"]
    for kind in ("DEFAULT_4XX", "DEFAULT_5XX"):
        template = responses[kind]["responseTemplates"]["application/json"]
        # Substitute what API Gateway would, then it must be our JSON shape.
        rendered = template.replace("$context.error.responseType", kind).replace(
            "$context.error.messageString", '"Missing \\"token\\""'
        )
        assert json.loads(rendered) == {"error": {"code": kind, "message": 'Missing "token"', "details": []}}


@pytest.mark.slow
def test_an_unknown_path_is_the_json_404_on_api_gateway_too(packaged: dict[str, Any]) -> None:
    from chalicelib.http.errors import unknown_path_response

    body = packaged["Resources"]["RestAPI"]["Properties"]["DefinitionBody"]
    missing = body["x-amazon-apigateway-gateway-responses"]["MISSING_AUTHENTICATION_TOKEN"]
    assert missing["statusCode"] == "404"
    assert missing["responseParameters"] == {"gatewayresponse.header.Content-Type": "'application/json'"}
    assert json.loads(missing["responseTemplates"]["application/json"]) == unknown_path_response().body


@pytest.mark.slow
def test_gateway_compresses_the_tracking_page_and_serves_no_text_as_binary(packaged: dict[str, Any]) -> None:
    api = packaged["Resources"]["RestAPI"]
    # Leaflet is ~145 KB raw, ~43 KB gzipped: API Gateway compresses answers of 1 KB and more.
    assert api["Properties"]["MinimumCompressionSize"] == 1024
    binary = api["Properties"]["DefinitionBody"].get("x-amazon-apigateway-binary-media-types", [])
    assert not [t for t in binary if t.startswith(("text/", "application/json", "image/svg", "*/*"))], binary


@pytest.mark.slow
def test_packaged_template_has_no_cfn_lint_errors(packaged_file: Path) -> None:
    proc = subprocess.run(
        [_cfn_lint(), "--format", "json", "--", str(packaged_file)],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "AWS_DEFAULT_REGION": "us-east-1"},
    )
    # Exit status is a bit set: 1 = cfn-lint itself failed, 2 = errors, 4 = warnings, 8 = informational.
    assert proc.returncode & 0b11 == 0, f"{proc.stdout}\n{proc.stderr}"
    errors = [m for m in json.loads(proc.stdout) if m["Level"] == "Error"]
    assert errors == [], json.dumps(errors, indent=2)


def _cfn_lint() -> str:
    beside = Path(sys.executable).parent / "cfn-lint"
    found = str(beside) if beside.exists() else shutil.which("cfn-lint")
    assert found, "cfn-lint not installed; install requirements-dev.txt"
    return found


PIPELINE = "StreamPipeline"
PIPELINE_ROLE = "StreamPipelineRole"
PIPELINE_MAPPING = "StreamPipelineEventSourceMapping"
PIPELINE_DLQ = "PipelineDeadLetterQueue"


@pytest.mark.slow
def test_stream_pipeline_has_env_sizing_and_stream_role(packaged: dict[str, Any]) -> None:
    resources = packaged["Resources"]
    function = resources[PIPELINE]
    assert function["Type"] == "AWS::Serverless::Function"
    props = function["Properties"]
    assert props["Handler"] == "chalicelib.pipeline.api.stream_pipeline"
    assert (props["MemorySize"], props["Timeout"]) == (256, 60)
    variables = props["Environment"]["Variables"]
    assert variables["DOORSTEP_TABLE_NAME"] == {"Ref": TABLE_LOGICAL_ID}
    assert variables["DOORSTEP_BUCKET_NAME"] == {"Ref": BUCKET_LOGICAL_ID}
    # Chalice's own variables survive the merge (dicts merge, lists replace).
    assert variables["DOORSTEP_STAGE"] == "dev"
    assert props["Role"] == {"Fn::GetAtt": [PIPELINE_ROLE, "Arn"]}
    role = resources[PIPELINE_ROLE]
    assert role["Type"] == "AWS::IAM::Role"
    assert {"Ref": "DataAccessPolicy"} in role["Properties"]["ManagedPolicyArns"]
    assert {"Ref": "StreamReadPolicy"} in role["Properties"]["ManagedPolicyArns"]
    assert {"Ref": "PipelineDeadLetterSendPolicy"} in role["Properties"]["ManagedPolicyArns"]
    assert role["Properties"]["Policies"], "Chalice's logs policy must survive the merge"
    (send,) = resources["PipelineDeadLetterSendPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert send["Action"] == "sqs:SendMessage"
    assert send["Resource"] == {"Fn::GetAtt": [PIPELINE_DLQ, "Arn"]}


@pytest.mark.slow
def test_stream_mapping_reports_item_failures_bisects_bounds_retries_and_dead_letters(
    packaged: dict[str, Any],
) -> None:
    resources = packaged["Resources"]
    mapping = resources[PIPELINE_MAPPING]
    assert mapping["Type"] == "AWS::Lambda::EventSourceMapping"
    props = mapping["Properties"]
    assert props["EventSourceArn"] == {"Fn::GetAtt": [TABLE_LOGICAL_ID, "StreamArn"]}
    assert props["FunctionName"] == {"Ref": PIPELINE}
    assert props["StartingPosition"] == "LATEST"
    assert "ReportBatchItemFailures" in props["FunctionResponseTypes"]
    assert props["BisectBatchOnFunctionError"] is True
    # -1 (the default) would retry a poison batch until the record expires from the stream.
    assert 0 <= props["MaximumRetryAttempts"] <= 10
    assert 60 <= props["MaximumRecordAgeInSeconds"] <= 24 * 3600
    # Above 1, Lambda keeps order only per item (PK and SK), and every ping is its own item: a
    # driver's pings could run in two batches at once, and the geofence drops a fix older than
    # the last one it saw as late.
    assert props["ParallelizationFactor"] == 1
    destination = props["DestinationConfig"]["OnFailure"]["Destination"]
    assert destination == {"Fn::GetAtt": [PIPELINE_DLQ, "Arn"]}
    queue = resources[PIPELINE_DLQ]
    assert queue["Type"] == "AWS::SQS::Queue"
    assert queue["Properties"]["SqsManagedSseEnabled"] is True
    assert queue["Properties"]["MessageRetentionPeriod"] == 14 * 24 * 3600
    # Lambda checks the role can read the stream and send to the queue when the mapping is created.
    assert {PIPELINE_ROLE, "StreamReadPolicy", "PipelineDeadLetterSendPolicy"} <= set(mapping["DependsOn"])
    assert {"PipelineDeadLetterQueueUrl", "PipelineDeadLetterQueueArn"} <= set(packaged["Outputs"])


def _filter_matches(pattern: dict[str, Any], event: dict[str, Any]) -> bool:
    """Lambda event-filter semantics (infra/stream_filters.py, which the local stream runner can apply too)."""
    from infra.stream_filters import matches

    return matches(pattern, event)


@pytest.mark.parametrize(
    ("event_name", "sk", "to_status", "delivered"),
    [
        ("INSERT", "POINTS#1714000000000#0a1b2c3d", None, True),  # one accepted request's fixes
        ("MODIFY", "POINTS#1714000000000#0a1b2c3d", None, False),  # a racing retry overwrote the same chunk
        ("REMOVE", "POINTS#1714000000000#0a1b2c3d", None, False),  # TTL expiry
        ("INSERT", "PING#1714000000000", None, True),  # the one-item-per-fix format still in the stream
        ("MODIFY", "PING#1714000000000", None, False),
        ("MODIFY", "POSITION", None, False),  # ingest's latest position: the pipeline reads pings, not this
        ("INSERT", "SHIPMENT#s1", None, False),
        ("MODIFY", "SHIPMENT#s1", None, False),  # a status change arrives as its EVENT# insert
        ("INSERT", "ETA", None, False),  # the pipeline's own writes: route ETA item, driver state, counters
        ("MODIFY", "ETA", None, False),
        ("MODIFY", "GEOFENCE", None, False),
        ("MODIFY", "SPEED", None, False),
        ("REMOVE", "PING#1714000000000", None, False),  # TTL expiry
        ("INSERT", "EVENT#2024-04-25T00:00:00Z#e1", "arrived", False),  # the pipeline's own timeline writes
        ("INSERT", "EVENT#2024-04-25T00:00:00Z#e1", None, False),  # departed, dwell, delayed
        ("INSERT", "EVENT#2024-04-25T00:00:00Z#e1", "delivered", True),  # a stop done: the next ETAs move
        ("INSERT", "EVENT#2024-04-25T00:00:00Z#e1", "failed", True),
        ("INSERT", "EVENT#2024-04-25T00:00:00Z#e1", "approaching", True),  # notifies the recipient
        ("INSERT", "EVENT#2024-04-25T00:00:00Z#e1", "out_for_delivery", True),
        ("INSERT", "EVENT#2024-04-25T00:00:00Z#e1", "dwell", False),
        ("INSERT", "POSITIONS", None, False),
        ("INSERT", "DRIVER#d1", None, False),
        ("INSERT", "SHARD#1", None, False),  # learned statistics
    ],
)
def test_stream_filter_passes_only_what_the_pipeline_uses(event_name: str, sk: str, to_status: str | None,
                                                           delivered: bool) -> None:
    with (PROJECT_DIR / "infra" / "resources.json").open(encoding="utf-8") as fh:
        mapping = json.load(fh)["Resources"][PIPELINE_MAPPING]
    filters = mapping["Properties"]["FilterCriteria"]["Filters"]
    record: dict[str, Any] = {
        "eventName": event_name,
        "dynamodb": {"Keys": {"PK": {"S": "DRIVER#d1"}, "SK": {"S": sk}}},
    }
    if to_status is not None:
        record["dynamodb"]["NewImage"] = {"to_status": {"S": to_status}, "type": {"S": to_status}}
    # Lambda delivers a record when any filter matches
    assert any(_filter_matches(json.loads(f["Pattern"]), record) for f in filters) is delivered


@pytest.mark.slow
def test_stream_pipeline_alarms(packaged: dict[str, Any]) -> None:
    resources = packaged["Resources"]
    dlq = resources["PipelineDeadLetterQueueAlarm"]["Properties"]
    assert (dlq["Namespace"], dlq["MetricName"]) == ("AWS/SQS", "ApproximateNumberOfMessagesVisible")
    assert dlq["Dimensions"] == [{"Name": "QueueName", "Value": {"Fn::GetAtt": [PIPELINE_DLQ, "QueueName"]}}]
    assert (dlq["ComparisonOperator"], dlq["Threshold"]) == ("GreaterThanThreshold", 0)
    age = resources["StreamPipelineIteratorAgeAlarm"]["Properties"]
    assert (age["Namespace"], age["MetricName"], age["Statistic"]) == ("AWS/Lambda", "IteratorAge", "Maximum")
    assert age["Dimensions"] == [{"Name": "FunctionName", "Value": {"Ref": PIPELINE}}]
    assert (age["ComparisonOperator"], age["Threshold"], age["Period"]) == ("GreaterThanThreshold", 60000, 300)


@pytest.mark.slow
def test_webhook_functions_have_their_own_stream_mapping_schedule_and_least_privilege_roles(
    packaged: dict[str, Any],
) -> None:
    resources = packaged["Resources"]
    sender = resources["WebhookSender"]["Properties"]
    assert sender["Handler"] == "chalicelib.webhooks.api.webhook_sender" and sender["Timeout"] == 120
    assert sender["Environment"]["Variables"]["DOORSTEP_TABLE_NAME"] == {"Ref": TABLE_LOGICAL_ID}
    mapping = resources["WebhookSenderEventSourceMapping"]
    props = mapping["Properties"]
    # Its own consumer of the stream: a slow merchant endpoint never holds up the pipeline's batches.
    assert props["FunctionName"] == {"Ref": "WebhookSender"}
    assert props["EventSourceArn"] == {"Fn::GetAtt": [TABLE_LOGICAL_ID, "StreamArn"]}
    assert "ReportBatchItemFailures" in props["FunctionResponseTypes"]
    assert 0 <= props["MaximumRetryAttempts"] <= 10 and props["BisectBatchOnFunctionError"] is True
    assert props["DestinationConfig"]["OnFailure"]["Destination"] == {"Fn::GetAtt": ["WebhookDeadLetterQueue", "Arn"]}
    assert {"WebhookSenderRole", "StreamReadPolicy", "WebhookDeadLetterSendPolicy"} <= set(mapping["DependsOn"])
    retries = resources["WebhookRetries"]["Properties"]
    assert retries["Handler"] == "chalicelib.webhooks.api.webhook_retries"
    assert [e["Properties"]["Schedule"] for e in retries["Events"].values()] == ["rate(1 minute)"]
    email = {"Ref": "WebhookAlertEmailPolicy"}
    (statement,) = resources["WebhookAlertEmailPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert statement["Action"] == ["ses:SendEmail"]
    for role, extra in (("WebhookSenderRole", [{"Ref": "StreamReadPolicy"}, {"Ref": "WebhookDeadLetterSendPolicy"}]),
                        ("WebhookRetriesRole", [])):
        arns = resources[role]["Properties"]["ManagedPolicyArns"]
        assert resources[role]["Type"] == "AWS::IAM::Role"
        assert sorted(map(json.dumps, arns)) == sorted(map(json.dumps, [{"Ref": "DataAccessPolicy"}, email, *extra]))
    assert {"Ref": "WebhookAlertEmailPolicy"} not in resources["ApiHandlerRole"]["Properties"]["ManagedPolicyArns"]


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name, value in {
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_ACCOUNT_ID_ENDPOINT_MODE": "disabled",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    with mock_aws():
        yield


def _key_schema(keys: list[dict[str, str]]) -> list[tuple[str, str]]:
    return [(k["AttributeName"], k["KeyType"]) for k in keys]


def test_create_table_matches_template_and_is_idempotent(aws: None) -> None:
    client = boto3.client("dynamodb")
    create_table(client, "doorstep-test")
    create_table(client, "doorstep-test")

    definition = load_table_definition()
    table = client.describe_table(TableName="doorstep-test")["Table"]
    assert _key_schema(table["KeySchema"]) == _key_schema(definition["KeySchema"])
    assert {
        gsi["IndexName"]: (
            _key_schema(gsi["KeySchema"]),
            gsi["Projection"]["ProjectionType"],
        )
        for gsi in table["GlobalSecondaryIndexes"]
    } == {
        gsi["IndexName"]: (
            _key_schema(gsi["KeySchema"]),
            gsi["Projection"]["ProjectionType"],
        )
        for gsi in definition["GlobalSecondaryIndexes"]
    }
    assert sorted(gsi["IndexName"] for gsi in table["GlobalSecondaryIndexes"]) == [
        "GSI1",
        "GSI2",
        "GSI3",
    ]
    assert table["StreamSpecification"] == {
        "StreamEnabled": True,
        "StreamViewType": definition["StreamSpecification"]["StreamViewType"],
    }
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    ttl = client.describe_time_to_live(TableName="doorstep-test")["TimeToLiveDescription"]
    assert (ttl["TimeToLiveStatus"], ttl["AttributeName"]) == ("ENABLED", "expires_at")
    assert client.list_tables()["TableNames"] == ["doorstep-test"]


def test_create_bucket_blocks_public_access_and_is_idempotent(aws: None) -> None:
    client = boto3.client("s3")
    create_bucket(client, "doorstep-test-proof")
    create_bucket(client, "doorstep-test-proof")

    block = client.get_public_access_block(Bucket="doorstep-test-proof")["PublicAccessBlockConfiguration"]
    assert block == {
        "BlockPublicAcls": True,
        "IgnorePublicAcls": True,
        "BlockPublicPolicy": True,
        "RestrictPublicBuckets": True,
    }
    rules = client.get_bucket_encryption(Bucket="doorstep-test-proof")["ServerSideEncryptionConfiguration"]["Rules"]
    assert rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] in {
        "AES256",
        "aws:kms",
    }
    assert [b["Name"] for b in client.list_buckets()["Buckets"]] == ["doorstep-test-proof"]


@pytest.mark.slow
def test_packaged_template_retains_every_functions_logs(packaged: dict[str, Any]) -> None:
    resources = packaged["Resources"]
    functions = [n for n, r in resources.items() if r["Type"] == "AWS::Serverless::Function"]
    assert {"APIHandler", "StreamPipeline", "WebhookSender", "WebhookRetries"} <= set(functions)
    assert packaged["Parameters"]["LogRetentionDays"]["Default"] == 30
    for function in functions:
        group = resources[f"{function}LogGroup"]
        assert group["Type"] == "AWS::Logs::LogGroup"
        assert group["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}
        assert resources[function]["Properties"]["LoggingConfig"]["LogGroup"] == {"Ref": f"{function}LogGroup"}
    groups = [r for r in resources.values() if r["Type"] == "AWS::Logs::LogGroup"]
    assert len(groups) == len(functions)


@pytest.mark.slow
def test_packaged_template_sends_every_alarm_to_the_alarm_topic(packaged: dict[str, Any]) -> None:
    resources = packaged["Resources"]
    assert resources["AlarmTopic"]["Type"] == "AWS::SNS::Topic"
    subscription = resources["AlarmEmailSubscription"]
    assert subscription["Condition"] == "HasAlarmEmail" and subscription["Properties"]["Protocol"] == "email"
    alarms = {n: r["Properties"] for n, r in resources.items() if r["Type"] == "AWS::CloudWatch::Alarm"}
    assert {"ApiServerErrorsAlarm", "DynamoDBThrottlingAlarm", "PipelineDeadLetterQueueAlarm",
            "WebhookDeadLetterQueueAlarm", "StreamPipelineIteratorAgeAlarm", "WebhookRetriesErrorsAlarm",
            "ReleaseDeferredNotificationsErrorsAlarm", "DayBeforeRemindersErrorsAlarm"} <= set(alarms)
    for name, alarm in alarms.items():
        assert {"Ref": "AlarmTopic"} in alarm["AlarmActions"], name
        assert {"Ref": "AlarmTopic"} in alarm["OKActions"], name
    assert "AlarmTopicArn" in packaged["Outputs"]


@pytest.mark.slow
def test_packaged_template_throttles_the_api_stage_and_has_the_dashboard(packaged: dict[str, Any]) -> None:
    resources = packaged["Resources"]
    (settings,) = resources["RestAPI"]["Properties"]["MethodSettings"]
    assert settings["ThrottlingRateLimit"] == {"Ref": "ApiThrottlingRateLimit"}
    assert settings["ThrottlingBurstLimit"] == {"Ref": "ApiThrottlingBurstLimit"}
    dashboard = resources["Dashboard"]
    assert dashboard["Type"] == "AWS::CloudWatch::Dashboard"
    body = dashboard["Properties"]["DashboardBody"]["Fn::Sub"]
    for metric in ("PingsRejected", "IteratorAge", "NotificationsFailed", "WebhookEndpointsPaused", "5XXError",
                   "Latency", "ApproximateNumberOfMessagesVisible"):
        assert f'"{metric}"' in body
    assert "DashboardUrl" in packaged["Outputs"]
