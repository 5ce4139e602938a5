"""Route progress in the fleet view, from the pipeline's cached stop statuses (pure given the items)."""

from __future__ import annotations

import json

from chalicelib.fleet.fleet_view import _route, etag_matches
from chalicelib.fleet.presence import StoredPresence
from chalicelib.fleet.presence_rules import Presence


def stored(route_id: str | None, on_duty: bool = True) -> StoredPresence:
    return StoredPresence("mer_1", "drv_1", Presence(on_duty=on_duty), 0, None, None, route_id, None, None)


def state(route_id: str, statuses: str, delayed: list[int]) -> dict[str, dict[str, str]]:
    return {"state": {"S": json.dumps({"route": {"id": route_id, "st": statuses, "dl": delayed}})}}


def test_done_remaining_and_late_count_the_cached_statuses() -> None:
    route = _route(stored("rte_1"), state("rte_1", "ddfxoopr-t", [4, 0, 6]))
    assert route is not None
    # done: delivered, delivered, failed, cancelled, a stop whose shipment is gone, returned
    assert (route.id, route.status, route.done, route.remaining) == ("rte_1", "active", 6, 4)
    assert route.late == 2  # stop 0 was delayed but is delivered now


def test_a_state_of_another_route_or_none_gives_no_counts_yet() -> None:
    route = _route(stored("rte_2"), state("rte_1", "dd", []))
    assert route is not None and (route.done, route.remaining, route.late) == (0, 0, 0)
    assert _route(stored(None), None) is None
    assert _route(stored("rte_1", on_duty=False), state("rte_1", "o", [])) is None


def test_if_none_match() -> None:
    assert etag_matches('"a", W/"b"', '"b"') and etag_matches("*", '"x"')
    assert not etag_matches(None, '"a"') and not etag_matches('"c"', '"a"')
