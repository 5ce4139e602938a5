"""infra/stream_filters.py: Lambda's filter semantics, and the pipeline's patterns against sample records."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from infra.stream_filters import admits, mapping_filters, matches

EVENTS = Path(__file__).resolve().parents[2] / "events"


def record(event_name: str, pk: str, sk: str, **image: str) -> dict[str, Any]:
    body: dict[str, Any] = {"Keys": {"PK": {"S": pk}, "SK": {"S": sk}}}
    if image:
        body["NewImage"] = {"PK": {"S": pk}, "SK": {"S": sk}, **{k: {"S": v} for k, v in image.items()}}
    return {"eventName": event_name, "eventSource": "aws:dynamodb", "dynamodb": body}


PIPELINE = mapping_filters("StreamPipelineEventSourceMapping")
EVENT_SK = "EVENT#2026-01-01T10:00:00.000Z#e1"


@pytest.mark.parametrize(("sample", "admitted"), [
    (record("INSERT", "DRIVER#d1", "POINTS#1714000000000#0a1b2c3d"), True),  # one request's fix chunk
    (record("MODIFY", "DRIVER#d1", "POINTS#1714000000000#0a1b2c3d"), False),  # a racing retry's overwrite
    (record("REMOVE", "DRIVER#d1", "POINTS#1714000000000#0a1b2c3d"), False),  # TTL expiry
    (record("INSERT", "DRIVER#d1", "PING#1714000000000"), True),  # the one-item-per-fix format, in flight
    (record("MODIFY", "DRIVER#d1", "PING#1714000000000"), False),
    (record("REMOVE", "DRIVER#d1", "PING#1714000000000"), False),  # TTL expiry
    (record("MODIFY", "DRIVER#d1", "POSITION"), False),
    (record("INSERT", "DRIVER#d1", "POSITION"), False),
    # the pipeline's own writes never come back to it
    (record("MODIFY", "DRIVER#d1", "GEOFENCE"), False),
    (record("INSERT", "DRIVER#d1", "GEOFENCE"), False),
    (record("INSERT", "ROUTE#r1", "ETA"), False),
    (record("MODIFY", "ROUTE#r1", "ETA"), False),
    (record("MODIFY", "SPEED#881f1d4a0dfffff", "SPEED"), False),
    (record("MODIFY", "SPEED#*", "SHARD#3"), False),
    (record("MODIFY", "MERCHANT#m1", "STATS#SERVICE"), False),
    (record("MODIFY", "MERCHANT#m1", "SHIPMENT#s1"), False),  # its transitions: the EVENT insert says it
    (record("INSERT", "DRIVER#d1", "ZONEEVENT#2026#e"), False),
    (record("INSERT", "SHIPMENT#s1", EVENT_SK, type="arrived", to_status="arrived"), False),
    (record("INSERT", "SHIPMENT#s1", EVENT_SK, type="dwell"), False),
    (record("INSERT", "SHIPMENT#s1", EVENT_SK, type="departed"), False),
    # lifecycle events it notifies on, or that complete a stop (the next ETAs move)
    (record("INSERT", "SHIPMENT#s1", EVENT_SK, type="approaching", to_status="approaching"), True),
    (record("INSERT", "SHIPMENT#s1", EVENT_SK, type="delayed"), True),
    (record("INSERT", "SHIPMENT#s1", EVENT_SK, type="out_for_delivery", to_status="out_for_delivery"), True),
    (record("INSERT", "SHIPMENT#s1", EVENT_SK, type="delivered", to_status="delivered"), True),
    (record("INSERT", "SHIPMENT#s1", EVENT_SK, type="status", to_status="failed"), True),
    (record("INSERT", "SHIPMENT#s1", EVENT_SK, type="rescheduled", to_status="rescheduled"), True),
    (record("MODIFY", "SHIPMENT#s1", EVENT_SK, type="delivered", to_status="delivered"), False),
])
def test_the_pipeline_filter_admits_only_what_it_acts_on(sample: dict[str, Any], admitted: bool) -> None:
    assert admits(PIPELINE, sample) is admitted


@pytest.mark.parametrize("name", ["dynamodb_stream_fixes_insert.json", "dynamodb_stream_ping_insert.json"])
def test_the_stored_sample_ping_records_are_admitted(name: str) -> None:
    sample = json.loads((EVENTS / name).read_text())["Records"][0]
    assert admits(PIPELINE, sample)


def test_operators() -> None:
    event = {"a": {"b": "PING#1", "n": 5, "flag": True}, "list": ["x", "y"]}
    assert matches({"a": {"b": [{"prefix": "PING#"}]}}, event)
    assert not matches({"a": {"b": [{"prefix": "EVENT#"}]}}, event)
    assert matches({"a": {"b": [{"suffix": "#1"}]}}, event)
    assert matches({"a": {"b": [{"anything-but": ["x", "y"]}]}}, event)
    assert not matches({"a": {"b": [{"anything-but": "PING#1"}]}}, event)
    assert matches({"a": {"b": [{"anything-but": {"prefix": "EVENT#"}}]}}, event)
    assert matches({"a": {"c": [{"exists": False}]}}, event)
    assert not matches({"a": {"c": [{"exists": True}]}}, event)
    assert matches({"a": {"n": [{"numeric": [">", 1, "<=", 5]}]}}, event)
    assert not matches({"a": {"n": [{"numeric": [">", 5]}]}}, event)
    assert matches({"a": {"flag": [True]}}, event)
    assert not matches({"a": {"n": ["5"]}}, event)  # types matter
    assert matches({"list": ["y"]}, event)  # an array matches when any element does
    assert matches({"a": {"b": [{"equals-ignore-case": "ping#1"}]}}, event)
    assert not matches({"missing": ["x"]}, event)
    assert admits([], event)  # no filter: everything
    with pytest.raises(ValueError):
        matches({"a": {"b": [{"wildcard": "P*"}]}}, event)
