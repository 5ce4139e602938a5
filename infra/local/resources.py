"""Create the local table (DynamoDB Local or moto) and bucket (moto) from infra/resources.json.

The emulated resources are built from the same CloudFormation definition that
production deploys, so local runs and tests cannot drift from the real schema.
The TLS-only bucket policy and the lifecycle rule are not translated: the
local stack speaks plain HTTP and lives too briefly for objects to age.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

RESOURCES_FILE = Path(__file__).resolve().parent.parent / "resources.json"
TABLE_LOGICAL_ID = "DoorstepTable"
BUCKET_LOGICAL_ID = "ProofBucket"


@cache
def _resources() -> dict[str, Any]:
    with RESOURCES_FILE.open(encoding="utf-8") as fh:
        resources: dict[str, Any] = json.load(fh)["Resources"]
    return resources


def load_table_definition() -> dict[str, Any]:
    """The table's CloudFormation Properties (a fresh copy, safe to mutate)."""
    props: dict[str, Any] = copy.deepcopy(_resources()[TABLE_LOGICAL_ID]["Properties"])
    return props


def _load_bucket_definition() -> dict[str, Any]:
    props: dict[str, Any] = copy.deepcopy(_resources()[BUCKET_LOGICAL_ID]["Properties"])
    return props


def table_create_params(table_name: str) -> dict[str, Any]:
    """Translate the CloudFormation Properties into CreateTable parameters."""
    props = load_table_definition()
    params: dict[str, Any] = {
        "TableName": table_name,
        "KeySchema": props["KeySchema"],
        "AttributeDefinitions": props["AttributeDefinitions"],
        "BillingMode": props["BillingMode"],
    }
    # Same shape in CloudFormation and the API (IndexName, KeySchema, Projection).
    if "GlobalSecondaryIndexes" in props:
        params["GlobalSecondaryIndexes"] = props["GlobalSecondaryIndexes"]
    # CloudFormation enables the stream by the mere presence of a view type;
    # the API wants it spelled out.
    if "StreamSpecification" in props:
        params["StreamSpecification"] = {
            "StreamEnabled": True,
            "StreamViewType": props["StreamSpecification"]["StreamViewType"],
        }
    if "SSESpecification" in props:
        sse = props["SSESpecification"]
        params["SSESpecification"] = {"Enabled": sse["SSEEnabled"]}
        if "SSEType" in sse:
            params["SSESpecification"]["SSEType"] = sse["SSEType"]
    return params


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def create_table(dynamodb_client: Any, table_name: str) -> None:
    """Create the table (plus TTL and PITR) unless it already exists."""
    try:
        dynamodb_client.describe_table(TableName=table_name)
        return
    except ClientError as exc:
        if _error_code(exc) != "ResourceNotFoundException":
            raise
    try:
        dynamodb_client.create_table(**table_create_params(table_name))
    except ClientError as exc:
        # Another process (a parallel test worker) won the race and finishes
        # the setup itself.
        if _error_code(exc) == "ResourceInUseException":
            return
        raise
    # TTL and PITR can only be set once the table is ACTIVE.
    dynamodb_client.get_waiter("table_exists").wait(TableName=table_name, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    props = load_table_definition()
    if "TimeToLiveSpecification" in props:
        dynamodb_client.update_time_to_live(
            TableName=table_name,
            TimeToLiveSpecification=props["TimeToLiveSpecification"],
        )
    pitr = props.get("PointInTimeRecoverySpecification", {})
    if pitr.get("PointInTimeRecoveryEnabled"):
        try:
            dynamodb_client.update_continuous_backups(
                TableName=table_name,
                PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True},
            )
        except ClientError as exc:
            # DynamoDB Local has no backups at all (UnknownOperationException); an in-memory table needs none.
            if _error_code(exc) != "UnknownOperationException":
                raise


def bucket_cors_rules(origins: Sequence[str]) -> list[dict[str, Any]]:
    """The bucket's CORS rules as PutBucketCors wants them, with `{"Ref": "PublicOrigin"}` made `origins`."""
    names = {"Id": "ID", "MaxAge": "MaxAgeSeconds"}
    rules = []
    for rule in _load_bucket_definition().get("CorsConfiguration", {}).get("CorsRules", []):
        out = {names.get(key, key): value for key, value in rule.items()}
        out["AllowedOrigins"] = [o for value in rule["AllowedOrigins"]
                                 for o in (origins if value == {"Ref": "PublicOrigin"} else [value])]
        rules.append(out)
    return rules


def create_bucket(s3_client: Any, bucket_name: str, cors_origins: Sequence[str] = ()) -> None:
    """Create the private proof bucket unless it already exists. `cors_origins` stand for the template's
    PublicOrigin (the local API's origin); without them the bucket gets no CORS rules."""
    try:
        s3_client.head_bucket(Bucket=bucket_name)
        return
    except ClientError as exc:
        if _error_code(exc) not in {"404", "NoSuchBucket", "NotFound"}:
            raise
    create: dict[str, Any] = {"Bucket": bucket_name}
    region = s3_client.meta.region_name
    # us-east-1 is the one region that rejects an explicit LocationConstraint.
    if region and region != "us-east-1":
        create["CreateBucketConfiguration"] = {"LocationConstraint": region}
    try:
        s3_client.create_bucket(**create)
    except ClientError as exc:
        if _error_code(exc) == "BucketAlreadyOwnedByYou":
            return
        raise

    props = _load_bucket_definition()
    if "PublicAccessBlockConfiguration" in props:
        s3_client.put_public_access_block(
            Bucket=bucket_name,
            PublicAccessBlockConfiguration=props["PublicAccessBlockConfiguration"],
        )
    if "BucketEncryption" in props:
        # CloudFormation's ServerSideEncryptionByDefault is the API's
        # ApplyServerSideEncryptionByDefault; the remaining keys match.
        rules = [
            {
                ("ApplyServerSideEncryptionByDefault" if key == "ServerSideEncryptionByDefault" else key): value
                for key, value in rule.items()
            }
            for rule in props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
        ]
        s3_client.put_bucket_encryption(Bucket=bucket_name, ServerSideEncryptionConfiguration={"Rules": rules})
    if "OwnershipControls" in props:
        s3_client.put_bucket_ownership_controls(Bucket=bucket_name, OwnershipControls=props["OwnershipControls"])
    if "VersioningConfiguration" in props:
        s3_client.put_bucket_versioning(Bucket=bucket_name, VersioningConfiguration=props["VersioningConfiguration"])
    rules = bucket_cors_rules(cors_origins) if cors_origins else []
    if rules:
        s3_client.put_bucket_cors(Bucket=bucket_name, CORSConfiguration={"CORSRules": rules})
