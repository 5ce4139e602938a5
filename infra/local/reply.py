"""`make reply PHONE=+1... TEXT="..." [TO=+1...]`: a recipient's SMS reply, as AWS End User Messaging SMS would
deliver it, into the running local stack.

Publishes the inbound message's JSON to the emulator's SNS topic (`doorstep-inbound-sms` in moto, created if
absent), then hands the same SNS event to the app's `inbound_sms` function in this process (moto cannot invoke
a local function), exactly as the deployed subscription does. The two-way number `TO` is claimed for the demo
merchant first (as `PUT /v1/messaging/sms-number` would). STOP and HELP work as on AWS.
"""

from __future__ import annotations

import argparse
import json
import os
import uuid
from pathlib import Path
from typing import Any

from infra.local.stack import DEFAULT_DEMO_PATH

TOPIC = "doorstep-inbound-sms"
DEFAULT_TWO_WAY_NUMBER = "+14155550100"


def inbound_message(phone: str, text: str, to: str) -> dict[str, Any]:
    """End User Messaging SMS's inbound message body (what SNS carries as `Message`)."""
    return {"originationNumber": phone, "destinationNumber": to, "messageKeyword": text.split(" ")[0].upper(),
            "messageBody": text, "inboundMessageId": str(uuid.uuid4()), "previousPublishedMessageId": None}


def sns_event(topic_arn: str, message: dict[str, Any]) -> dict[str, Any]:
    return {"Records": [{"EventSource": "aws:sns", "EventVersion": "1.0", "Sns": {
        "Type": "Notification", "MessageId": str(uuid.uuid4()), "TopicArn": topic_arn,
        "Message": json.dumps(message), "Timestamp": "", "MessageAttributes": {}}}]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.local.reply", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--phone", required=True, help="the recipient's number (E.164), as on the shipment")
    parser.add_argument("--text", required=True, help="the reply; STOP and HELP are keywords")
    parser.add_argument("--to", default=DEFAULT_TWO_WAY_NUMBER, help="the merchant's two-way number")
    parser.add_argument("--demo", type=Path, default=DEFAULT_DEMO_PATH, help="the running stack's demo.json")
    args = parser.parse_args(argv)
    try:
        demo = json.loads(args.demo.read_text())
    except (OSError, ValueError) as exc:
        raise SystemExit(f"reply: is `make run` up? ({exc})") from None
    from infra.local.stack import app_environment

    os.environ.update(app_environment(demo["moto_url"], dynamodb_url=demo.get("dynamodb_url")))
    import boto3

    import app as app_module
    from chalicelib.messaging.service import set_sms_number
    from chalicelib.storage import get_repository
    from infra.local.functions import handler_of

    set_sms_number(get_repository(), str(demo["merchant_id"]), args.to)
    sns = boto3.client("sns", endpoint_url=demo["moto_url"])
    topic_arn = sns.create_topic(Name=TOPIC)["TopicArn"]
    message = inbound_message(args.phone, args.text, args.to)
    sns.publish(TopicArn=topic_arn, Message=json.dumps(message))
    outcome = handler_of(app_module.app, "inbound_sms")(sns_event(topic_arn, message), None)
    print(json.dumps(outcome))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
