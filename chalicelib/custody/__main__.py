"""`python -m chalicelib.custody verify <file> [--objects]`: check a custody chain (the JSON of
GET /v1/shipments/{id}/custody); with --objects, also re-hash its proof objects in S3 (the stage's bucket, with
the caller's AWS access), so a replaced photo is caught. `python -m chalicelib.custody rotate-key`: a new receipt
signing key in KMS (the old ones stay published). Exit status 0: intact, 1: broken, 2: unreadable input."""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Callable
from typing import Any

from chalicelib.custody import rules


def verify_document(document: Any, read_object: Callable[[str], bytes | None] | None = None) -> list[str]:
    """Problems of a custody document (empty: it verifies)."""
    if not isinstance(document, dict) or not isinstance(document.get("events"), list):
        return ["not a custody document (expected shipment_id, events, head)"]
    shipment_id = str(document.get("shipment_id"))
    verdict = rules.verify_chain(shipment_id, document["events"], document.get("head"))
    problems = list(verdict.problems)
    if read_object is not None:
        for key, expected in rules.proof_hashes(document["events"]).items():
            content = read_object(key)
            if content is None:
                problems.append(f"proof {key}: object missing")
            elif hashlib.sha256(content).hexdigest() != expected:
                problems.append(f"proof {key}: object changed since it was attached (SHA-256 differs)")
    return problems


def _s3_reader() -> Callable[[str], bytes | None]:
    from chalicelib.core.config import get_settings
    from chalicelib.shipments.proof import blob_store

    client = blob_store().client
    bucket = get_settings().bucket_name

    def read(key: str) -> bytes | None:
        try:
            return bytes(client.get_object(Bucket=bucket, Key=key)["Body"].read())
        except client.exceptions.NoSuchKey:
            return None

    return read


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chalicelib.custody")
    commands = parser.add_subparsers(dest="command", required=True)
    verify = commands.add_parser("verify", help="check a custody chain document")
    verify.add_argument("file", help="the JSON of GET /v1/shipments/{id}/custody ('-': standard input)")
    verify.add_argument("--objects", action="store_true", help="also re-hash the proof objects in S3")
    commands.add_parser("rotate-key", help="create a new receipt signing key in KMS and publish it")
    args = parser.parse_args(argv)
    if args.command == "rotate-key":
        from chalicelib.custody.service import rotate_key
        from chalicelib.storage import get_repository

        key = rotate_key(get_repository())
        print(json.dumps({"kid": key.kid, "kms_key_id": key.kms_key_id}))
        return 0
    try:
        if args.file == "-":
            text = sys.stdin.read()
        else:
            with open(args.file, encoding="utf-8") as source:
                text = source.read()
        document = json.loads(text)
    except (OSError, ValueError) as exc:
        print(f"cannot read {args.file}: {exc}", file=sys.stderr)
        return 2
    problems = verify_document(document, _s3_reader() if args.objects else None)
    for problem in problems:
        print(problem)
    if problems:
        return 1
    print(f"ok: {len(document['events'])} events, head {(document.get('head') or {}).get('hash')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
