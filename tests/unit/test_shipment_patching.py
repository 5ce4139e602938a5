"""The pure rules of a shipment PATCH (chalicelib/shipments/patching.py) and its body model."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from chalicelib.core.patch import merge_patch
from chalicelib.core.types import field_problems
from chalicelib.shipments.lifecycle import ShipmentStatus
from chalicelib.shipments.models import ShipmentEditable, ShipmentPatch
from chalicelib.shipments.patching import (
    EDITABLE,
    READ_ONLY,
    changed_fields,
    refused_status,
    top_level,
    window_day_problem,
)

S = ShipmentStatus


def test_only_delivered_returned_and_cancelled_refuse_edits():
    assert {s for s in S if refused_status(s)} == {S.DELIVERED, S.RETURNED, S.CANCELLED}


def test_changed_fields_name_nested_members_and_whole_values():
    before = {"recipient": {"name": "Ada", "phone": "+14155550100", "email": "a@example.com"},
              "location": {"lat": 1.0, "lng": 2.0}, "time_window": {"start": "a", "end": "b"}, "instructions": "x"}
    after = {"recipient": {"name": "Ada", "phone": "+14155550199"},
             "location": {"lat": 1.5, "lng": 2.0}, "time_window": {"start": "a", "end": "c"}}
    assert changed_fields(before, after) == ["instructions", "location", "recipient.email", "recipient.phone",
                                             "time_window"]
    assert changed_fields(before, before) == []
    assert top_level(changed_fields(before, after)) == {"instructions", "location", "recipient", "time_window"}


_VALUES = st.one_of(st.none(), st.integers(0, 2), st.dictionaries(st.sampled_from("ab"), st.integers(0, 1),
                                                                   max_size=2))


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])  # 2 shared cores
@given(st.dictionaries(st.sampled_from(EDITABLE), _VALUES.filter(lambda v: v is not None), max_size=4),
       st.dictionaries(st.sampled_from(EDITABLE), _VALUES, max_size=4))
def test_no_change_is_missed_and_none_is_invented(before, patch):
    """`before` is a canonical document (absent, never null, as the service's dumps); the patch may hold nulls."""
    after = merge_patch(before, patch)
    changed = changed_fields(before, after)
    assert (changed == []) == (before == after)
    for name in EDITABLE:
        if before.get(name) != after.get(name):
            assert name in top_level(changed)
        else:
            assert name not in top_level(changed)


@pytest.mark.parametrize(("start", "zone", "ok"), [
    (datetime(2026, 11, 21, 16, tzinfo=UTC), "UTC", True),
    (datetime(2026, 11, 22, 1, tzinfo=UTC), "UTC", False),
    (datetime(2026, 11, 22, 1, tzinfo=UTC), "America/Chicago", True),  # 19:00 on the 21st in Chicago
    (datetime(2026, 11, 21, 11, tzinfo=UTC), "Pacific/Kiritimati", False),  # already the 22nd at UTC+14
])
def test_a_window_must_start_on_the_delivery_date_where_the_recipient_lives(start, zone, ok):
    problem = window_day_problem(start, date(2026, 11, 21), zone)
    assert (problem is None) == ok
    if problem:
        assert "2026-11-21" in problem and "reschedule" in problem


@pytest.mark.parametrize("name", sorted(READ_ONLY))
def test_the_patch_body_names_read_only_fields_with_a_reason(name):
    with pytest.raises(ValidationError) as caught:
        ShipmentPatch.model_validate({name: "anything"})
    problems = field_problems(caught.value)
    assert [p.field for p in problems] == [name] and problems[0].reason == READ_ONLY[name]


def test_the_patch_body_keeps_explicit_nulls_and_leaves_out_what_was_not_sent():
    body = ShipmentPatch.model_validate({"recipient": {"email": None}, "time_window": None})
    assert body.model_dump(mode="json", exclude_unset=True) == {"recipient": {"email": None}, "time_window": None}
    with pytest.raises(ValidationError):
        ShipmentPatch.model_validate({"time_window": {"start": "2026-11-21T16:00:00Z"}})  # sent whole


def test_the_editable_model_is_what_patching_lists():
    assert tuple(ShipmentEditable.model_fields) == EDITABLE
