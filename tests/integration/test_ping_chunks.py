"""Pings stored as fix chunks (storage/fix_chunks.py): one item and one stream record per accepted request,
duplicates found with one Query, history read across chunks, the position written only when it moves."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import botocore.client
import pytest

from infra.local.streams import RunnerConfig, StreamRunner
from tests.conftest import TEST_ENV
from tests.integration.helpers import iso, make_driver, now_ms, post_pings

TABLE = TEST_ENV["DOORSTEP_TABLE_NAME"]


@pytest.fixture()
def stream(chalice_app: Any, tmp_path: Any) -> Iterator[tuple[StreamRunner, list[dict[str, Any]]]]:
    """The table stream's records from now on (collected, not processed)."""
    records: list[dict[str, Any]] = []

    def keep(event: dict[str, Any], context: Any) -> dict[str, Any]:
        records.extend(event["Records"])
        return {"batchItemFailures": []}

    run = StreamRunner(boto3.client("dynamodb"), boto3.client("dynamodbstreams"), TABLE, keep, tmp_path / "cp.json",
                       tmp_path / "dlq.jsonl", RunnerConfig(starting_position="LATEST", poll_interval_s=0,
                                                            batch_size=1000))
    run.refresh_shards()
    yield run, records


def chunk_records(run: StreamRunner, records: list[dict[str, Any]], driver_id: str) -> list[dict[str, Any]]:
    while run.poll_once():
        pass
    return [r for r in records if r["dynamodb"]["Keys"]["PK"]["S"] == f"DRIVER#{driver_id}"
            and r["dynamodb"]["Keys"]["SK"]["S"].startswith("POINTS#")]


def fix_times_of(records: list[dict[str, Any]]) -> list[int]:
    from chalicelib.storage.fix_chunks import decode_fix_times

    return [t for r in records for t in decode_fix_times(r["dynamodb"]["NewImage"]["f"]["S"])]


def stored_chunks(driver_id: str) -> list[dict[str, Any]]:
    return boto3.client("dynamodb").query(
        TableName=TABLE, KeyConditionExpression="PK = :pk AND begins_with(SK, :p)",
        ExpressionAttributeValues={":pk": {"S": f"DRIVER#{driver_id}"}, ":p": {"S": "POINTS#"}})["Items"]


def fixes(start_ms: int, first: int, last: int) -> list[dict[str, Any]]:
    return [{"lat": 47.6 + i * 1e-4, "lng": -122.3, "fix_time": iso(start_ms + i * 5000), "accuracy": 8.0,
             "speed": 3.2, "heading": 90.0, "battery": 80.0 - i / 10} for i in range(first, last)]


def test_a_request_is_one_chunk_and_its_retry_writes_nothing(merchant: Any, stream: Any) -> None:
    run, records = stream
    driver = make_driver(merchant)
    t = now_ms() - 600_000
    batch = fixes(t, 0, 10)
    assert post_pings(merchant.client, driver["token"], batch).json_body["accepted"] == 10
    first = chunk_records(run, records, driver["id"])
    assert [r["eventName"] for r in first] == ["INSERT"] and len(fix_times_of(first)) == 10
    retry = post_pings(merchant.client, driver["token"], batch).json_body
    assert (retry["accepted"], retry["duplicates"], retry["rejected"]) == (0, 10, 0)
    assert {i["status"] for i in retry["items"]} == {"duplicate"}
    assert chunk_records(run, records, driver["id"]) == first  # no second stream record
    assert len(stored_chunks(driver["id"])) == 1
    item = stored_chunks(driver["id"])[0]
    assert int(item["expires_at"]["N"]) > now_ms() // 1000 + 86_400 and len(item["f"]["S"]) < 400


