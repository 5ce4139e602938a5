"""Dead letters: the stream functions keep the bodies of the records they report as failed in the bucket
(chalicelib/storage/dead_letters.py), and `infra.replay dead-letters` sends them through again, once."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from tests.conftest import TEST_ENV
from tests.integration.helpers import make_shipment, now_ms, post_pings
from tests.integration.streams import record_collector
from tests.integration.test_pipeline_batching import drain, drive, pings_of, seed_route

BUCKET = TEST_ENV["DOORSTEP_BUCKET_NAME"]


@pytest.fixture()
def stream(chalice_app: Any, tmp_path: Any) -> tuple[Any, list[dict[str, Any]]]:
    """A stream runner that only collects the records (the test hands them to the functions)."""
    return record_collector(tmp_path)


@pytest.fixture()
def s3() -> Iterator[Any]:
    """The bucket's dead-letters prefix, empty at the start of each test (the bucket outlives a test)."""
    client = boto3.client("s3")

    def clear() -> None:
        for item in client.list_objects_v2(Bucket=BUCKET, Prefix="dead-letters/").get("Contents", []):
            client.delete_object(Bucket=BUCKET, Key=item["Key"])

    clear()
    yield client
    clear()


def _stored(s3: Any, function: str) -> dict[str, list[dict[str, Any]]]:
    keys = [item["Key"] for item in s3.list_objects_v2(Bucket=BUCKET, Prefix="dead-letters/").get("Contents", [])]
    assert all(k.startswith(f"dead-letters/{function}/") for k in keys), keys
    return {k: json.loads(s3.get_object(Bucket=BUCKET, Key=k)["Body"].read())["records"] for k in keys}


def _effects(merchant_id: str, driver_id: str, shipment_ids: list[str]) -> tuple[Any, ...]:
    """What the pipeline has done for a driver: its state's version and its shipments' timelines."""
    from chalicelib.storage import get_repository

    repo = get_repository()
    state, version = repo.driver_state(driver_id)[:2]
    timelines = tuple(tuple(e.SK for e in repo.timeline(sid, 100)) for sid in shipment_ids)
    return version, state, timelines


def _two_drivers_batch(merchant: Any, run: Any, records: list[dict[str, Any]]) -> tuple[list[Any], list[Any]]:
    start = now_ms() - 3_600_000
    seeded = [seed_route(merchant, 3, start) for _ in range(2)]
    for driver, _, _ in seeded:
        assert post_pings(merchant.client, driver["token"], drive(30, start)[:10]).json_body["accepted"] == 10
        assert post_pings(merchant.client, driver["token"], drive(30, start)[10:30]).json_body["accepted"] == 20
    drain(run)
    batch = pings_of(records)
    assert len(batch) == 4  # one fix chunk per accepted request: 2 drivers x 2 requests
    return seeded, batch


def _failing_for(monkeypatch: pytest.MonkeyPatch, driver_id: str) -> None:
    from chalicelib.pipeline import service

    real = service.apply_driver_fixes

    def apply(r: Any, merchant_id: str, driver: str, *args: Any, **kwargs: Any) -> Any:
        if driver == driver_id:
            raise RuntimeError("storage refused (test)")
        return real(r, merchant_id, driver, *args, **kwargs)

    monkeypatch.setattr(service, "apply_driver_fixes", apply)


