"""Dead letters: the bodies of the stream records a consumer reports as failed, kept in S3 to replay.

Lambda's on-failure destination (infra/resources.json) only says which shard and sequence numbers failed;
the stream keeps the records 24 hours. So a stream function that reports failures also writes those
records (keys, NewImage, sequence number, as Lambda delivered them; OldImage dropped) to one object,
`dead-letters/<function>/<yyyy-mm-dd>/<hash of the failed sequence numbers>.json`, in the app's bucket.
The key depends only on the records, so a retried batch that fails the same way overwrites its object
instead of adding one. Nothing is written when nothing failed. `python -m infra.replay dead-letters`
(`make replay-dead-letters`) sends them through the same function again; the consumers are idempotent.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from chalicelib.core.config import get_settings
from chalicelib.core.observability import MetricUnit, logger, metrics

PREFIX = "dead-letters"
_blobs: Any = None


def _client() -> Any:
    global _blobs
    if _blobs is None:  # the S3 client is built on the first failure only: the happy path never pays for it
        from chalicelib.storage.blobs import BlobStore

        _blobs = BlobStore()
    return _blobs.client


def _sequence(record: dict[str, Any]) -> str:
    return str((record.get("dynamodb") or {}).get("SequenceNumber", ""))


def _day(records: Sequence[dict[str, Any]]) -> str:
    """The day the earliest record was written to the table (so a retry lands on the same key), else today."""
    times = [float(t) for r in records if (t := (r.get("dynamodb") or {}).get("ApproximateCreationDateTime"))]
    moment = datetime.fromtimestamp(min(times), UTC) if times else datetime.now(UTC)
    return moment.date().isoformat()


def dead_letter_key(function: str, records: Sequence[dict[str, Any]]) -> str:
    digest = hashlib.sha256("\n".join(sorted(_sequence(r) for r in records)).encode()).hexdigest()[:32]
    return f"{PREFIX}/{function}/{_day(records)}/{digest}.json"


def keep_failed(function: str, event: dict[str, Any], failed: Sequence[str]) -> str | None:
    """Write the event's records whose sequence numbers failed to one object; its key (None: none found).

    Never raises: the partial batch response must still reach Lambda, which retries the records and, once
    they age out, sends their position to the on-failure queue. A failed write is logged with the sequence
    numbers and counted (`DeadLetterWriteFailed`), for the alarm on that queue to be read with.
    """
    wanted = set(failed)
    records = []
    for raw in event.get("Records") or []:
        if _sequence(raw) in wanted:
            body = dict(raw)
            body["dynamodb"] = {k: v for k, v in (raw.get("dynamodb") or {}).items() if k != "OldImage"}
            records.append(body)
    if not records:
        return None
    key = dead_letter_key(function, records)
    document = {"function": function, "written_at": datetime.now(UTC).isoformat(), "records": records}
    try:
        _client().put_object(Bucket=get_settings().bucket_name, Key=key, ContentType="application/json",
                             Body=json.dumps(document, separators=(",", ":"), default=str).encode())
    except Exception:
        logger.exception("dead letters not stored", extra={"function": function, "sequence_numbers": sorted(wanted)})
        metrics.add_metric(name="DeadLetterWriteFailed", unit=MetricUnit.Count, value=1)
        return None
    logger.warning("dead letters stored", extra={"function": function, "key": key, "records": len(records)})
    return key