def test_a_partial_overlap_stores_only_the_new_fixes(merchant: Any, stream: Any) -> None:
    from chalicelib.storage import get_repository

    run, records = stream
    driver = make_driver(merchant)
    t = now_ms() - 600_000
    post_pings(merchant.client, driver["token"], fixes(t, 0, 10))
    # the phone resends fixes 5-9 with 10-14 (and one of them twice in the same request)
    resent = fixes(t, 5, 15) + fixes(t, 12, 13)
    body = post_pings(merchant.client, driver["token"], resent).json_body
    assert (body["accepted"], body["duplicates"], body["rejected"]) == (5, 6, 0)
    assert [i["status"] for i in body["items"]] == ["duplicate"] * 5 + ["accepted"] * 5 + ["duplicate"]
    streamed = fix_times_of(chunk_records(run, records, driver["id"]))
    expected = [t + i * 5000 for i in range(15)]
    assert sorted(streamed) == expected  # every fix reaches the pipeline once
    history = get_repository().ping_history(driver["id"], t, t + 3_600_000, 100)
    assert [p.fix_ms for p in history] == expected
    assert history[12].battery == 80.0 - 12 / 10 and history[12].speed == 3.2 and history[12].altitude is None
    assert history[0].lat == 47.6 and history[0].cell and history[0].merchant_id == merchant.id


def test_history_reads_the_chunks_overlapping_the_window(merchant: Any) -> None:
    from chalicelib.storage import get_repository

    driver = make_driver(merchant)
    t = now_ms() - 3_000_000
    for first in range(0, 60, 20):
        post_pings(merchant.client, driver["token"], fixes(t, first, first + 20))
    # an older backlog arrives late, interleaved in time with nothing stored
    late = [{"lat": 47.5, "lng": -122.3, "fix_time": iso(t - 100_000 + i * 1000)} for i in range(5)]
    assert post_pings(merchant.client, driver["token"], late).json_body["accepted"] == 5
    repo = get_repository()
    window = repo.ping_history(driver["id"], t + 30 * 5000, t + 45 * 5000, 100)
    assert [p.fix_ms for p in window] == [t + i * 5000 for i in range(30, 46)]
    everything = repo.ping_history(driver["id"], t - 200_000, t + 3_600_000, 1000)
    assert len(everything) == 65 and [p.fix_ms for p in everything] == sorted(p.fix_ms for p in everything)
    first_ten = repo.ping_history(driver["id"], t - 200_000, t + 3_600_000, 10)
    assert [p.fix_ms for p in first_ten] == [p.fix_ms for p in everything[:10]]
    assert [p.lat for p in first_ten[:5]] == [47.5] * 5 and first_ten[0].accuracy is None