def test_a_failing_driver_groups_records_are_kept_with_their_bodies_and_replayed_once(
        merchant: Any, stream: Any, s3: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from chalicelib.pipeline.api import stream_pipeline
    from infra.replay import replay_dead_letters

    run, records = stream
    (failing, failing_stops, _), (healthy, _, _) = _two_drivers_batch(merchant, run, records)[0]
    batch = pings_of(records)
    _failing_for(monkeypatch, failing["id"])
    result = stream_pipeline({"Records": batch}, None)
    failed_records = [r for r in batch if r["dynamodb"]["NewImage"]["driver_id"]["S"] == failing["id"]]
    assert sorted(f["itemIdentifier"] for f in result["batchItemFailures"]) == sorted(
        r["dynamodb"]["SequenceNumber"] for r in failed_records)
    stored = _stored(s3, "stream_pipeline")
    assert len(stored) == 1
    (key, kept), = stored.items()
    assert [r["dynamodb"]["SequenceNumber"] for r in kept] == [r["dynamodb"]["SequenceNumber"] for r in failed_records]
    for body, original in zip(kept, failed_records, strict=True):
        assert body["dynamodb"]["Keys"] == original["dynamodb"]["Keys"]
        assert body["dynamodb"]["NewImage"] == original["dynamodb"]["NewImage"]
        assert body["eventName"] == "INSERT" and "OldImage" not in body["dynamodb"]
    before = _effects(merchant.id, failing["id"], failing_stops)
    assert before[0] == 0  # nothing applied for that driver yet
    # the same batch failing again (Lambda's retry) lands on the same object
    stream_pipeline({"Records": batch}, None)
    assert list(_stored(s3, "stream_pipeline")) == [key]

    monkeypatch.undo()  # storage is back
    healthy_before = _effects(merchant.id, healthy["id"], [])
    assert replay_dead_letters(s3, BUCKET, "stream_pipeline", stream_pipeline, keep=True) == (1, 0)
    once = _effects(merchant.id, failing["id"], failing_stops)
    assert once[0] >= 1 and once[2] != before[2]  # state saved, stops approached/arrived
    assert replay_dead_letters(s3, BUCKET, "stream_pipeline", stream_pipeline, keep=True) == (1, 0)
    assert _effects(merchant.id, failing["id"], failing_stops) == once  # the second run changed nothing
    assert _effects(merchant.id, healthy["id"], []) == healthy_before  # another driver is not touched
    assert replay_dead_letters(s3, BUCKET, "stream_pipeline", stream_pipeline) == (1, 0)
    assert _stored(s3, "stream_pipeline") == {}  # removed once it went through
    assert _effects(merchant.id, failing["id"], failing_stops) == once


def test_the_happy_path_keeps_nothing(merchant: Any, stream: Any, s3: Any) -> None:
    from chalicelib.pipeline.api import stream_pipeline

    run, records = stream
    _two_drivers_batch(merchant, run, records)
    assert stream_pipeline({"Records": pings_of(records)}, None) == {"batchItemFailures": []}
    assert _stored(s3, "stream_pipeline") == {}


def test_a_replay_that_fails_again_keeps_its_object(merchant: Any, stream: Any, s3: Any,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from chalicelib.pipeline.api import stream_pipeline
    from infra.replay import replay_dead_letters

    run, records = stream
    (failing, _, _), _ = _two_drivers_batch(merchant, run, records)[0]
    _failing_for(monkeypatch, failing["id"])
    stream_pipeline({"Records": pings_of(records)}, None)
    key = list(_stored(s3, "stream_pipeline"))
    assert replay_dead_letters(s3, BUCKET, "stream_pipeline", stream_pipeline) == (0, 1)
    assert list(_stored(s3, "stream_pipeline")) == key


def test_the_webhook_senders_failed_records_are_kept(merchant: Any, stream: Any, s3: Any,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from chalicelib.webhooks import delivery
    from chalicelib.webhooks.api import webhook_sender

    run, records = stream
    shipment = make_shipment(merchant)
    drain(run)
    events = [r for r in records if r["dynamodb"]["Keys"]["PK"]["S"] == f"SHIPMENT#{shipment['id']}"
              and r["dynamodb"]["Keys"]["SK"]["S"].startswith("EVENT#")]
    assert len(events) == 1

    def refuse(self: Any, record: dict[str, Any]) -> Any:
        raise RuntimeError("storage refused (test)")

    monkeypatch.setattr(delivery.Deliverer, "prepare", refuse)
    result = webhook_sender({"Records": events}, None)
    assert [f["itemIdentifier"] for f in result["batchItemFailures"]] == [events[0]["dynamodb"]["SequenceNumber"]]
    stored = _stored(s3, "webhook_sender")
    assert [r["dynamodb"]["NewImage"] for kept in stored.values() for r in kept] == [events[0]["dynamodb"]["NewImage"]]
