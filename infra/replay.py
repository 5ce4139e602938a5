"""Replay what was parked: stream records on a dead-letter queue, and notifications that failed for good.

    python -m infra.replay stream --local [--function stream_pipeline] [--file .local/stream-dead-letter.jsonl]
    python -m infra.replay stream --queue-url URL --function-name NAME   # deployed: SQS on-failure queue
    python -m infra.replay notifications --shipment shp_...             # failed_permanent ledger items
    python -m infra.replay dead-letters --local [--function stream_pipeline] [--day 2026-11-21] [--keep]
    python -m infra.replay dead-letters --bucket B --function stream_pipeline --function-name NAME  # deployed

`dead-letters` replays the record bodies the stream functions keep in S3 when they report records as failed
(`dead-letters/<function>/<day>/`, chalicelib/storage/dead_letters.py): unlike the queue's positions, they
outlive the stream's 24 h retention. An object is deleted once its records went through (unless --keep).

A deployed stream's on-failure message holds the failed batch's shard and sequence-number range, not the
records: they are read again from the stream (within its 24 h retention) and sent to the function as
Lambda would. Everything replayed is safe to run twice (deterministic event ids, conditional writes, the
notification ledger), so a replay that fails halfway is simply run again. A message or line is removed
only when its records went through.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

PROJECT_DIR = Path(__file__).resolve().parent.parent
Handler = Callable[[dict[str, Any], Any], Any]


def _failed_ids(result: Any) -> list[str]:
    return [str(f["itemIdentifier"]) for f in (result or {}).get("batchItemFailures", [])]


def replay_file(path: Path, handler: Handler) -> tuple[int, int]:
    """Send each parked record of a local dead-letter file to `handler` again; keep only those that fail.

    Returns (replayed, still failing).
    """
    if not path.exists():
        return 0, 0
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    kept: list[str] = []
    for line in lines:
        record = json.loads(line)["record"]
        try:
            failed = _failed_ids(handler({"Records": [record]}, None))
        except Exception as exc:  # a crash is reported and the line kept
            print(f"  {record.get('eventID')}: {type(exc).__name__}: {exc}", file=sys.stderr)
            failed = [record["dynamodb"]["SequenceNumber"]]
        if failed:
            kept.append(line)
    path.write_text("".join(f"{line}\n" for line in kept))
    return len(lines) - len(kept), len(kept)


def batch_records(streams: Any, info: dict[str, Any], region: str) -> list[dict[str, Any]]:
    """The records of a failed batch (`DDBStreamBatchInfo`), read again from the stream, in Lambda's shape."""
    from infra.local.streams import to_lambda_record

    iterator = streams.get_shard_iterator(StreamArn=info["streamArn"], ShardId=info["shardId"],
                                          ShardIteratorType="AT_SEQUENCE_NUMBER",
                                          SequenceNumber=info["startSequenceNumber"])["ShardIterator"]
    end = int(info["endSequenceNumber"])
    records: list[dict[str, Any]] = []
    while iterator:
        response = streams.get_records(ShardIterator=iterator, Limit=1000)
        page = response.get("Records", [])
        for record in page:
            if int(record["dynamodb"]["SequenceNumber"]) > end:
                return records
            records.append(to_lambda_record(record, info["streamArn"], region))
        if not page:
            break
        iterator = response.get("NextShardIterator")
    return records


def replay_queue(sqs: Any, streams: Any, queue_url: str, invoke: Handler, region: str,
                 max_messages: int = 100) -> tuple[int, int]:
    """Replay the batches named by the on-failure queue's messages; delete a message once its batch went
    through. Returns (batches replayed, batches still failing)."""
    done = failing = 0
    while done + failing < max_messages:
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                       VisibilityTimeout=300).get("Messages", [])
        if not messages:
            break
        for message in messages:
            info = json.loads(message["Body"]).get("DDBStreamBatchInfo")
            if info is None:
                failing += 1
                continue
            records = batch_records(streams, info, region)
            if records and _failed_ids(invoke({"Records": records}, None)):
                failing += 1  # left on the queue; it shows again after the visibility timeout
                continue
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
            done += 1
    return done, failing


