"""`make outbox`: the SMS and email the local stack sent, as the emulator recorded them, and the webhooks
the bundled receiver got.

Reads moto's state (`GET /moto-api/data.json`) and the webhook receiver's `GET /events` of the running
`make run` (their URLs are in .local/demo.json). Nothing here talks to a real provider.

moto offers no narrower read of what SNS and SES sent than that dump (the AWS APIs have none either).
Since DynamoDB runs on DynamoDB Local, the dump holds only the S3, SNS, SES and KMS models, which stay
small, instead of every table item and stream record.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.request
from pathlib import Path
from typing import Any

from infra.local.stack import DEFAULT_DEMO_PATH


def outbox(moto_url: str) -> dict[str, list[dict[str, Any]]]:
    with urllib.request.urlopen(f"{moto_url}/moto-api/data.json", timeout=5) as response:
        state = json.load(response)
    sms = [{"to": m.get("phone_number"), "text": m.get("message")} for m in state.get("sns", {}).get("SMS", [])]
    ses = state.get("ses", {})
    email = [{"to": ", ".join(m.get("destinations", {}).get("ToAddresses", [])), "from": m.get("source"),
              "subject": m.get("subject"), "text": m.get("body")} for m in ses.get("Message", [])]
    email += [raw_email(m) for m in ses.get("RawMessage", [])]
    return {"sms": sms, "email": email}


def raw_email(recorded: dict[str, Any]) -> dict[str, Any]:
    """A message sent with SendRawEmail (recipient emails, for their List-Unsubscribe headers), parsed."""
    from email import message_from_string
    from email.message import EmailMessage
    from email.policy import default

    parsed = message_from_string(str(recorded.get("raw_data") or ""), policy=default)
    assert isinstance(parsed, EmailMessage)
    body = parsed.get_body(preferencelist=("plain",))
    return {"to": ", ".join(recorded.get("destinations") or []), "from": recorded.get("source"),
            "subject": parsed["Subject"], "text": body.get_content() if body is not None else "",
            "list_unsubscribe": parsed["List-Unsubscribe"]}


def webhooks(receiver_url: str) -> list[dict[str, Any]]:
    """One line per event id the receiver got: type, shipment, how often it arrived, all signatures valid."""
    with urllib.request.urlopen(f"{receiver_url}/events", timeout=5) as response:
        received = json.load(response).get("events", [])
    by_id: dict[str, dict[str, Any]] = {}
    for event in received:
        key = str(event.get("event_id"))
        seen = by_id.setdefault(key, {"event_id": key, "type": event.get("type"),
                                      "shipment_id": event.get("shipment_id"), "count": 0, "signature_valid": True})
        seen["count"] += 1
        seen["signature_valid"] = seen["signature_valid"] and bool(event.get("signature_valid"))
    return list(by_id.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.local.outbox", description=__doc__)
    parser.add_argument("--demo", type=Path, default=DEFAULT_DEMO_PATH, help="demo.json written by `make run`")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    args = parser.parse_args(argv)
    try:
        demo = json.loads(args.demo.read_text())
        sent: dict[str, list[dict[str, Any]]] = outbox(demo["moto_url"])
        if demo.get("webhook_receiver_url"):
            sent["webhooks"] = webhooks(demo["webhook_receiver_url"])
    except (OSError, KeyError, ValueError) as exc:
        print(f"outbox: is `make run` up? ({exc})", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(sent, indent=2))
        return 0
    print(f"{len(sent['sms'])} SMS, {len(sent['email'])} email sent through the emulator")
    for m in sent["sms"]:
        print(f"\nSMS to {m['to']}:\n  {m['text']}")
    for m in sent["email"]:
        print(f"\nEmail to {m['to']} from {m['from']}: {m['subject']}")
        print("  " + str(m["text"])[:500].replace("\n", "\n  "))
    hooks = sent.get("webhooks", [])
    if hooks:
        print(f"\n{len(hooks)} webhook events received by the demo receiver "
              f"({sum(h['count'] for h in hooks)} deliveries):")
    for h in hooks:
        valid = "signature valid" if h["signature_valid"] else "SIGNATURE INVALID"
        print(f"  {h['type']:<22} {h['shipment_id']}  {valid}  x{h['count']}  ({h['event_id']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
