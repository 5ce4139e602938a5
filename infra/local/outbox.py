"""`make outbox`: the SMS and email the local stack sent, as the emulator recorded them.

Reads moto's state (`GET /moto-api/data.json`) of the running `make run` (its URL is in
.local/demo.json). Nothing here talks to a real provider.
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
    email = [{"to": ", ".join(m.get("destinations", {}).get("ToAddresses", [])), "from": m.get("source"),
              "subject": m.get("subject"), "text": m.get("body")} for m in state.get("ses", {}).get("Message", [])]
    return {"sms": sms, "email": email}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.local.outbox", description=__doc__)
    parser.add_argument("--demo", type=Path, default=DEFAULT_DEMO_PATH, help="demo.json written by `make run`")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    args = parser.parse_args(argv)
    try:
        moto_url = json.loads(args.demo.read_text())["moto_url"]
        sent = outbox(moto_url)
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
