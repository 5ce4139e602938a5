"""The deployable template and the local resources built from it.

The packaging tests run `chalice package` plus cfn-lint once per module
(about 5-60 s, depending on the wheel cache), so they are marked `slow`.
"""

from __future__ import annotations

import json
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
def packaged(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
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
    template: dict[str, Any] = json.loads((out / "sam.json").read_text())
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
