"""What `make package` adds for operations, from the packaged template itself (so nothing added later is missed).

- every function gets its own log group with the `LogRetentionDays` retention, created by the stack before
  the function first logs (`LoggingConfig.LogGroup`), so no log group is ever left to grow without limit;
- every scheduled function has an alarm on its errors (those resources.json does not declare get one);
- every alarm notifies the `AlarmTopic` SNS topic when it fires and when it recovers;
- the `Dashboard` (CloudWatch) with the API, ingest, pipeline, notification, webhook, DLQ and DynamoDB figures
  and the state of every alarm.

The metric names of the `Doorstep` namespace are the ones chalicelib emits through powertools
(`metrics.add_metric(name=...)`, dimension `service=doorstep`); tests/unit/test_operations_template.py checks
each one is still emitted somewhere.
"""

from __future__ import annotations

import json
from typing import Any

ALARM_TOPIC = "AlarmTopic"
DASHBOARD = "Dashboard"
RETENTION_PARAMETER = "LogRetentionDays"
FUNCTION_TYPE = "AWS::Serverless::Function"
ALARM_TYPE = "AWS::CloudWatch::Alarm"
API_STAGE = "api"  # .chalice/config.json api_gateway_stage, in every deployed stage
API_NAME = "${AWS::StackName}-api"  # RestAPI Name in resources.json: ApiName is the metrics' dimension
APP_NAMESPACE = "Doorstep"
APP_DIMENSION = ("service", "doorstep")

# (title, metric names) of the app's own metrics, one widget each.
APP_METRIC_WIDGETS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Ingest: fixes accepted, rejected, duplicate", ("PingsAccepted", "PingsRejected", "PingsDuplicate")),
    ("Notifications: sent, failed, retried", ("NotificationsSent", "NotificationsFailed", "NotificationsRetried")),
    ("Webhooks: delivered, failed attempts, given up, endpoints paused",
     ("WebhooksDelivered", "WebhookAttemptsFailed", "WebhooksGivenUp", "WebhookEndpointsPaused")),
    ("Storage faults: DynamoDB unavailable, dead letters not kept", ("StorageUnavailable", "DeadLetterWriteFailed")),
    ("Pipeline output: geofence and zone events, shipments delayed",
     ("GeofenceEvents", "ZoneEvents", "ShipmentsDelayed")),
    ("Fleet: drivers gone offline, back online", ("DriversOffline", "DriversOnline")),
    ("Exception queue: opened, acknowledged, resolved; console sign-ins",
     ("ExceptionsOpened", "ExceptionsAcknowledged", "ExceptionsResolved", "ConsoleSignIns")),
    ("Messaging: sent, rate limited, recipients notified, inbound SMS, STOP",
     ("MessagesSent", "MessagesRateLimited", "MessageNotificationsSent", "InboundSmsMessages", "InboundSmsOptOuts")),
)


def log_group_id(function_id: str) -> str:
    return f"{function_id}LogGroup"


def of_type(template: dict[str, Any], kind: str) -> list[str]:
    return sorted(name for name, resource in template["Resources"].items() if resource.get("Type") == kind)


def add_log_groups(template: dict[str, Any]) -> list[str]:
    """A log group with the stack's retention for every function; returns the functions' logical ids.

    The group is named after the stack, not the function: a function that has run already has its
    `/aws/lambda/<function>` group (created by Lambda, never expiring), and CloudFormation cannot create a
    group that exists. The name stays under `/aws/lambda/`, where `.chalice/policy-<stage>.json` lets the
    functions write.
    """
    resources = template["Resources"]
    functions = of_type(template, FUNCTION_TYPE)
    for function_id in functions:
        resources[log_group_id(function_id)] = {
            "Type": "AWS::Logs::LogGroup",
            "Properties": {
                "LogGroupName": {"Fn::Sub": f"/aws/lambda/${{AWS::StackName}}/{function_id}"},
                "RetentionInDays": {"Ref": RETENTION_PARAMETER},
            },
        }
        properties = resources[function_id]["Properties"]
        properties["LoggingConfig"] = {**properties.get("LoggingConfig", {}),
                                       "LogGroup": {"Ref": log_group_id(function_id)}}
    return functions


def _alarms_on_errors_of(template: dict[str, Any]) -> set[str]:
    """Logical ids of the functions some alarm already watches `AWS/Lambda` `Errors` of."""
    watched = set()
    for alarm_id in of_type(template, ALARM_TYPE):
        properties = template["Resources"][alarm_id]["Properties"]
        if (properties.get("Namespace"), properties.get("MetricName")) != ("AWS/Lambda", "Errors"):
            continue
        for dimension in properties.get("Dimensions", []):
            if dimension.get("Name") == "FunctionName" and isinstance(dimension.get("Value"), dict):
                watched.add(str(dimension["Value"].get("Ref")))
    return watched


def add_schedule_error_alarms(template: dict[str, Any]) -> list[str]:
    """An `<Function>ErrorsAlarm` for every scheduled function no alarm watches yet; returns the alarms added.

    A scheduled function has no queue or iterator age to show it is failing: only its errors do. Failing in
    2 of 3 five-minute periods, as the hand-written ones in resources.json.
    """
    resources = template["Resources"]
    watched = _alarms_on_errors_of(template)
    added = []
    for function_id in of_type(template, FUNCTION_TYPE):
        events = resources[function_id]["Properties"].get("Events", {})
        if function_id in watched or not any(e.get("Type") == "Schedule" for e in events.values()):
            continue
        alarm_id = f"{function_id}ErrorsAlarm"
        resources[alarm_id] = {"Type": ALARM_TYPE, "Properties": {
            "AlarmDescription": f"Doorstep {function_id}: the scheduled function keeps failing; its work waits "
                                "until it runs again. See docs/operations.md.",
            "Namespace": "AWS/Lambda", "MetricName": "Errors",
            "Dimensions": [{"Name": "FunctionName", "Value": {"Ref": function_id}}],
            "Statistic": "Sum", "Period": 300, "EvaluationPeriods": 3, "DatapointsToAlarm": 2, "Threshold": 1,
            "ComparisonOperator": "GreaterThanOrEqualToThreshold", "TreatMissingData": "notBreaching"}}
        added.append(alarm_id)
    return added


