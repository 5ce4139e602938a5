"""`make deploy` (infra/deploy.py): Secrets Manager, S3 and STS on moto; SES and CloudFormation, whose SAM
transform and change sets moto does not run, through botocore's Stubber with the real API's shapes."""

from __future__ import annotations

import datetime as dt
import io
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import ANY, Stubber
from moto import mock_aws

from infra.deploy import (
    Clients,
    DeployError,
    Options,
    check_sender,
    deploy_stack,
    ensure_bucket,
    ensure_secret,
    run,
    secret_reference,
    stack_parameters,
    upload_artifacts,
)

PROJECT_DIR = Path(__file__).resolve().parents[2]
STACK = "doorstep-prod"
URL = "https://b.s3.us-east-1.amazonaws.com/doorstep-prod/t.json"
ENDPOINT = "https://abc123.execute-api.us-east-1.amazonaws.com/api/"
NOW = dt.datetime(2026, 12, 4, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def moto_aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name, value in {"AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "testing",
                        "AWS_SECRET_ACCESS_KEY": "testing", "AWS_ACCOUNT_ID_ENDPOINT_MODE": "disabled"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    with mock_aws():
        # Inside the suite's session-wide moto a nested mock resets nothing: start from no secrets, and leave
        # no secret or artifact bucket behind for the modules that follow (test_infra lists the buckets).
        s3, secrets = boto3.client("s3"), boto3.client("secretsmanager")
        buckets_before = {b["Name"] for b in s3.list_buckets()["Buckets"]}
        _forget_secrets(secrets)
        yield
        _forget_secrets(secrets)
        for name in {b["Name"] for b in s3.list_buckets()["Buckets"]} - buckets_before:
            for page in s3.get_paginator("list_object_versions").paginate(Bucket=name):
                for entry in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]:
                    s3.delete_object(Bucket=name, Key=entry["Key"], VersionId=entry["VersionId"])
            s3.delete_bucket(Bucket=name)


def _forget_secrets(client: Any) -> None:
    for secret in client.list_secrets().get("SecretList", []):
        client.delete_secret(SecretId=secret["ARN"], ForceDeleteWithoutRecovery=True)


def _stubbed(service: str) -> tuple[Any, Stubber]:
    client = boto3.client(service, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    return client, Stubber(client)


def _stack(status: str, outputs: dict[str, str] | None = None,
           parameters: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"Stacks": [{"StackName": STACK, "CreationTime": NOW, "StackStatus": status,
                        "Parameters": [{"ParameterKey": k, "ParameterValue": "v"} for k in parameters],
                        "Outputs": [{"OutputKey": k, "OutputValue": v} for k, v in (outputs or {}).items()]}]}


def _change_set(status: str, reason: str = "") -> dict[str, Any]:
    answer: dict[str, Any] = {"ChangeSetId": "arn:cs", "StackName": STACK, "Status": status, "CreationTime": NOW}
    if reason:
        answer["StatusReason"] = reason
    return answer


def _missing(stubber: Stubber) -> None:
    stubber.add_client_error("describe_stacks", "ValidationError", f"Stack with id {STACK} does not exist")


# --- the secret ---------------------------------------------------------------------------------------------


def test_the_stage_config_names_its_secret() -> None:
    config = json.loads((PROJECT_DIR / ".chalice" / "config.json").read_text())
    value = config["stages"]["prod"]["environment_variables"]["DOORSTEP_TOKEN_SECRET"]
    assert secret_reference(value) == ("doorstep/prod", "token_secret")
    assert secret_reference("local-only-secret") is None


def test_secret_is_created_once_and_never_overwritten(moto_aws: None) -> None:
    client = boto3.client("secretsmanager")
    assert ensure_secret(client, "doorstep/prod", "token_secret") is True
    first = json.loads(client.get_secret_value(SecretId="doorstep/prod")["SecretString"])["token_secret"]
    assert len(first) >= 48
    assert ensure_secret(client, "doorstep/prod", "token_secret") is False
    again = json.loads(client.get_secret_value(SecretId="doorstep/prod")["SecretString"])["token_secret"]
    assert again == first


def test_an_existing_secret_without_the_key_stops_the_deploy(moto_aws: None) -> None:
    client = boto3.client("secretsmanager")
    client.create_secret(Name="doorstep/prod", SecretString=json.dumps({"other": "x"}))
    with pytest.raises(DeployError, match="token_secret"):
        ensure_secret(client, "doorstep/prod", "token_secret")
    assert json.loads(client.get_secret_value(SecretId="doorstep/prod")["SecretString"]) == {"other": "x"}


# --- SES ----------------------------------------------------------------------------------------------------


def test_sender_verified_through_its_domain_in_the_sandbox() -> None:
    client, stub = _stubbed("sesv2")
    stub.add_client_error("get_email_identity", "NotFoundException",
                          expected_params={"EmailIdentity": "notifications@example.com"})
    stub.add_response("get_email_identity", {"VerifiedForSendingStatus": True},
                      expected_params={"EmailIdentity": "example.com"})
    stub.add_response("get_account", {"ProductionAccessEnabled": False})
    with stub:
        check = check_sender(client, "notifications@example.com")
    stub.assert_no_pending_responses()
    assert (check.identity, check.production_access) == ("example.com", False)


def test_sender_pending_verification_is_not_verified() -> None:
    client, stub = _stubbed("sesv2")
    stub.add_response("get_email_identity", {"VerifiedForSendingStatus": False})
    stub.add_client_error("get_email_identity", "NotFoundException")
    stub.add_client_error("get_account", "AccessDeniedException")
    with stub:
        check = check_sender(client, "n@example.com")
    assert (check.identity, check.production_access) == (None, None)


def test_no_configured_sender_asks_ses_nothing() -> None:
    client, stub = _stubbed("sesv2")
    with stub:  # no response queued: any call would fail
        check = check_sender(client, "")
    assert check.identity is None and "not set" in check.sender


# --- artifacts ----------------------------------------------------------------------------------------------


def _packaged(tmp_path: Path) -> Path:
    with zipfile.ZipFile(tmp_path / "deployment.zip", "w") as bundle:
        bundle.writestr(zipfile.ZipInfo("app.py", date_time=(2026, 1, 1, 0, 0, 0)), "print('hi')\n")
    template = {"Transform": "AWS::Serverless-2016-10-31", "Resources": {
        "APIHandler": {"Type": "AWS::Serverless::Function", "Properties": {"CodeUri": "./deployment.zip"}},
        "StreamPipeline": {"Type": "AWS::Serverless::Function", "Properties": {"CodeUri": "./deployment.zip"}},
        "DoorstepTable": {"Type": "AWS::DynamoDB::Table", "Properties": {}}}}
    (tmp_path / "sam.json").write_text(json.dumps(template))
    return tmp_path / "sam.json"


def test_artifacts_go_to_a_private_bucket_once_and_the_template_points_at_them(moto_aws: None,
                                                                                tmp_path: Path) -> None:
    s3 = boto3.client("s3")
    assert ensure_bucket(s3, "artifacts-1", "us-east-1") is True
    assert ensure_bucket(s3, "artifacts-1", "us-east-1") is False
    block = s3.get_public_access_block(Bucket="artifacts-1")["PublicAccessBlockConfiguration"]
    assert set(block.values()) == {True}
    url = upload_artifacts(s3, "artifacts-1", STACK, _packaged(tmp_path), "us-east-1")
    assert upload_artifacts(s3, "artifacts-1", STACK, _packaged(tmp_path), "us-east-1") == url
    keys = sorted((o["Key"] for o in s3.list_objects_v2(Bucket="artifacts-1")["Contents"]),
                  key=lambda k: k.endswith(".zip"))
    assert len(keys) == 2 and keys[0].endswith(".template.json") and keys[1].endswith(".zip")
    assert url == f"https://artifacts-1.s3.us-east-1.amazonaws.com/{keys[0]}"
    deployed = json.loads(s3.get_object(Bucket="artifacts-1", Key=keys[0])["Body"].read())
    for function in ("APIHandler", "StreamPipeline"):
        assert deployed["Resources"][function]["Properties"]["CodeUri"] == {"Bucket": "artifacts-1", "Key": keys[1]}


# --- the stack ----------------------------------------------------------------------------------------------


def test_a_new_stack_is_created_through_a_change_set_and_waited_for() -> None:
    client, stub = _stubbed("cloudformation")
    _missing(stub)
    stub.add_response("create_change_set", {"Id": "arn:cs", "StackId": "arn:stack"}, {
        "StackName": STACK, "ChangeSetName": ANY, "ChangeSetType": "CREATE", "TemplateURL": URL,
        "Parameters": [{"ParameterKey": "AlarmEmail", "ParameterValue": "ops@example.com"}],
        "Capabilities": ["CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND"], "Tags": ANY, "Description": ANY})
    stub.add_response("describe_change_set", _change_set("CREATE_IN_PROGRESS"))
    stub.add_response("describe_change_set", _change_set("CREATE_COMPLETE"))
    stub.add_response("execute_change_set", {}, {"ChangeSetName": "arn:cs", "StackName": STACK})
    stub.add_response("describe_stacks", _stack("CREATE_IN_PROGRESS"))
    stub.add_response("describe_stacks", _stack("CREATE_COMPLETE", {"EndpointURL": ENDPOINT}))
    sleeps: list[float] = []
    out = io.StringIO()
    with stub:
        outputs = deploy_stack(client, STACK, URL, {"AlarmEmail": "ops@example.com"}, out, sleep=sleeps.append,
                               poll_seconds=5)
    stub.assert_no_pending_responses()
    assert outputs == {"EndpointURL": ENDPOINT}
    assert sleeps == [5, 5]
    assert "CREATE_COMPLETE" in out.getvalue()


def test_an_update_keeps_the_operators_earlier_parameters() -> None:
    existing = _stack("UPDATE_COMPLETE", parameters=("AlarmEmail", "LogRetentionDays", "PublicOrigin"))["Stacks"][0]
    assert stack_parameters({"ApiThrottlingRateLimit": "50"}, existing) == [
        {"ParameterKey": "ApiThrottlingRateLimit", "ParameterValue": "50"},
        {"ParameterKey": "AlarmEmail", "UsePreviousValue": True},
        {"ParameterKey": "LogRetentionDays", "UsePreviousValue": True},
    ]  # PublicOrigin is not kept: the new template's default follows the stage's configuration
    assert stack_parameters({}, None) == []


def test_an_unchanged_template_is_not_executed() -> None:
    client, stub = _stubbed("cloudformation")
    stub.add_response("describe_stacks", _stack("UPDATE_COMPLETE", parameters=("AlarmEmail",)))
    stub.add_response("create_change_set", {"Id": "arn:cs"}, {
        "StackName": STACK, "ChangeSetName": ANY, "ChangeSetType": "UPDATE", "TemplateURL": URL,
        "Parameters": [{"ParameterKey": "AlarmEmail", "UsePreviousValue": True}],
        "Capabilities": ANY, "Tags": ANY, "Description": ANY})
    stub.add_response("describe_change_set", _change_set(
        "FAILED", "The submitted information didn't contain changes. Submit different information."))
    stub.add_response("delete_change_set", {}, {"ChangeSetName": "arn:cs", "StackName": STACK})
    stub.add_response("describe_stacks", _stack("UPDATE_COMPLETE", {"EndpointURL": ENDPOINT}))
    out = io.StringIO()
    with stub:
        outputs = deploy_stack(client, STACK, URL, {}, out, sleep=lambda _: None)
    stub.assert_no_pending_responses()  # and no execute_change_set was called
    assert outputs == {"EndpointURL": ENDPOINT} and "no changes" in out.getvalue()


def test_a_failed_update_reports_the_resources_reasons() -> None:
    client, stub = _stubbed("cloudformation")
    stub.add_response("describe_stacks", _stack("UPDATE_COMPLETE"))
    stub.add_response("create_change_set", {"Id": "arn:cs"})
    stub.add_response("describe_change_set", _change_set("CREATE_COMPLETE"))
    stub.add_response("execute_change_set", {})
    stub.add_response("describe_stacks", _stack("UPDATE_ROLLBACK_COMPLETE"))
    stub.add_response("describe_stack_events", {"StackEvents": [
        {"StackId": "s", "EventId": "e1", "StackName": STACK, "Timestamp": NOW + dt.timedelta(seconds=30),
         "LogicalResourceId": "APIHandlerLogGroup", "ResourceStatus": "CREATE_FAILED",
         "ResourceStatusReason": "Resource limit exceeded"},
        {"StackId": "s", "EventId": "e0", "StackName": STACK, "Timestamp": NOW - dt.timedelta(days=3),
         "LogicalResourceId": "Old", "ResourceStatus": "UPDATE_FAILED", "ResourceStatusReason": "long ago"}]})
    with stub, pytest.raises(DeployError) as failed:
        deploy_stack(client, STACK, URL, {}, io.StringIO(), sleep=lambda _: None)
    assert "APIHandlerLogGroup CREATE_FAILED: Resource limit exceeded" in str(failed.value)
    assert "long ago" not in str(failed.value)


@pytest.mark.parametrize("status", ["ROLLBACK_COMPLETE", "UPDATE_IN_PROGRESS"])
def test_a_stack_that_cannot_take_a_change_set_is_refused(status: str) -> None:
    client, stub = _stubbed("cloudformation")
    stub.add_response("describe_stacks", _stack(status))
    with stub, pytest.raises(DeployError, match=status):
        deploy_stack(client, STACK, URL, {}, io.StringIO(), sleep=lambda _: None)


def test_waiting_gives_up_after_the_timeout() -> None:
    client, stub = _stubbed("cloudformation")
    _missing(stub)
    stub.add_response("create_change_set", {"Id": "arn:cs"})
    for _ in range(3):
        stub.add_response("describe_change_set", _change_set("CREATE_PENDING"))
    with stub, pytest.raises(DeployError, match="gave up"):
        deploy_stack(client, STACK, URL, {}, io.StringIO(), sleep=lambda _: None, poll_seconds=10,
                     timeout_seconds=20)


# --- the whole command --------------------------------------------------------------------------------------


def test_deploy_end_to_end_prints_the_urls_and_what_stays_manual(moto_aws: None, tmp_path: Path) -> None:
    sesv2, ses_stub = _stubbed("sesv2")
    ses_stub.add_client_error("get_email_identity", "NotFoundException")
    ses_stub.add_client_error("get_email_identity", "NotFoundException")
    ses_stub.add_response("get_account", {"ProductionAccessEnabled": False})
    cfn, cfn_stub = _stubbed("cloudformation")
    _missing(cfn_stub)
    cfn_stub.add_response("create_change_set", {"Id": "arn:cs"})
    cfn_stub.add_response("describe_change_set", _change_set("CREATE_COMPLETE"))
    cfn_stub.add_response("execute_change_set", {})
    cfn_stub.add_response("describe_stacks", _stack("CREATE_COMPLETE", {
        "EndpointURL": ENDPOINT, "DashboardUrl": "https://cw/d", "AlarmTopicArn": "arn:aws:sns:us-east-1:1:t"}))
    clients = Clients(sts=boto3.client("sts"), secretsmanager=boto3.client("secretsmanager"), sesv2=sesv2,
                      s3=boto3.client("s3"), cloudformation=cfn, region="us-east-1")
    packaged: list[str] = []

    def package(stage: str, out_dir: Path, project_dir: Path) -> Path:
        packaged.append(stage)
        return _packaged(tmp_path)

    out = io.StringIO()
    options = Options(stage="prod", stack_name=STACK, parameters={"AlarmEmail": "ops@example.com"})
    with ses_stub, cfn_stub:
        outputs = run(clients, options, out, package=package, sleep=lambda _: None)
    printed = out.getvalue()
    assert packaged == ["prod"]
    assert outputs["ConsoleURL"] == "https://abc123.execute-api.us-east-1.amazonaws.com/api/console"
    assert f"API:       {ENDPOINT}" in printed and f"Console:   {outputs['ConsoleURL']}" in printed
    assert "secret doorstep/prod: created" in printed
    assert "NOT verified" in printed
    for manual in ("request production access", "origination identity", "ops@example.com gets an SNS"):
        assert manual in printed
    account = boto3.client("sts").get_caller_identity()["Account"]
    bucket = f"doorstep-artifacts-{account}-us-east-1"
    assert len(boto3.client("s3").list_objects_v2(Bucket=bucket)["Contents"]) == 2
    boto3.client("secretsmanager").describe_secret(SecretId="doorstep/prod")


def test_the_make_target_passes_what_it_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    import infra.deploy as deploy

    seen: list[Options] = []
    monkeypatch.setattr(deploy.Clients, "from_session", classmethod(lambda cls, session: None))
    def record(clients: Any, options: Options, out: Any, **_: Any) -> dict[str, str]:
        seen.append(options)
        return {}

    monkeypatch.setattr(deploy, "run", record)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-central-1")
    assert deploy.main(["--stage", "prod", "--alarm-email", "ops@example.com", "--api-rate-limit", "50"]) == 0
    (options,) = seen
    assert (options.stage, options.stack_name) == ("prod", "doorstep-prod")
    assert options.parameters == {"AlarmEmail": "ops@example.com", "ApiThrottlingRateLimit": "50"}

    def failing(clients: Any, options: Options, out: Any, **_: Any) -> dict[str, str]:
        raise DeployError("secret doorstep/prod exists but has no 'token_secret'")

    monkeypatch.setattr(deploy, "run", failing)
    assert deploy.main(["--stage", "prod"]) == 1  # a failed step is a message and exit 1, not a traceback
