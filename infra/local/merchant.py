"""`make merchant NAME=Acme`: create a merchant (a tenant) and print its API key once.

    python -m infra.local.merchant --name Acme [--json] [--demo .local/demo.json]

Where it goes:

- With a stage's environment exported (`DOORSTEP_TABLE_NAME` set, as on a deployment machine), into that stage's
  table: exactly `python -m chalicelib.cli create-merchant`.
- Otherwise into the running local stack of `make run`, found through the `demo.json` it wrote (its DynamoDB
  Local and moto addresses); the stage's other settings come from `.chalice/config.json`, as `make run` uses them.
  Nothing needs exporting. Run it again for a third, fourth, ... tenant.

Without either, it says what is missing (no traceback) and exits 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from infra.local.stack import DEFAULT_DEMO_PATH, app_environment, create_merchant

NO_STACK = ("No local stack: {path} is missing. Start one with `make run` (in another terminal), or export the "
            "stage's environment (DOORSTEP_TABLE_NAME, ...) to create the merchant there.")
STACK_DOWN = ("The local stack of {path} does not answer at {url}: is `make run` still running? Start it again, "
              "or export the stage's environment (DOORSTEP_TABLE_NAME, ...) to create the merchant there.")


class MerchantError(RuntimeError):
    """What the operator must fix; printed as one line, exit status 2."""


def _answers(url: str, timeout_s: float = 3.0) -> bool:
    """Does anything serve HTTP at `url` (any status counts: DynamoDB Local answers a bare GET with 400)?"""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s):
            return True
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError):
        return False


def local_stack_environment(demo_path: Path) -> dict[str, str]:
    """The app's environment against the running `make run` stack that wrote `demo_path`."""
    try:
        demo: dict[str, Any] = json.loads(demo_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MerchantError(NO_STACK.format(path=demo_path)) from None
    except (OSError, ValueError) as exc:
        raise MerchantError(f"{demo_path} cannot be read ({exc}); restart `make run`.") from None
    moto_url, dynamodb_url = demo.get("moto_url"), demo.get("dynamodb_url")
    if not isinstance(moto_url, str) or not moto_url:
        raise MerchantError(f"{demo_path} names no moto_url; restart `make run`.")
    probe = dynamodb_url if isinstance(dynamodb_url, str) and dynamodb_url else moto_url
    if not _answers(probe):
        raise MerchantError(STACK_DOWN.format(path=demo_path, url=probe))
    return app_environment(moto_url, base_url=demo.get("base_url"),
                           dynamodb_url=dynamodb_url if isinstance(dynamodb_url, str) else None)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.local.merchant", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", required=True, help="the merchant's display name")
    parser.add_argument("--json", action="store_true", help="print a JSON object instead of text")
    parser.add_argument("--demo", type=Path, default=DEFAULT_DEMO_PATH, help="demo.json written by `make run`")
    args = parser.parse_args(argv)
    name = args.name.strip()
    if not 1 <= len(name) <= 200:
        parser.error("--name must be 1 to 200 characters (make merchant NAME=...)")
    if os.environ.get("DOORSTEP_TABLE_NAME"):
        from chalicelib.cli import main as cli_main

        return cli_main(["create-merchant", "--name", name, *(["--json"] if args.json else [])])
    try:
        env = local_stack_environment(args.demo)
        merchant_id, api_key = create_merchant(env, name)
    except MerchantError as exc:
        print(f"make merchant: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # e.g. the table is missing: one line for the operator, not a traceback
        print(f"make merchant: creating the merchant in the local stack failed: {type(exc).__name__}: {exc}",
              file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"merchant_id": merchant_id, "api_key": api_key}))
    else:
        print(f"merchant_id: {merchant_id}")
        print(f"api_key:     {api_key}")
        print(f"Created in the local stack ({env['DOORSTEP_PUBLIC_BASE_URL']}). The API key is shown only now; "
              "Doorstep stores only its hash.", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