def test_racing_overlapping_chunks_and_old_ping_items_are_read_once(merchant: Any) -> None:
    """Two requests that both passed the duplicate check store some fixes twice; the reader keeps one."""
    from chalicelib.ingest.rules import Ping
    from chalicelib.storage import get_repository
    from chalicelib.storage.tables import PingItem, ping_sk

    driver = make_driver(merchant)
    t = now_ms() - 600_000
    repo = get_repository()

    def ping(i: int) -> Ping:
        return Ping(driver["id"], merchant.id, t + i * 1000, 47.6, -122.3, "8a28d5553577fff", t, speed=float(i))

    repo.put_pings([ping(i) for i in range(0, 10)])
    repo.put_pings([ping(i) for i in range(5, 15)])
    # a fix stored one item per fix, before chunks
    PingItem(f"DRIVER#{driver['id']}", ping_sk(t + 20_000), merchant_id=merchant.id, driver_id=driver["id"],
             fix_ms=t + 20_000, lat=47.7, lng=-122.3, cell="8a28d5553577fff", received_ms=t,
             expires_at=datetime.fromtimestamp(t // 1000 + 86_400, UTC)).save()
    history = repo.ping_history(driver["id"], t, t + 60_000, 100)
    assert [p.fix_ms for p in history] == [t + i * 1000 for i in range(15)] + [t + 20_000]
    assert [p.speed for p in history[:15]] == [float(i) for i in range(15)] and history[-1].lat == 47.7
    assert repo.stored_fix_times(driver["id"], [t + 3000, t + 14_000, t + 16_000]) == {t + 3000, t + 14_000}


def test_the_position_is_written_only_when_it_moves_forward(merchant: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    driver = make_driver(merchant)
    t = now_ms() - 600_000
    post_pings(merchant.client, driver["token"], fixes(t, 10, 20))
    calls: Counter[str] = Counter()
    original = botocore.client.BaseClient._make_api_call

    def counted(client: Any, operation: str, params: dict[str, Any]) -> Any:
        item = params.get("Item") or params.get("Key") or {}
        calls[f"{operation}:{(item.get('SK') or {}).get('S', '')[:6]}"] += 1
        return original(client, operation, params)

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", counted)
    older = post_pings(merchant.client, driver["token"], fixes(t, 0, 10)).json_body
    assert older["accepted"] == 10
    # besides authentication (the token item): ONE Query (the chunks in the batch's range, then the position
    # item), one write of the chunk, and no position write (it could not move forward)
    del calls["GetItem:DRIVER"]
    assert calls == Counter({"Query:": 1, "BatchWriteItem:": 1}), calls
    calls.clear()
    newer = post_pings(merchant.client, driver["token"], fixes(t, 20, 22) + fixes(t, 5, 6)).json_body
    assert [i["status"] for i in newer["items"]] == ["accepted", "accepted", "duplicate"]
    del calls["GetItem:DRIVER"]
    assert calls == Counter({"Query:": 1, "BatchWriteItem:": 1, "PutItem:POSITI": 1}), calls
    position = merchant.call("GET", f"/v1/drivers/{driver['id']}/position").json_body
    assert position["lat"] == fixes(t, 21, 22)[0]["lat"] and position["battery"] == 77.9
    # a backlog older than what is stored: the first page (the position and up to 15 chunks, newest first)
    # does not reach down to it, so a second Query reads the backlog's own span
    for first in range(30, 30 + 16 * 2, 2):
        post_pings(merchant.client, driver["token"], fixes(t, first, first + 2))
    calls.clear()
    backlog = [{"lat": 47.59, "lng": -122.3, "fix_time": iso(t - 3_600_000 + i * 1000)} for i in range(3)]
    assert post_pings(merchant.client, driver["token"], backlog).json_body["accepted"] == 3
    del calls["GetItem:DRIVER"]
    assert calls == Counter({"Query:": 2, "BatchWriteItem:": 1}), calls
    assert post_pings(merchant.client, driver["token"], backlog).json_body["duplicates"] == 3
    # a retry of a batch stored a while ago, still within the first page: one Query finds it
    calls.clear()
    assert post_pings(merchant.client, driver["token"], fixes(t, 60, 62)).json_body["duplicates"] == 2
    del calls["GetItem:DRIVER"]
    assert calls == Counter({"Query:": 1}), calls


def test_the_speed_check_uses_the_position_read_with_the_chunks(merchant: Any) -> None:
    driver = make_driver(merchant)
    t = now_ms() - 60_000
    post_pings(merchant.client, driver["token"], [{"lat": 47.6, "lng": -122.3, "fix_time": iso(t)}])
    jump = post_pings(merchant.client, driver["token"], [{"lat": 48.6, "lng": -122.3, "fix_time": iso(t + 5000)}])
    assert jump.json_body["items"][0]["status"] == "rejected"  # 111 km in 5 s from the stored position


def test_a_batch_mixing_old_and_new_fixes_reads_each_span(merchant: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from chalicelib.storage import get_repository

    driver = make_driver(merchant)
    t = now_ms() - 6 * 86_400_000
    repo = get_repository()
    old = [{"lat": 47.6, "lng": -122.3, "fix_time": iso(t + i * 1000)} for i in range(3)]
    post_pings(merchant.client, driver["token"], old)
    for k in range(16):  # more chunks than the first read's page, stored after the old ones
        post_pings(merchant.client, driver["token"], fixes(now_ms() - 3_000_000 + k * 60_000, 0, 2))
    queries: list[dict[str, Any]] = []
    original = repo.hot_client.query
    monkeypatch.setattr(repo.hot_client, "query", lambda **kw: (queries.append(kw), original(**kw))[1])
    new = fixes(now_ms() - 60_000, 0, 3)
    body = post_pings(merchant.client, driver["token"], old[1:] + new).json_body
    assert [i["status"] for i in body["items"]] == ["duplicate"] * 2 + ["accepted"] * 3
    spans = sorted((q["ExpressionAttributeValues"][":lo"]["S"][7:20], q["ExpressionAttributeValues"][":hi"]["S"][7:20])
                   for q in queries if q["ExpressionAttributeValues"][":hi"]["S"] != "POSITION")
    # after the first page, one Query per run of fixes (plus the chunk span), not one over the six days between
    assert len(queries) == 3 and len(spans) == 2, queries
    assert all(int(hi) - int(lo) < 3_600_000 for lo, hi in spans), spans