def add_alarm_actions(template: dict[str, Any]) -> list[str]:
    """Every alarm notifies the alarm topic on ALARM and on OK; returns the alarms' logical ids."""
    alarms = of_type(template, ALARM_TYPE)
    for alarm_id in alarms:
        properties = template["Resources"][alarm_id]["Properties"]
        properties["ActionsEnabled"] = True
        for key in ("AlarmActions", "OKActions"):
            actions = [a for a in properties.get(key, []) if a != {"Ref": ALARM_TOPIC}]
            properties[key] = [{"Ref": ALARM_TOPIC}, *actions]
    return alarms


def _app_metrics(names: tuple[str, ...]) -> list[list[Any]]:
    return [[APP_NAMESPACE, name, *APP_DIMENSION] for name in names]


def _widget(title: str, metrics: list[list[Any]], stat: str = "Sum", period: int = 60,
            **extra: Any) -> dict[str, Any]:
    return {"type": "metric", "width": 12, "height": 6,
            "properties": {"title": title, "region": "${AWS::Region}", "view": "timeSeries", "stacked": False,
                           "stat": stat, "period": period, "metrics": metrics, **extra}}


def dashboard_body(template: dict[str, Any]) -> dict[str, Any]:
    """The dashboard's JSON (with `${...}` references for Fn::Sub) for the functions and alarms in `template`."""
    resources = template["Resources"]
    functions = of_type(template, FUNCTION_TYPE)
    alarms = of_type(template, ALARM_TYPE)
    api = ["ApiName", API_NAME, "Stage", API_STAGE]
    stream_functions = [f for f in ("StreamPipeline", "WebhookSender") if f in resources]
    queues = [q for q in ("PipelineDeadLetterQueue", "WebhookDeadLetterQueue") if q in resources]
    table = ["TableName", "${DoorstepTable}"]
    widgets: list[dict[str, Any]] = [
        {"type": "alarm", "width": 24, "height": 3,
         "properties": {"title": "Alarms (docs/operations.md says what each means)",
                        "alarms": [f"${{{alarm}.Arn}}" for alarm in alarms], "sortBy": "stateUpdatedTimestamp"}},
        _widget("API: requests, 4xx, 5xx", [
            ["AWS/ApiGateway", "Count", *api],
            ["AWS/ApiGateway", "4XXError", *api],
            ["AWS/ApiGateway", "5XXError", *api],
        ]),
        _widget("API: latency (ms)", [
            ["AWS/ApiGateway", "Latency", *api, {"stat": "p50", "label": "p50"}],
            ["AWS/ApiGateway", "Latency", *api, {"stat": "p95", "label": "p95"}],
            ["AWS/ApiGateway", "Latency", *api, {"stat": "p99", "label": "p99"}],
            ["AWS/ApiGateway", "IntegrationLatency", *api, {"stat": "p95", "label": "integration p95"}],
        ], stat="p95"),
        _widget(APP_METRIC_WIDGETS[0][0], _app_metrics(APP_METRIC_WIDGETS[0][1])),
        _widget("Stream functions: iterator age (ms, max)", [
            ["AWS/Lambda", "IteratorAge", "FunctionName", f"${{{f}}}", {"label": f}] for f in stream_functions
        ], stat="Maximum"),
        _widget("Functions: errors and throttles", [
            ["AWS/Lambda", metric, "FunctionName", f"${{{f}}}", {"label": f"{f} {metric.lower()}"}]
            for f in functions for metric in ("Errors", "Throttles")
        ]),
        _widget("Dead-letter queues: messages visible (replay: docs/operations.md)", [
            ["AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", f"${{{q}.QueueName}}", {"label": q}]
            for q in queues
        ], stat="Maximum", period=300),
        *(_widget(title, _app_metrics(names)) for title, names in APP_METRIC_WIDGETS[1:]),
        _widget("DynamoDB: throttled events, system errors", [
            ["AWS/DynamoDB", "ReadThrottleEvents", *table],
            ["AWS/DynamoDB", "WriteThrottleEvents", *table],
            ["AWS/DynamoDB", "SystemErrors", *table, "Operation", "Query"],
            ["AWS/DynamoDB", "SystemErrors", *table, "Operation", "TransactWriteItems"],
        ]),
    ]
    return {"widgets": widgets}


def dashboard_resource(template: dict[str, Any]) -> dict[str, Any]:
    body = json.dumps(dashboard_body(template), separators=(",", ":"))
    return {"Type": "AWS::CloudWatch::Dashboard", "Properties": {"DashboardBody": {"Fn::Sub": body}}}


def add_operations(template: dict[str, Any]) -> None:
    """Log groups, schedule error alarms, alarm actions, the dashboard and its output: in place."""
    add_log_groups(template)
    add_schedule_error_alarms(template)
    add_alarm_actions(template)
    template["Resources"][DASHBOARD] = dashboard_resource(template)
    template.setdefault("Outputs", {})["DashboardUrl"] = {"Value": {"Fn::Sub": (
        "https://${AWS::Region}.console.aws.amazon.com/cloudwatch/home?region=${AWS::Region}"
        f"#dashboards:name=${{{DASHBOARD}}}")}}
