"""Operator commands. `python -m chalicelib.cli create-merchant --name "Acme"` prints the API key once."""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chalicelib.cli", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create-merchant", help="create a merchant and print its API key once")
    create.add_argument("--name", required=True, help="the merchant's display name")
    create.add_argument("--json", action="store_true", help="print a JSON object instead of text")
    args = parser.parse_args(argv)

    name = args.name.strip()
    if not 1 <= len(name) <= 200:
        parser.error("--name must be 1 to 200 characters")
    from chalicelib.core.config import SettingsError, get_settings

    try:
        get_settings()
    except SettingsError as exc:  # name the variables, not a traceback
        print(f"{exc}. Export the stage's environment (see README, 'Configuration'); for the local stack of "
              "`make run`, use `make merchant NAME=...`, which needs none.", file=sys.stderr)
        return 2
    from chalicelib.fleet import service as fleet
    from chalicelib.storage.repository import Repository

    merchant_id, api_key = fleet.create_merchant(Repository(), name)
    if args.json:
        print(json.dumps({"merchant_id": merchant_id, "api_key": api_key}))
    else:
        print(f"merchant_id: {merchant_id}")
        print(f"api_key:     {api_key}")
        print("The API key is shown only now; Doorstep stores only its hash.", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
