"""The fleet benchmark's arithmetic: when the stream counts as drained, the rates, the ping-to-event latencies."""

from __future__ import annotations

import pytest

from bench.common import p95
from bench.pipeline_fleet import Poll, drain_end, event_latencies_ms, rates


def test_drained_at_the_end_of_the_last_busy_poll_before_an_empty_one_after_ingest() -> None:
    polls = [Poll(0.0, 1.0, 50), Poll(1.0, 2.0, 0), Poll(2.0, 3.5, 100), Poll(3.5, 5.0, 20), Poll(5.0, 5.1, 0)]
    # The empty poll at 1.0 started before ingest ended (at 1.5): records were still to come.
    assert drain_end(polls, ingest_end=1.5) == 5.0
    assert drain_end(polls[:4], ingest_end=1.5) is None  # no empty poll after ingest yet: not drained
    assert drain_end([Poll(0.0, 0.1, 0), Poll(2.0, 2.1, 0)], ingest_end=1.0) == 2.0  # nothing was ever read


def test_rates_and_their_ratio() -> None:
    ingest, drain, ratio = rates(pings=6000, started=100.0, ingest_end=120.0, drained=160.0)
    assert (ingest, drain, ratio) == (300.0, 100.0, pytest.approx(1 / 3))
    # A drain that ends with the ingest keeps up: ratio 1, never above.
    assert rates(1000, 0.0, 10.0, drained=5.0)[2] == 1.0
    with pytest.raises(ValueError):
        rates(0, 0.0, 1.0, 2.0)


def test_event_latency_is_recorded_minus_when_the_causing_fix_was_sent() -> None:
    sent = {"drv_a": {1_000: 10.0, 6_000: 12.0}, "drv_b": {1_000: 11.0}}
    events = [{"driver_id": "drv_a", "occurred_ms": 6_000, "recorded_s": 12.25},
              {"driver_id": "drv_b", "occurred_ms": 1_000, "recorded_s": 11.5},
              {"driver_id": "drv_b", "occurred_ms": 9_999, "recorded_s": 20.0}]  # no request carried this fix
    latencies, unmatched = event_latencies_ms(events, sent)
    assert latencies == [250.0, 500.0] and unmatched == 1


def test_p95_is_the_nearest_rank() -> None:
    assert p95([float(n) for n in range(1, 101)]) == 95.0
    assert p95([float(n) for n in range(1, 21)]) == 19.0
    assert p95([7.0]) == 7.0
