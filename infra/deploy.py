"""Deploy a stage to AWS with one command and boto3 only (no AWS CLI, no SAM CLI).

    make deploy STAGE=prod ALARM_EMAIL=ops@example.com
    python -m infra.deploy --stage prod --alarm-email ops@example.com [--region eu-central-1]
        [--stack-name doorstep-prod] [--bucket my-artifacts] [--log-retention-days 90]
        [--api-rate-limit 200] [--api-burst-limit 400]

In order, each step safe to run again:
1. the stage's token secret (`DOORSTEP_TOKEN_SECRET` in .chalice/config.json names it, e.g.
   `{{resolve:secretsmanager:doorstep/prod:SecretString:token_secret}}`) is created with a random value if it
   does not exist; an existing one is never overwritten (every signed link and session would break);
2. the SES sender (`DOORSTEP_EMAIL_SENDER`) is checked: verified as an address or through its domain, and
   whether the account is still in the SES sandbox;
3. `make package` (infra/package.py: chalice package, the operations additions, cfn-lint; an error stops here);
4. the deployment zip and the template go to the artifact bucket (created private and encrypted if absent,
   default `doorstep-artifacts-<account>-<region>`), keyed by their SHA-256 so a re-run uploads nothing new;
5. a CloudFormation change set creates or updates the stack (`doorstep-<stage>`), which is then executed and
   waited for; a template with no changes is reported and left alone; a failure prints the resources' reasons;
6. the API and console URLs, the dashboard, and what stays manual are printed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import secrets
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from botocore.exceptions import ClientError

PROJECT_DIR = Path(__file__).resolve().parent.parent
CAPABILITIES = ["CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND"]  # IAM roles; the SAM transform
SECRET_REFERENCE = re.compile(r"^\{\{resolve:secretsmanager:(?P<name>[^:}]+):SecretString:(?P<key>[^:}]+)")
NO_CHANGES = ("didn't contain changes", "No updates are to be performed")
DONE = {"CREATE_COMPLETE", "UPDATE_COMPLETE"}
TUNABLE_PARAMETERS = ("AlarmEmail", "LogRetentionDays", "ApiThrottlingRateLimit", "ApiThrottlingBurstLimit")


class DeployError(Exception):
    """A step failed; the message says which and what to do."""


@dataclass(frozen=True)
class Clients:
    sts: Any
    secretsmanager: Any
    sesv2: Any
    s3: Any
    cloudformation: Any
    region: str

    @classmethod
    def from_session(cls, session: Any) -> Clients:
        region = session.region_name or "us-east-1"
        def client(name: str) -> Any:
            return session.client(name, region_name=region)

        return cls(sts=client("sts"), secretsmanager=client("secretsmanager"), sesv2=client("sesv2"),
                   s3=client("s3"), cloudformation=client("cloudformation"), region=region)


@dataclass
class Options:
    stage: str
    stack_name: str
    bucket: str | None = None
    parameters: dict[str, str] = field(default_factory=dict)  # only those given on the command line
    out_dir: Path = PROJECT_DIR / "build" / "package"
    project_dir: Path = PROJECT_DIR
    poll_seconds: float = 10.0
    timeout_seconds: float = 3600.0


@dataclass
class SenderCheck:
    sender: str
    identity: str | None  # the verified address or domain it sends under, None if not verified
    production_access: bool | None  # None: unknown (no permission to ask)


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def stage_environment(project_dir: Path, stage: str) -> dict[str, str]:
    config: dict[str, Any] = json.loads((project_dir / ".chalice" / "config.json").read_text(encoding="utf-8"))
    return {**config.get("environment_variables", {}),
            **config.get("stages", {}).get(stage, {}).get("environment_variables", {})}


def secret_reference(value: str | None) -> tuple[str, str] | None:
    """(secret name, JSON key) of a `{{resolve:secretsmanager:NAME:SecretString:KEY}}` value, else None."""
    match = SECRET_REFERENCE.match(value or "")
    return (match["name"], match["key"]) if match else None


def ensure_secret(client: Any, name: str, key: str,
                  generate: Callable[[], str] = lambda: secrets.token_urlsafe(48)) -> bool:
    """Create the secret `{key: <random>}` if absent; True if it was created. An existing secret is kept."""
    try:
        client.describe_secret(SecretId=name)
    except ClientError as exc:
        if _code(exc) != "ResourceNotFoundException":
            raise
        client.create_secret(Name=name, Description=f"Doorstep {key}: signs tracking links, driver links and "
                                                     "console sessions. Changing it invalidates all of them.",
                             SecretString=json.dumps({key: generate()}))
        return True
    value = client.get_secret_value(SecretId=name).get("SecretString") or "{}"
    try:
        present = bool(json.loads(value).get(key))
    except (ValueError, AttributeError):
        present = False
    if not present:
        raise DeployError(f"secret {name} exists but has no {key!r} in its JSON SecretString; add one "
                          "(at least 32 random characters) rather than replacing the secret")
    return False


def check_sender(client: Any, sender: str) -> SenderCheck:
    """Whether SES may send from `sender`: its address or its domain verified, and the account's sandbox state."""
    if "@" not in sender:
        return SenderCheck(sender or "(DOORSTEP_EMAIL_SENDER is not set)", None, None)
    domain = sender.rpartition("@")[2]
    identity = None
    for candidate in (sender, domain):
        try:
            found = client.get_email_identity(EmailIdentity=candidate)
        except ClientError as exc:
            if _code(exc) != "NotFoundException":
                raise
            continue
        if found.get("VerifiedForSendingStatus"):
            identity = candidate
            break
    try:
        production: bool | None = bool(client.get_account().get("ProductionAccessEnabled"))
    except ClientError:
        production = None
    return SenderCheck(sender, identity, production)


