"""Local DynamoDB Streams runner: what Lambda's event source mappings do, against DynamoDB Local's stream.

It reads every shard of the table's stream (and picks up new shards), builds
exactly the event Lambda delivers, drops the records the mapping's FilterCriteria
reject (infra/resources.json, evaluated by infra/local/event_filter.py as Lambda
does), invokes the same handler the Lambda runs, retries from the first record
the handler reports as failed (ReportBatchItemFailures), parks records that keep
failing in a local dead-letter file, and checkpoints the last processed sequence
number per shard so a restart does not replay everything.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from infra.local.event_filter import EventFilter

log = logging.getLogger("doorstep.streams")

Handler = Callable[[dict[str, Any], Any], Any]


@dataclass
class RunnerConfig:
    batch_size: int = 100
    # MaximumBatchingWindowInSeconds: admitted records gather up to batch_size for at most this long. Locally
    # a batch also goes as soon as its shard has nothing more to give (one consumer: waiting out the window
    # then would only add latency), so the window only fills batches when the stream has a backlog.
    batching_window_s: float = 0.0
    max_retry_attempts: int = 5  # as the deployed event source mapping
    poll_interval_s: float = 0.1
    shard_refresh_s: float = 2.0
    # The mapping's FilterCriteria: records no pattern matches are dropped (and checkpointed past) without
    # an invocation, as Lambda does. Empty: every record is delivered.
    event_filter: EventFilter = field(default_factory=lambda: EventFilter(()))
    # Where a shard without a checkpoint starts: TRIM_HORIZON (all retained records; right for a fresh in-memory
    # engine) or LATEST (as the deployed event source mapping does).
    starting_position: str = "TRIM_HORIZON"


def to_lambda_record(record: dict[str, Any], stream_arn: str, region: str) -> dict[str, Any]:
    """A GetRecords record in the exact shape Lambda hands to a DynamoDB stream function."""
    ddb = dict(record["dynamodb"])
    created = ddb.get("ApproximateCreationDateTime")
    if isinstance(created, datetime):
        ddb["ApproximateCreationDateTime"] = int(created.timestamp())
    elif isinstance(created, float):  # as it comes on the wire (see raw_records): epoch seconds
        ddb["ApproximateCreationDateTime"] = int(created)
    return {
        "eventID": record["eventID"],
        "eventName": record["eventName"],
        "eventVersion": record.get("eventVersion", "1.1"),
        "eventSource": "aws:dynamodb",
        "awsRegion": record.get("awsRegion", region),
        "dynamodb": ddb,
        "eventSourceARN": stream_arn,
    }


def raw_records(response_dict: dict[str, Any], customized_response_dict: dict[str, Any], **_: Any) -> None:
    """botocore `before-parse` hook for GetRecords: the records as they came on the wire, which is already the
    shape Lambda delivers (typed attribute values, base64 binaries, epoch seconds). botocore's shape-driven
    parse of a 100-record page (and the conversion back) was a quarter of a busy runner's time; Lambda's
    poller costs the function nothing."""
    if response_dict.get("status_code", 200) >= 300:
        return
    body = json.loads(response_dict["body"] or b"{}")
    if "Records" in body:
        customized_response_dict["Records"] = body.pop("Records")
        response_dict["body"] = json.dumps(body).encode()


class StreamRunner:
    def __init__(self, dynamodb: Any, streams: Any, table_name: str, handler: Handler, checkpoint_file: Path,
                 dead_letter_file: Path, config: RunnerConfig | None = None) -> None:
        self.dynamodb = dynamodb
        self.streams = streams
        self.table_name = table_name
        self.handler = handler
        self.checkpoint_file = checkpoint_file
        self.dead_letter_file = dead_letter_file
        self.config = config or RunnerConfig()
        self.region = streams.meta.region_name
        streams.meta.events.register("before-parse.dynamodb-streams.GetRecords", raw_records,
                                     unique_id="doorstep-raw-stream-records")
        self.stream_arn = dynamodb.describe_table(TableName=table_name)["Table"]["LatestStreamArn"]
        self.checkpoints: dict[str, str] = self._load_checkpoints()
        self.iterators: dict[str, str | None] = {}
        self.closed: set[str] = set()
        self.pending: dict[str, list[dict[str, Any]]] = {}  # admitted, not yet delivered (batching window)
        self.pending_since: dict[str, float] = {}
        self.last_read: dict[str, str] = {}  # per shard, the sequence number of the last record read
        self.invocations = 0
        self.filtered_out = 0  # records the FilterCriteria dropped
        self._stop = threading.Event()
        self._last_refresh = 0.0

    # --- checkpoints ---------------------------------------------------------

    def _load_checkpoints(self) -> dict[str, str]:
        if self.checkpoint_file.exists():
            data = json.loads(self.checkpoint_file.read_text())
            if data.get("stream_arn") == self.stream_arn:
                return dict(data.get("shards", {}))
        return {}

    def _save_checkpoints(self) -> None:
        self.checkpoint_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.checkpoint_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"stream_arn": self.stream_arn, "shards": self.checkpoints}))
        tmp.replace(self.checkpoint_file)

    # --- shards --------------------------------------------------------------

    def refresh_shards(self) -> None:
        start: str | None = None
        while True:
            kwargs: dict[str, Any] = {"StreamArn": self.stream_arn}
            if start:
                kwargs["ExclusiveStartShardId"] = start
            description = self.streams.describe_stream(**kwargs)["StreamDescription"]
            for shard in description["Shards"]:
                shard_id = shard["ShardId"]
                if shard_id in self.iterators or shard_id in self.closed:
                    continue
                self.iterators[shard_id] = self._iterator(shard_id)
            start = description.get("LastEvaluatedShardId")
            if not start:
                break
        self._last_refresh = time.monotonic()

    def _iterator(self, shard_id: str) -> str:
        kwargs: dict[str, Any] = {"StreamArn": self.stream_arn, "ShardId": shard_id}
        if shard_id in self.checkpoints:
            kwargs.update(ShardIteratorType="AFTER_SEQUENCE_NUMBER", SequenceNumber=self.checkpoints[shard_id])
        else:
            kwargs["ShardIteratorType"] = self.config.starting_position
        return str(self.streams.get_shard_iterator(**kwargs)["ShardIterator"])

    # --- processing ------------------------------------------------------------

    def poll_once(self) -> int:
        """Read each shard once and handle what arrived; returns the number of records read (delivered or
        filtered out), so a caller can drain the stream until it answers 0."""
        if time.monotonic() - self._last_refresh > self.config.shard_refresh_s or not self.iterators:
            self.refresh_shards()
        read = 0
        for shard_id, iterator in list(self.iterators.items()):
            if iterator is None:
                continue
            response = self.streams.get_records(ShardIterator=iterator, Limit=self.config.batch_size)
            records = [to_lambda_record(r, self.stream_arn, self.region) for r in response.get("Records", [])]
            next_iterator = response.get("NextShardIterator")
            kept = [r for r in records if self.config.event_filter.matches(r)]
            self.filtered_out += len(records) - len(kept)
            pending = self.pending.setdefault(shard_id, [])
            if kept and not pending:
                self.pending_since[shard_id] = time.monotonic()
            pending.extend(kept)
            window_over = time.monotonic() - self.pending_since.get(shard_id, 0.0) >= self.config.batching_window_s
            flush = not records or window_over or next_iterator is None
            while pending and (flush or len(pending) >= self.config.batch_size):
                batch, pending[:] = pending[:self.config.batch_size], pending[self.config.batch_size:]
                self._deliver(shard_id, batch)
                self.pending_since[shard_id] = time.monotonic()
            if records:
                self.last_read[shard_id] = records[-1]["dynamodb"]["SequenceNumber"]
            if not pending and self.last_read.get(shard_id, "") not in ("", self.checkpoints.get(shard_id)):
                # Past the filtered-out records too: Lambda never offers them again.
                self.checkpoints[shard_id] = self.last_read[shard_id]
                self._save_checkpoints()
            read += len(records)
            self.iterators[shard_id] = next_iterator
            if next_iterator is None:
                self.closed.add(shard_id)
        return read

    def _deliver(self, shard_id: str, records: list[dict[str, Any]]) -> None:
        pending = records
        attempts = 0
        while pending:
            self.invocations += 1
            try:
                result = self.handler({"Records": pending}, None) or {}
                failures = [f["itemIdentifier"] for f in result.get("batchItemFailures", [])]
            except Exception:  # a crashed invocation fails the whole batch, as on Lambda
                log.exception("stream handler failed")
                failures = [pending[0]["dynamodb"]["SequenceNumber"]]
            if not failures:
                break
            # Like Lambda: everything before the first failed record counts as done.
            sequence = [r["dynamodb"]["SequenceNumber"] for r in pending]
            first = min(sequence.index(f) for f in failures if f in sequence) if any(
                f in sequence for f in failures) else 0
            done, pending = pending[:first], pending[first:]
            if done:
                self.checkpoints[shard_id] = done[-1]["dynamodb"]["SequenceNumber"]
                self._save_checkpoints()
            attempts += 1
            if attempts > self.config.max_retry_attempts:
                self._dead_letter(pending[:1])
                self.checkpoints[shard_id] = pending[0]["dynamodb"]["SequenceNumber"]
                self._save_checkpoints()
                pending, attempts = pending[1:], 0
                continue
            time.sleep(min(1.0, 0.05 * 2 ** attempts))
        self.checkpoints[shard_id] = records[-1]["dynamodb"]["SequenceNumber"]
        self._save_checkpoints()

    def _dead_letter(self, records: list[dict[str, Any]]) -> None:
        self.dead_letter_file.parent.mkdir(parents=True, exist_ok=True)
        with self.dead_letter_file.open("a") as fh:
            for record in records:
                fh.write(json.dumps({"failed_at": time.time(), "record": record}) + "\n")
        log.warning("sent %d stream record(s) to the local dead-letter file", len(records))

    def run_forever(self) -> None:
        while not self._stop.is_set():
            try:
                if not self.poll_once():
                    self._stop.wait(self.config.poll_interval_s)
            except Exception:
                log.exception("stream poll failed; retrying")
                self._stop.wait(1.0)

    def stop(self) -> None:
        self._stop.set()


def mapping_config(logical_id: str, resources_file: Path | None = None) -> RunnerConfig:
    """A RunnerConfig with the batch size, retry limit and FilterCriteria of one event source mapping in
    infra/resources.json, so the local runner follows what is deployed."""
    path = resources_file or Path(__file__).resolve().parents[1] / "resources.json"
    props = json.loads(path.read_text(encoding="utf-8"))["Resources"][logical_id]["Properties"]
    return RunnerConfig(batch_size=int(props.get("BatchSize", 100)),
                        batching_window_s=float(props.get("MaximumBatchingWindowInSeconds", 0)),
                        max_retry_attempts=int(props.get("MaximumRetryAttempts", 5)),
                        event_filter=EventFilter.from_criteria(props.get("FilterCriteria")))


# One runner per stream function, as each Lambda function has its own event source mapping: its own
# position (checkpoint), batch size, filter and dead letters, so a slow webhook endpoint never holds up
# the pipeline. (function in app.py, checkpoint file, dead-letter file, config from its mapping)
CONSUMERS: tuple[tuple[str, str, str, RunnerConfig], ...] = (
    ("stream_pipeline", "stream-checkpoint.json", "stream-dead-letter.jsonl",
     mapping_config("StreamPipelineEventSourceMapping")),
    ("webhook_sender", "webhook-stream-checkpoint.json", "webhook-stream-dead-letter.jsonl",
     mapping_config("WebhookSenderEventSourceMapping")),
)


def main() -> int:
    """`python -m infra.local.streams`: run the app's stream functions against the table's stream.

    Started by the local stack with the app's environment (DOORSTEP_*, AWS_ENDPOINT_URL_DYNAMODB[_STREAMS]
    pointing at DynamoDB Local, which plain boto3 clients follow).
    """
    import os
    import signal
    import sys

    import boto3

    project_dir = Path(__file__).resolve().parents[2]
    sys.path.insert(0, str(project_dir))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s streams %(levelname)s %(message)s")
    import app as app_module  # the same handlers Lambda runs
    from infra.local.functions import handler_of

    state_dir = project_dir / ".local"
    runners = [StreamRunner(boto3.client("dynamodb"), boto3.client("dynamodbstreams"),
                            os.environ["DOORSTEP_TABLE_NAME"], handler_of(app_module.app, function),
                            state_dir / checkpoint, state_dir / dead_letter, config)
               for function, checkpoint, dead_letter, config in CONSUMERS]

    def stop(*_: Any) -> None:
        for runner in runners:
            runner.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    threads = [threading.Thread(target=runner.run_forever, name=function, daemon=True)
               for runner, (function, *_) in zip(runners, CONSUMERS, strict=True)]
    for runner, thread in zip(runners, threads, strict=True):
        log.info("%s follows %s", thread.name, runner.stream_arn)
        thread.start()
    while any(thread.is_alive() for thread in threads):
        for thread in threads:
            thread.join(timeout=0.5)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
