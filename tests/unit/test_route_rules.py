"""Route edit rules: what a new stop order adds, drops and moves, and when a route is done."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from chalicelib.shipments.route_rules import plan_stop_edit, route_done


def test_added_removed_and_reordered() -> None:
    edit = plan_stop_edit(["a", "b", "c"], ["c", "d", "a"])
    assert edit.added == ("d",) and edit.removed == ("b",) and edit.reordered


def test_adding_at_the_end_or_removing_is_not_a_reorder() -> None:
    assert not plan_stop_edit(["a", "b"], ["a", "b", "c"]).reordered
    assert not plan_stop_edit(["a", "b", "c"], ["a", "c"]).reordered
    assert plan_stop_edit(["a", "b"], ["a", "b"]) == plan_stop_edit([], [])


def test_a_route_is_done_only_when_every_stop_is() -> None:
    assert route_done(["delivered", "failed", "cancelled", "returned"])
    assert not route_done(["delivered", "out_for_delivery"])
    assert not route_done(["delivered", "arrived"])
    assert not route_done([])  # an empty route is not "done": nothing happened on it


ids = st.lists(st.sampled_from("abcdefgh"), unique=True, max_size=8)


@given(ids, ids)
def test_the_edit_accounts_for_every_stop(old: list[str], new: list[str]) -> None:
    edit = plan_stop_edit(old, new)
    assert set(edit.added) == set(new) - set(old)
    assert set(edit.removed) == set(old) - set(new)
    assert edit.reordered == ([s for s in old if s in new] != [s for s in new if s in old])