def replay_dead_letters(s3: Any, bucket: str, function: str, invoke: Handler, day: str | None = None,
                        keep: bool = False) -> tuple[int, int]:
    """Send each dead-letter object's records of `function` (of one day) through `invoke`, one object per
    call, as Lambda would; delete an object whose records all went through (unless `keep`).

    Returns (objects replayed, objects still failing). Safe to run twice: the consumers ignore what they
    have already applied (a driver's fixes at or before its last processed fix, a delivery or a notification
    already claimed).
    """
    from chalicelib.storage.dead_letters import PREFIX

    prefix = f"{PREFIX}/{function}/" + (f"{day}/" if day else "")
    keys = [str(item["Key"]) for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            for item in page.get("Contents", [])]
    done = failing = 0
    for key in keys:
        records = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())["records"]
        try:
            failed = _failed_ids(invoke({"Records": records}, None))
        except Exception as exc:  # a crash is reported and the object kept
            print(f"  {key}: {type(exc).__name__}: {exc}", file=sys.stderr)
            failed = ["*"]
        if failed:
            failing += 1  # a failing replay wrote the same records to the same key again: it stays
            continue
        if not keep:
            s3.delete_object(Bucket=bucket, Key=key)
        done += 1
    return done, failing


def lambda_invoker(client: Any, function_name: str) -> Handler:
    def invoke(event: dict[str, Any], _context: Any) -> Any:
        response = client.invoke(FunctionName=function_name, Payload=json.dumps(event, default=str).encode())
        payload = json.loads(response["Payload"].read() or b"{}")
        if response.get("FunctionError"):
            raise RuntimeError(f"{function_name} failed: {payload}")
        return payload
    return invoke


def replay_notifications(shipment_id: str) -> list[str]:
    """Send again the shipment's notifications that failed for good (e.g. after fixing a sender identity).

    Each is decided again now: one whose status has moved on is dropped as superseded, not sent.
    """
    from chalicelib.notifications import service as notifications_service
    from chalicelib.storage.repository import Repository

    repo = Repository()
    ledger, _ = notifications_service.notify_parts(repo)
    lines = []
    for entry in ledger.entries(shipment_id):
        if entry.get("state") != "failed_permanent":
            continue
        raw = entry.get("due_event")
        if not raw:
            lines.append(f"{entry['SK']}: no event recorded with it; cannot replay")
            continue
        channel = entry["SK"].split("#")[3]
        outcomes = notifications_service.notify(repo, json.loads(raw), channel_only=channel, replay=True)
        lines.append(f"{entry['SK']}: {', '.join(o.result for o in outcomes) or 'nothing to send'}")
    return lines


