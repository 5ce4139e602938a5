"""Lambda's event-filter semantics as the local stream runner applies them (infra/local/event_filter.py)."""

from __future__ import annotations

from typing import Any

import pytest

from infra.local.event_filter import EventFilter, FilterError, compile_pattern
from infra.local.streams import CONSUMERS


def record(event_name: str, sk: str, **new_image: str) -> dict[str, Any]:
    """A stream record in the shape Lambda filters and delivers (strings only, as our items' S attributes)."""
    ddb: dict[str, Any] = {"Keys": {"PK": {"S": "DRIVER#d1"}, "SK": {"S": sk}}, "SequenceNumber": "1"}
    if event_name != "REMOVE":
        ddb["NewImage"] = {"PK": {"S": "DRIVER#d1"}, "SK": {"S": sk}, **{k: {"S": v} for k, v in new_image.items()}}
    return {"eventName": event_name, "eventSource": "aws:dynamodb", "dynamodb": ddb}


def consumer_filter(function: str) -> EventFilter:
    return next(config.event_filter for name, _cp, _dl, config in CONSUMERS if name == function)


@pytest.mark.parametrize(("rec", "kept"), [
    (record("INSERT", "PING#0001"), True),
    (record("MODIFY", "POSITION"), False),           # the latest position: readers use it, the pipeline never
    (record("MODIFY", "SHIPMENT#s1"), False),        # its own writes never come back to it
    (record("REMOVE", "PING#0001"), False),          # TTL deletions never reach the pipeline
    (record("INSERT", "POSITIONX"), False),          # "POSITION" is an exact value, not a prefix
    (record("INSERT", "ROUTE#r1"), False),
    (record("INSERT", "EVENT#1", to_status="delivered"), True),
    (record("INSERT", "EVENT#1", type="approaching"), True),
    (record("INSERT", "EVENT#1", type="note"), False),
    (record("MODIFY", "EVENT#1", to_status="delivered"), False),  # events count once, when written
    (record("INSERT", "EVENT#1"), False),             # neither to_status nor type: both EVENT patterns fail
])
def test_the_pipeline_mapping_keeps_what_its_deployed_filter_keeps(rec: dict[str, Any], kept: bool) -> None:
    assert consumer_filter("stream_pipeline").matches(rec) is kept


@pytest.mark.parametrize(("rec", "kept"), [
    (record("INSERT", "EVENT#1", type="note"), True),
    (record("MODIFY", "EVENT#1"), False),
    (record("INSERT", "PING#1"), False),
])
def test_the_webhook_mapping_keeps_only_new_events(rec: dict[str, Any], kept: bool) -> None:
    assert consumer_filter("webhook_sender").matches(rec) is kept


@pytest.mark.parametrize(("pattern", "value", "matches"), [
    ({"a": ["x"]}, "x", True),
    ({"a": ["x"]}, "X", False),
    ({"a": [5]}, 5.0, True),                 # numbers compare by value
    ({"a": [5]}, "5", False),                # never a string against a number
    ({"a": [True]}, 1, False),
    ({"a": [None]}, None, True),
    ({"a": [{"prefix": "PING#"}]}, "PING#9", True),
    ({"a": [{"prefix": "PING#"}]}, 7, False),
    ({"a": [{"suffix": ".jpg"}]}, "x.jpg", True),
    ({"a": [{"equals-ignore-case": "Delivered"}]}, "DELIVERED", True),
    ({"a": [{"anything-but": ["x", "y"]}]}, "z", True),
    ({"a": [{"anything-but": ["x", "y"]}]}, "y", False),
    ({"a": [{"anything-but": {"prefix": "tmp"}}]}, "tmpfile", False),
    ({"a": [{"numeric": [">", 0, "<=", 5]}]}, 5, True),
    ({"a": [{"numeric": [">", 0, "<=", 5]}]}, 0, False),
    ({"a": ["x", {"prefix": "y"}]}, "yes", True),   # a list is an OR of its choices
    ({"a": ["x"]}, ["q", "x"], True),               # a list in the record: any element may match
])
def test_operators(pattern: dict[str, Any], value: Any, matches: bool) -> None:
    assert compile_pattern(pattern)({"a": value}) is matches


def test_a_missing_key_matches_only_exists_false() -> None:
    assert compile_pattern({"a": [{"exists": False}]})({}) is True
    assert compile_pattern({"a": [{"exists": False}]})({"a": "x"}) is False
    assert compile_pattern({"a": [{"exists": True}]})({}) is False
    assert compile_pattern({"a": [{"anything-but": "x"}]})({}) is False
    assert compile_pattern({"a": {"b": ["x"]}})({}) is False
    assert compile_pattern({"a": {"b": ["x"]}})({"a": "not an object"}) is False


def test_every_key_of_a_pattern_must_match_and_any_filter_may() -> None:
    pattern = {"eventName": ["INSERT"], "dynamodb": {"Keys": {"SK": {"S": [{"prefix": "EVENT#"}]}}}}
    assert compile_pattern(pattern)(record("INSERT", "EVENT#1")) is True
    assert compile_pattern(pattern)(record("MODIFY", "EVENT#1")) is False
    either = EventFilter([pattern, '{"eventName": ["REMOVE"]}'])
    assert either.matches(record("REMOVE", "PING#1")) is True
    assert either.matches(record("MODIFY", "PING#1")) is False
    assert EventFilter([]).matches(record("MODIFY", "PING#1")) is True  # no FilterCriteria: everything


@pytest.mark.parametrize("pattern", [
    {"a": [{"wildcard": "x*"}]},   # an operator the runner does not implement must not be ignored silently
    {"a": "x"},                    # a leaf must be a list
    {"a": []},
    {"a": [{"prefix": 1}]},
    {"a": [{"numeric": ["~", 1]}]},
    {},
])
def test_patterns_the_runner_cannot_evaluate_exactly_are_refused(pattern: dict[str, Any]) -> None:
    with pytest.raises(FilterError):
        compile_pattern(pattern)
