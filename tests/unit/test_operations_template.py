"""The operations additions to the template (infra/operations.py, infra/resources.json), without packaging."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

from infra.operations import (
    ALARM_TOPIC,
    APP_METRIC_WIDGETS,
    add_alarm_actions,
    add_log_groups,
    add_operations,
    add_schedule_error_alarms,
    dashboard_body,
)

PROJECT_DIR = Path(__file__).resolve().parents[2]
RESOURCES = json.loads((PROJECT_DIR / "infra" / "resources.json").read_text(encoding="utf-8"))


def _emitted_metric_names() -> set[str]:
    names: set[str] = set()
    for path in (PROJECT_DIR / "chalicelib").rglob("*.py"):
        names |= set(re.findall(r'add_metric\(\s*name="([A-Za-z]+)"', path.read_text(encoding="utf-8")))
    return names


def _template() -> dict[str, Any]:
    """resources.json plus the functions Chalice would emit (two of them, one a stream consumer)."""
    template: dict[str, Any] = copy.deepcopy(RESOURCES)
    for function in ("StreamPipeline", "APIHandler", "SomeScheduleAddedLater"):
        template["Resources"].setdefault(function, {}).update({"Type": "AWS::Serverless::Function"})
        template["Resources"][function].setdefault("Properties", {})
    for function in ("SomeScheduleAddedLater", "ReleaseDeferredNotifications"):
        template["Resources"][function].update({"Type": "AWS::Serverless::Function"})
        template["Resources"][function]["Properties"]["Events"] = {"E": {"Type": "Schedule", "Properties": {}}}
    template["Resources"]["LateAlarmAddedLater"] = {"Type": "AWS::CloudWatch::Alarm", "Properties": {
        "AlarmActions": [{"Ref": "SomeOtherTopic"}]}}
    return template


def test_every_function_gets_a_retained_log_group_it_logs_to() -> None:
    template = _template()
    functions = add_log_groups(template)
    assert functions == ["APIHandler", "ReleaseDeferredNotifications", "SomeScheduleAddedLater", "StreamPipeline"]
    for function in functions:
        group = template["Resources"][f"{function}LogGroup"]
        assert group["Type"] == "AWS::Logs::LogGroup"
        assert group["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}
        # under /aws/lambda/, where the functions' logs policy allows writing, and per stack
        assert group["Properties"]["LogGroupName"] == {"Fn::Sub": f"/aws/lambda/${{AWS::StackName}}/{function}"}
        logging = template["Resources"][function]["Properties"]["LoggingConfig"]
        assert logging["LogGroup"] == {"Ref": f"{function}LogGroup"}


def test_every_alarm_notifies_the_topic_on_alarm_and_on_recovery_once() -> None:
    template = _template()
    alarms = add_alarm_actions(template)
    add_alarm_actions(template)  # packaging twice must not duplicate actions
    assert {"ApiServerErrorsAlarm", "DynamoDBThrottlingAlarm", "PipelineDeadLetterQueueAlarm",
            "LateAlarmAddedLater"} <= set(alarms)
    for alarm in alarms:
        properties = template["Resources"][alarm]["Properties"]
        assert properties["AlarmActions"][0] == {"Ref": ALARM_TOPIC}
        assert properties["OKActions"] == [{"Ref": ALARM_TOPIC}]
        assert properties["AlarmActions"].count({"Ref": ALARM_TOPIC}) == 1
    assert template["Resources"]["LateAlarmAddedLater"]["Properties"]["AlarmActions"] == [
        {"Ref": ALARM_TOPIC}, {"Ref": "SomeOtherTopic"}]


def test_the_dashboard_shows_only_metrics_the_app_emits() -> None:
    emitted = _emitted_metric_names()
    shown = {name for _, names in APP_METRIC_WIDGETS for name in names}
    assert shown - emitted == set(), "the dashboard names a metric no code emits (renamed?)"
    # the issue's list: ingest rate and rejects, notification sent/failed, webhook delivered/failed/paused
    assert {"PingsAccepted", "PingsRejected", "NotificationsSent", "NotificationsFailed", "WebhooksDelivered",
            "WebhookAttemptsFailed", "WebhookEndpointsPaused"} <= shown


def test_the_dashboard_covers_api_pipeline_queues_and_every_alarm() -> None:
    template = _template()
    add_operations(template)
    body = dashboard_body(template)
    metrics = [tuple(m[:2]) for w in body["widgets"] if w["type"] == "metric" for m in w["properties"]["metrics"]]
    for needed in [("AWS/ApiGateway", "4XXError"), ("AWS/ApiGateway", "5XXError"), ("AWS/ApiGateway", "Latency"),
                   ("AWS/Lambda", "IteratorAge"), ("AWS/Lambda", "Errors"),
                   ("AWS/SQS", "ApproximateNumberOfMessagesVisible")]:
        assert needed in metrics
    (alarm_widget,) = [w for w in body["widgets"] if w["type"] == "alarm"]
    alarms = [name for name, r in template["Resources"].items() if r.get("Type") == "AWS::CloudWatch::Alarm"]
    assert sorted(alarm_widget["properties"]["alarms"]) == sorted(f"${{{a}.Arn}}" for a in alarms)


def test_dashboard_references_resolve_to_resources_or_pseudo_parameters() -> None:
    template = _template()
    add_operations(template)
    text = template["Resources"]["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    json.loads(text)  # still JSON once CloudFormation substitutes plain strings
    for reference in re.findall(r"\$\{([^}]+)\}", text):
        name = reference.split(".")[0]
        assert name in template["Resources"] or name.startswith("AWS::"), reference


def test_alarm_topic_email_subscription_is_optional_and_validated() -> None:
    parameter = RESOURCES["Parameters"]["AlarmEmail"]
    pattern = re.compile(parameter["AllowedPattern"])
    assert pattern.fullmatch("") and pattern.fullmatch("ops@example.com")
    assert not pattern.fullmatch("not an email") and not pattern.fullmatch("a@b")
    subscription = RESOURCES["Resources"]["AlarmEmailSubscription"]
    assert subscription["Condition"] == "HasAlarmEmail"
    assert subscription["Properties"] == {"TopicArn": {"Ref": ALARM_TOPIC}, "Protocol": "email",
                                          "Endpoint": {"Ref": "AlarmEmail"}}
    (allow, _deny) = RESOURCES["Resources"]["AlarmTopicPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert allow["Principal"] == {"Service": "cloudwatch.amazonaws.com"} and allow["Action"] == "sns:Publish"


def test_api_alarm_and_dashboard_name_the_api_the_stack_deploys() -> None:
    api = RESOURCES["Resources"]["RestAPI"]["Properties"]
    dimensions = {d["Name"]: d["Value"] for d in
                  RESOURCES["Resources"]["ApiServerErrorsAlarm"]["Properties"]["Dimensions"]}
    # API Gateway's REST metrics are keyed by the API's name, so the alarm and the API must agree on it
    assert dimensions["ApiName"] == api["Name"] == api["DefinitionBody"]["info"]["title"]
    config = json.loads((PROJECT_DIR / ".chalice" / "config.json").read_text(encoding="utf-8"))
    assert {dimensions["Stage"]} == {s["api_gateway_stage"] for s in config["stages"].values()}
    (throttle,) = api["MethodSettings"]
    assert (throttle["ResourcePath"], throttle["HttpMethod"]) == ("/*", "*")
    assert throttle["ThrottlingRateLimit"] == {"Ref": "ApiThrottlingRateLimit"}
    assert throttle["ThrottlingBurstLimit"] == {"Ref": "ApiThrottlingBurstLimit"}


def test_throttling_alarm_covers_the_table_and_every_index() -> None:
    table = RESOURCES["Resources"]["DoorstepTable"]["Properties"]
    indexes = {gsi["IndexName"] for gsi in table["GlobalSecondaryIndexes"]}
    metrics = RESOURCES["Resources"]["DynamoDBThrottlingAlarm"]["Properties"]["Metrics"]
    (expression,) = [m for m in metrics if "Expression" in m]
    covered: set[tuple[str | None, str]] = set()
    for metric in metrics:
        if "MetricStat" not in metric:
            continue
        assert metric["Id"] in expression["Expression"]
        dimensions = {d["Name"]: d["Value"] for d in metric["MetricStat"]["Metric"]["Dimensions"]}
        assert dimensions["TableName"] == {"Ref": "DoorstepTable"}
        covered.add((dimensions.get("GlobalSecondaryIndexName"), metric["MetricStat"]["Metric"]["MetricName"]))
    assert covered == {(index, kind) for index in (None, *indexes)
                       for kind in ("ReadThrottleEvents", "WriteThrottleEvents")}


def test_log_retention_default_is_30_days_and_a_value_cloudwatch_accepts() -> None:
    parameter = RESOURCES["Parameters"]["LogRetentionDays"]
    assert parameter["Default"] == 30 and 30 in parameter["AllowedValues"]


def test_every_scheduled_function_gets_an_errors_alarm_once() -> None:
    template = _template()
    # ReleaseDeferredNotifications has its own in resources.json; the later schedule has none
    assert add_schedule_error_alarms(template) == ["SomeScheduleAddedLaterErrorsAlarm"]
    assert add_schedule_error_alarms(template) == []
    alarm = template["Resources"]["SomeScheduleAddedLaterErrorsAlarm"]["Properties"]
    assert (alarm["Namespace"], alarm["MetricName"]) == ("AWS/Lambda", "Errors")
    assert alarm["Dimensions"] == [{"Name": "FunctionName", "Value": {"Ref": "SomeScheduleAddedLater"}}]
    add_operations(template)
    assert template["Resources"]["SomeScheduleAddedLaterErrorsAlarm"]["Properties"]["OKActions"] == [
        {"Ref": ALARM_TOPIC}]