def _use_local_stack(demo: Path) -> None:
    """Point this process at the running local stack, as its stream runner is."""
    import os

    from infra.local.stack import app_environment

    try:
        written = json.loads(demo.read_text())
        moto_url = written["moto_url"]
    except (OSError, KeyError, ValueError) as exc:
        raise SystemExit(f"replay: is `make run` up? ({exc})") from None
    # DynamoDB is DynamoDB Local's (absent from a demo.json of an older stack: moto's then).
    os.environ.update(app_environment(moto_url, dynamodb_url=written.get("dynamodb_url")))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.replay", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    stream = commands.add_parser("stream", help="replay stream records from a dead-letter queue or file")
    where = stream.add_mutually_exclusive_group(required=True)
    where.add_argument("--local", action="store_true", help="the local stack's dead-letter file")
    where.add_argument("--queue-url", help="the deployed on-failure SQS queue (PipelineDeadLetterQueueUrl)")
    stream.add_argument("--function", default="stream_pipeline", help="the app function to run (local)")
    stream.add_argument("--file", type=Path, default=None, help="dead-letter file (default: the function's)")
    stream.add_argument("--function-name", help="the deployed Lambda to invoke (with --queue-url)")
    letters = commands.add_parser("dead-letters", help="replay the record bodies kept in S3 by the stream functions")
    source = letters.add_mutually_exclusive_group(required=True)
    source.add_argument("--local", action="store_true", help="the local stack's bucket, run in process")
    source.add_argument("--bucket", help="the deployed app bucket (ProofBucket)")
    letters.add_argument("--function", choices=("stream_pipeline", "webhook_sender"), action="append",
                         help="whose dead letters (repeatable; default: both)")
    letters.add_argument("--function-name", action="append", default=[],
                         help="with --bucket: the deployed Lambda of each --function, in the same order")
    letters.add_argument("--day", help="only this day's objects (yyyy-mm-dd)")
    letters.add_argument("--keep", action="store_true", help="keep the objects after a successful replay")
    letters.add_argument("--demo", type=Path, default=PROJECT_DIR / ".local" / "demo.json",
                         help="with --local: the running stack's demo.json")
    notes = commands.add_parser("notifications", help="re-send a shipment's permanently failed notifications")
    notes.add_argument("--shipment", required=True)
    stream.add_argument("--demo", type=Path, default=PROJECT_DIR / ".local" / "demo.json",
                        help="with --local: the running stack's demo.json (its moto URL)")
    notes.add_argument("--demo", type=Path, default=None,
                       help="the local stack's demo.json; without it, the AWS account of your credentials")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(PROJECT_DIR))
    demo = args.demo if args.command == "notifications" else (args.demo if args.local else None)
    if demo is not None:
        _use_local_stack(demo)
    if args.command == "dead-letters":
        return _dead_letters_command(parser, args)

    if args.command == "notifications":
        for line in replay_notifications(args.shipment):
            print(line)
        return 0
    if args.local:
        import app as app_module
        from infra.local.functions import handler_of
        from infra.local.streams import CONSUMERS

        files = {name: dead_letters for name, _checkpoint, dead_letters, _config in CONSUMERS}
        if args.function not in files and args.file is None:
            parser.error(f"--function must be one of {', '.join(files)} (or give --file)")
        path = args.file or PROJECT_DIR / ".local" / files[args.function]
        replayed, failing = replay_file(path, handler_of(app_module.app, args.function))
        print(f"{replayed} record(s) replayed, {failing} still failing (kept in {path})")
        return 1 if failing else 0
    if not args.function_name:
        parser.error("--queue-url needs --function-name")
    import boto3

    session = boto3.session.Session()
    region = session.region_name or "us-east-1"
    done, failing = replay_queue(session.client("sqs"), session.client("dynamodbstreams"), args.queue_url,
                                 lambda_invoker(session.client("lambda"), args.function_name), region)
    print(f"{done} batch(es) replayed, {failing} still failing (left on the queue)")
    return 1 if failing else 0


def _dead_letters_command(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    import boto3

    functions = args.function or ["stream_pipeline", "webhook_sender"]
    if args.local:
        import app as app_module
        from chalicelib.core.config import get_settings
        from chalicelib.storage.blobs import BlobStore
        from infra.local.functions import handler_of

        s3, bucket = BlobStore().client, get_settings().bucket_name
        invokers = [handler_of(app_module.app, f) for f in functions]
    else:
        if len(args.function_name) != len(functions):
            parser.error("--bucket needs one --function-name per --function (default functions: 2)")
        session = boto3.session.Session()
        s3, bucket = session.client("s3"), args.bucket
        invokers = [lambda_invoker(session.client("lambda"), name) for name in args.function_name]
    still = 0
    for function, invoke in zip(functions, invokers, strict=True):
        done, failing = replay_dead_letters(s3, bucket, function, invoke, day=args.day, keep=args.keep)
        print(f"{function}: {done} dead-letter object(s) replayed, {failing} still failing (kept)")
        still += failing
    return 1 if still else 0


if __name__ == "__main__":
    raise SystemExit(main())