def ensure_bucket(client: Any, bucket: str, region: str) -> bool:
    """The artifact bucket, private and encrypted; True if it was created."""
    try:
        client.head_bucket(Bucket=bucket)
        return False
    except ClientError as exc:
        if _code(exc) not in {"404", "NoSuchBucket", "NotFound"}:
            raise DeployError(f"artifact bucket {bucket}: {exc} (choose another with --bucket)") from exc
    create: dict[str, Any] = {"Bucket": bucket}
    if region != "us-east-1":  # us-east-1 refuses its own name as a location constraint
        create["CreateBucketConfiguration"] = {"LocationConstraint": region}
    client.create_bucket(**create)
    client.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration={
        "BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True})
    client.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration={
        "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]})
    return True


def _put_once(client: Any, bucket: str, key: str, body: bytes) -> None:
    try:
        client.head_object(Bucket=bucket, Key=key)
        return  # content-addressed: the same bytes are there already
    except ClientError as exc:
        if _code(exc) not in {"404", "NoSuchKey", "NotFound"}:
            raise
    client.put_object(Bucket=bucket, Key=key, Body=body)


def upload_artifacts(client: Any, bucket: str, prefix: str, template_path: Path, region: str) -> str:
    """Upload the code bundle and the template pointing at it; return the template's S3 URL.

    What `aws cloudformation package` does: every function's local `CodeUri` becomes the uploaded object. The
    template goes to S3 too, since it is larger than the 51,200 bytes CloudFormation accepts inline.
    """
    template: dict[str, Any] = json.loads(template_path.read_text(encoding="utf-8"))
    bundles: dict[str, dict[str, str]] = {}
    for resource in template["Resources"].values():
        properties = resource.get("Properties", {})
        code = properties.get("CodeUri")
        if resource.get("Type") != "AWS::Serverless::Function" or not isinstance(code, str):
            continue
        if code not in bundles:
            body = (template_path.parent / code).read_bytes()
            key = f"{prefix}/{hashlib.sha256(body).hexdigest()}.zip"
            _put_once(client, bucket, key, body)
            bundles[code] = {"Bucket": bucket, "Key": key}
        properties["CodeUri"] = bundles[code]
    text = json.dumps(template, indent=1).encode("utf-8")
    key = f"{prefix}/{hashlib.sha256(text).hexdigest()}.template.json"
    _put_once(client, bucket, key, text)
    return f"https://{bucket}.s3.{region}.amazonaws.com/{key}"


def _stack(client: Any, name: str) -> dict[str, Any] | None:
    try:
        stacks: list[dict[str, Any]] = client.describe_stacks(StackName=name)["Stacks"]
    except ClientError as exc:
        if "does not exist" in str(exc):
            return None
        raise
    return stacks[0] if stacks else None


def stack_parameters(given: dict[str, str], existing: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The parameters given on the command line; those not given keep the stack's value, or the template's
    default on a new stack. PublicOrigin always takes the template's default (make package sets it from the
    stage's configuration), so a configuration change reaches the bucket's CORS rule."""
    previous = {p["ParameterKey"] for p in (existing or {}).get("Parameters", [])}
    chosen: list[dict[str, Any]] = [{"ParameterKey": k, "ParameterValue": v} for k, v in sorted(given.items())]
    chosen += [{"ParameterKey": k, "UsePreviousValue": True}
               for k in TUNABLE_PARAMETERS if k not in given and k in previous]
    return chosen


def _failure_reasons(client: Any, stack_name: str, since: Any) -> list[str]:
    events = client.describe_stack_events(StackName=stack_name).get("StackEvents", [])
    return [f"{e['LogicalResourceId']} {e['ResourceStatus']}: {e.get('ResourceStatusReason', '')}"
            for e in events
            if e.get("ResourceStatus", "").endswith("_FAILED") and (since is None or e["Timestamp"] >= since)]


def deploy_stack(client: Any, stack_name: str, template_url: str, given: dict[str, str], out: TextIO,
                 sleep: Callable[[float], None] = time.sleep, poll_seconds: float = 10.0,
                 timeout_seconds: float = 3600.0) -> dict[str, str]:
    """Create or update the stack through a change set, wait for it; return the stack's outputs."""
    existing = _stack(client, stack_name)
    status = (existing or {}).get("StackStatus", "")
    if status == "ROLLBACK_COMPLETE":
        raise DeployError(f"stack {stack_name} is ROLLBACK_COMPLETE (its creation failed) and can only be "
                          "deleted: delete it (its table and bucket are retained if they were created) and deploy "
                          "again")
    if status.endswith("_IN_PROGRESS") and status != "REVIEW_IN_PROGRESS":
        raise DeployError(f"stack {stack_name} is {status}: wait for it to finish, then deploy again")
    change_type = "CREATE" if existing is None or status == "REVIEW_IN_PROGRESS" else "UPDATE"
    change_set = f"doorstep-{int(time.time())}"
    created = client.create_change_set(
        StackName=stack_name, ChangeSetName=change_set, ChangeSetType=change_type, TemplateURL=template_url,
        Parameters=stack_parameters(given, existing), Capabilities=CAPABILITIES,
        Tags=[{"Key": "app", "Value": "doorstep"}],
        Description="make deploy")
    change_set_id = created["Id"]
    print(f"change set {change_set} ({change_type.lower()} {stack_name})", file=out)
    waited = 0.0
    while True:
        described = client.describe_change_set(ChangeSetName=change_set_id, StackName=stack_name)
        if described["Status"] == "CREATE_COMPLETE":
            break
        if described["Status"] == "FAILED":
            reason = described.get("StatusReason", "")
            if any(marker in reason for marker in NO_CHANGES):
                client.delete_change_set(ChangeSetName=change_set_id, StackName=stack_name)
                print("no changes: the stack already runs this template", file=out)
                return _outputs(client, stack_name)
            raise DeployError(f"change set failed: {reason}")
        waited = _wait(sleep, poll_seconds, waited, timeout_seconds, "change set")
    started = described.get("CreationTime")
    client.execute_change_set(ChangeSetName=change_set_id, StackName=stack_name)
    print("executing; this takes a few minutes (the first create about 10: the edge API, the table)", file=out)
    waited = 0.0
    last = ""
    while True:
        stack = _stack(client, stack_name) or {}
        status = stack.get("StackStatus", "")
        if status != last:
            print(f"  {status}", file=out)
            last = status
        if not status.endswith("_IN_PROGRESS"):
            break
        waited = _wait(sleep, poll_seconds, waited, timeout_seconds, "stack")
    if status not in DONE:
        reasons = _failure_reasons(client, stack_name, started)
        raise DeployError(f"stack {stack_name} ended {status}:\n  " + "\n  ".join(reasons or ["(no reason given)"]))
    return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}


def _wait(sleep: Callable[[float], None], step: float, waited: float, limit: float, what: str) -> float:
    if waited >= limit:
        raise DeployError(f"gave up waiting for the {what} after {int(waited)} s; see the CloudFormation console")
    sleep(step)
    return waited + step


def _outputs(client: Any, stack_name: str) -> dict[str, str]:
    stack = _stack(client, stack_name) or {}
    return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}


def manual_steps(sender: SenderCheck, alarm_email: str | None, public_base_url: str | None) -> list[str]:
    steps = []
    if sender.identity is None:
        steps.append(f"SES: verify the sender {sender.sender} (or its domain, with DKIM) in the SES console; "
                     "until then no email is sent")
    if sender.production_access is not True:
        steps.append("SES: request production access (the sandbox only sends to verified addresses)")
    steps.append("SMS: register an origination identity (US: toll-free or 10DLC; other countries: sender ID "
                 "rules) in AWS End User Messaging SMS, and raise the account's SMS spending limit")
    if alarm_email:
        steps.append(f"Alarms: {alarm_email} gets an SNS confirmation email; confirm it or no alarm arrives")
    else:
        steps.append("Alarms: no ALARM_EMAIL given; subscribe someone to AlarmTopicArn")
    if public_base_url:
        steps.append(f"Domain: point {public_base_url} (DOORSTEP_PUBLIC_BASE_URL) at the API "
                     "(API Gateway custom domain + certificate), so tracking links resolve")
    steps.append("Merchants: create one with `make merchant NAME=...` with the stage's environment exported "
                 "(see README, Configuration)")
    return steps


def package_and_lint(stage: str, out_dir: Path, project_dir: Path) -> Path:
    """`make package`: the template and its code bundle in `out_dir`; a cfn-lint error stops the deploy."""
    from infra.package import lint, package

    template = package(stage, out_dir, project_dir)
    if lint(template):
        raise DeployError("cfn-lint found errors in the packaged template (above); nothing was deployed")
    return template


def run(clients: Clients, options: Options, out: TextIO,
        package: Callable[[str, Path, Path], Path] | None = None,
        sleep: Callable[[float], None] = time.sleep) -> dict[str, str]:
    """The whole deploy; returns the stack outputs plus `ConsoleURL`."""
    env = stage_environment(options.project_dir, options.stage)
    account = clients.sts.get_caller_identity()["Account"]
    print(f"deploying {options.stage} as stack {options.stack_name} to account {account}, {clients.region}",
          file=out)

    reference = secret_reference(env.get("DOORSTEP_TOKEN_SECRET"))
    if reference is None:
        raise DeployError(f"DOORSTEP_TOKEN_SECRET of stage {options.stage} is not a Secrets Manager reference "
                          "({{resolve:secretsmanager:NAME:SecretString:KEY}}); a deployed stage never keeps "
                          "its secret in .chalice/config.json")
    created = ensure_secret(clients.secretsmanager, *reference)
    print(f"secret {reference[0]}: {'created' if created else 'exists, kept'}", file=out)

    sender = check_sender(clients.sesv2, env.get("DOORSTEP_EMAIL_SENDER", ""))
    print(f"SES sender {sender.sender}: " + (f"verified ({sender.identity})" if sender.identity
                                             else "NOT verified (email will fail until it is)"), file=out)

    template = (package or package_and_lint)(options.stage, options.out_dir, options.project_dir)

    bucket = options.bucket or f"doorstep-artifacts-{account}-{clients.region}"
    if ensure_bucket(clients.s3, bucket, clients.region):
        print(f"artifact bucket {bucket}: created", file=out)
    template_url = upload_artifacts(clients.s3, bucket, options.stack_name, template, clients.region)
    print(f"uploaded {template_url}", file=out)

    outputs = deploy_stack(clients.cloudformation, options.stack_name, template_url, options.parameters, out,
                           sleep=sleep, poll_seconds=options.poll_seconds, timeout_seconds=options.timeout_seconds)
    api = outputs.get("EndpointURL", "")
    if api:
        outputs["ConsoleURL"] = api.rstrip("/") + "/console"
    print("", file=out)
    print(f"API:       {api or '(no EndpointURL output)'}", file=out)
    print(f"Console:   {outputs.get('ConsoleURL', '')}", file=out)
    if "DashboardUrl" in outputs:
        print(f"Dashboard: {outputs['DashboardUrl']}", file=out)
    if "AlarmTopicArn" in outputs:
        print(f"Alarms:    {outputs['AlarmTopicArn']}", file=out)
    print("\nStack outputs (docs/operations.md uses them):", file=out)
    for key in sorted(outputs):
        print(f"  {key} = {outputs[key]}", file=out)
    print("\nStill manual:", file=out)
    for step in manual_steps(sender, options.parameters.get("AlarmEmail"), env.get("DOORSTEP_PUBLIC_BASE_URL")):
        print(f"- {step}", file=out)
    return outputs


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", default="dev", choices=["dev", "prod"])
    parser.add_argument("--alarm-email", help="who gets every alarm (SNS email subscription)")
    parser.add_argument("--region", help="default: the AWS profile's region, else us-east-1")
    parser.add_argument("--profile", help="an AWS profile (default: the environment's credentials)")
    parser.add_argument("--stack-name", help="default: doorstep-<stage>")
    parser.add_argument("--bucket", help="artifact bucket (default: doorstep-artifacts-<account>-<region>)")
    parser.add_argument("--log-retention-days", type=int)
    parser.add_argument("--api-rate-limit", type=int, help="API stage throttling, requests per second")
    parser.add_argument("--api-burst-limit", type=int, help="API stage throttling, burst size")
    parser.add_argument("--out", type=Path, default=PROJECT_DIR / "build" / "package")
    args = parser.parse_args(argv)

    given = {name: str(value) for name, value in (
        ("AlarmEmail", args.alarm_email), ("LogRetentionDays", args.log_retention_days),
        ("ApiThrottlingRateLimit", args.api_rate_limit), ("ApiThrottlingBurstLimit", args.api_burst_limit),
    ) if value is not None and value != ""}
    import boto3

    session = boto3.Session(profile_name=args.profile, region_name=args.region)
    options = Options(stage=args.stage, stack_name=args.stack_name or f"doorstep-{args.stage}",
                      bucket=args.bucket, parameters=given, out_dir=args.out)
    try:
        run(Clients.from_session(session), options, sys.stdout)
    except DeployError as exc:
        print(f"deploy failed: {exc}", file=sys.stderr)
        return 1
    except ClientError as exc:
        print(f"deploy failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
