"""Notification policy, quiet hours, freshness, the exactly-once ledger and provider retries: no AWS."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from chalicelib.core.problems import ProblemsError
from chalicelib.notifications.rules import (
    DEFAULT_QUIET_HOURS,
    RULES,
    Action,
    Channel,
    Contacts,
    DropReason,
    ErrorClass,
    Guard,
    LedgerState,
    NotificationPolicy,
    NotifyEvent,
    NotifyKind,
    QuietHours,
    backoff_delay,
    classify_provider_error,
    decide,
    ledger_key,
    ledger_steps,
    occurrence_for,
    offset_changes,
    recipient_zone,
)
from chalicelib.shipments.lifecycle import ShipmentStatus

K = NotifyKind
S = ShipmentStatus
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
UTC_ZONE = ZoneInfo("UTC")
PHONE = "+4917012345678"
EMAIL = "Jane.Doe@Example.COM"
BOTH = Contacts(phone=PHONE, email=EMAIL)
POLICY = NotificationPolicy()
# 2025-06-03 12:00 in Berlin (CEST, UTC+2): daytime, no quiet hours.
NOON = datetime(2025, 6, 3, 10, 0, tzinfo=UTC)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def local(zone: ZoneInfo, *args: int, fold: int = 0) -> datetime:
    return datetime(*args, tzinfo=zone).replace(fold=fold)  # type: ignore[misc]


def event(kind: NotifyKind = K.OUT_FOR_DELIVERY, occurred: datetime = NOON, **kw: object) -> NotifyEvent:
    return NotifyEvent(kind, "shp_1", occurred, **kw)  # type: ignore[arg-type]


def actions(decisions: list) -> list[tuple[str, str, str | None]]:
    return [(d.channel.value, d.action.value, d.reason.value if d.reason else None) for d in decisions]


# --- policy defaults -------------------------------------------------------------------


def test_default_channels():
    for kind in NotifyKind:
        expected = {Channel.EMAIL} if kind is K.DAY_BEFORE else {Channel.SMS, Channel.EMAIL}
        assert POLICY.channels_for(kind) == expected
    assert POLICY.quiet_hours == QuietHours(time(21), time(8))


def test_sends_now_on_both_channels_with_normalised_addresses():
    out = decide(event(), POLICY, BOTH, set(), NOON + timedelta(minutes=1), "Europe/Berlin")
    assert actions(out) == [("sms", "send", None), ("email", "send", None)]
    assert [d.address for d in out] == [PHONE, "Jane.Doe@example.com"]


def test_day_before_is_email_only_by_default():
    out = decide(event(K.DAY_BEFORE), POLICY, BOTH, set(), NOON, BERLIN)
    assert actions(out) == [("sms", "drop", "disabled"), ("email", "send", None)]


def test_missing_and_invalid_contacts():
    out = decide(event(), POLICY, Contacts(phone=None, email="not-an-email"), set(), NOON, BERLIN)
    assert actions(out) == [("sms", "drop", "no_contact"), ("email", "drop", "invalid_contact")]


def test_disabled_policy_drops_everything():
    policy = NotificationPolicy(enabled=False)
    assert {d.reason for d in decide(event(), policy, BOTH, set(), NOON, BERLIN)} == {DropReason.DISABLED}


# --- opt-out -----------------------------------------------------------------------------


def test_opt_out_is_per_contact_and_matches_any_spelling():
    opted = {"sms:+4917012345678"}
    out = decide(event(), POLICY, Contacts(phone="+49 170 1234-5678", email=EMAIL), opted, NOON, BERLIN)
    assert actions(out) == [("sms", "drop", "opted_out"), ("email", "send", None)]
    opted = {"email:jane.doe@example.com"}
    out = decide(event(), POLICY, BOTH, opted, NOON, BERLIN)
    assert actions(out) == [("sms", "send", None), ("email", "drop", "opted_out")]


def test_opt_out_wins_over_everything_but_policy_and_contact():
    opted = {"sms:+4917012345678", "email:jane.doe@example.com"}
    stale = event(K.APPROACHING, occurred=NOON - timedelta(hours=1))
    assert {d.reason for d in decide(stale, POLICY, BOTH, opted, NOON, BERLIN)} == {DropReason.OPTED_OUT}


# --- freshness (issue 4: no stale alerts from an offline phone) ------------------------------


def test_an_arrival_50_minutes_ago_does_not_send_approaching_now():
    late = event(K.APPROACHING, occurred=NOON - timedelta(minutes=50), status=S.APPROACHING)
    assert {d.reason for d in decide(late, POLICY, BOTH, set(), NOON, BERLIN)} == {DropReason.STALE}


@pytest.mark.parametrize(("kind", "limit"), [
    (K.APPROACHING, timedelta(minutes=10)), (K.DELAYED, timedelta(minutes=30)),
    (K.OUT_FOR_DELIVERY, timedelta(hours=2)), (K.FAILED, timedelta(hours=12)),
    (K.DAY_BEFORE, timedelta(hours=12)), (K.DELIVERED, timedelta(hours=24)), (K.RESCHEDULED, timedelta(hours=24)),
])
def test_freshness_limit_per_kind(kind, limit):
    assert RULES[kind].max_age == limit
    policy = NotificationPolicy(channels={k: frozenset({Channel.EMAIL}) for k in NotifyKind}, quiet_hours=None)
    contacts = Contacts(email=EMAIL)
    just_fresh = decide(event(kind, occurred=NOON - limit), policy, contacts, set(), NOON, BERLIN)
    too_old = decide(event(kind, occurred=NOON - limit - timedelta(seconds=1)), policy, contacts, set(), NOON, BERLIN)
    assert actions(just_fresh)[1] == ("email", "send", None)
    assert actions(too_old)[1] == ("email", "drop", "stale")


def test_merchant_may_override_max_age():
    policy = NotificationPolicy(max_age={K.APPROACHING: timedelta(minutes=3)})
    out = decide(event(K.APPROACHING, occurred=NOON - timedelta(minutes=4)), policy, BOTH, set(), NOON, BERLIN)
    assert {d.reason for d in out} == {DropReason.STALE}


def test_event_from_a_phone_clock_in_the_future_is_not_stale():
    out = decide(event(K.APPROACHING, occurred=NOON + timedelta(minutes=5)), POLICY, BOTH, set(), NOON, BERLIN)
    assert {d.action for d in out} == {Action.SEND}


# --- superseded and expired -------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "status", "sends"), [
    (K.OUT_FOR_DELIVERY, S.OUT_FOR_DELIVERY, True), (K.OUT_FOR_DELIVERY, S.DELIVERED, False),
    (K.APPROACHING, S.APPROACHING, True), (K.APPROACHING, S.ARRIVED, True), (K.APPROACHING, S.FAILED, False),
    (K.DELIVERED, S.DELIVERED, True), (K.FAILED, S.FAILED, True), (K.FAILED, S.RESCHEDULED, False),
    (K.DELAYED, S.OUT_FOR_DELIVERY, True), (K.DELAYED, S.DELIVERED, False),
    (K.DAY_BEFORE, S.ASSIGNED, True), (K.DAY_BEFORE, S.CANCELLED, False),
    (K.RESCHEDULED, S.RESCHEDULED, True), (K.RESCHEDULED, S.CANCELLED, False),
])
def test_superseded_by_status(kind, status, sends):
    out = decide(event(kind, status=status), POLICY, Contacts(email=EMAIL), set(), NOON, BERLIN)
    assert actions(out)[1] == (("email", "send", None) if sends else ("email", "drop", "superseded"))


def test_expired_event_is_dropped():
    out = decide(event(expires_at=NOON), POLICY, BOTH, set(), NOON, BERLIN)
    assert {d.reason for d in out} == {DropReason.EXPIRED}


def test_naive_datetimes_are_refused():
    with pytest.raises(ValueError, match="aware"):
        NotifyEvent(K.DELIVERED, "shp_1", datetime(2025, 1, 1))
    with pytest.raises(ValueError, match="aware"):
        decide(event(), POLICY, BOTH, set(), datetime(2025, 1, 1), BERLIN)


# --- quiet hours: decisions ------------------------------------------------------------------


def test_quiet_hours_defer_until_8_local():
    night = local(BERLIN, 2025, 6, 3, 23, 30)
    out = decide(event(K.DELIVERED, occurred=night), POLICY, BOTH, set(), night, BERLIN)
    assert [d.action for d in out] == [Action.DEFER, Action.DEFER]
    assert {d.until for d in out} == {local(BERLIN, 2025, 6, 4, 8, 0).astimezone(UTC)}


@pytest.mark.parametrize("kind", [K.APPROACHING, K.DELAYED])
def test_quiet_hours_drop_what_loses_meaning_by_waiting(kind):
    night = local(BERLIN, 2025, 6, 3, 22, 0)
    out = decide(event(kind, occurred=night), POLICY, BOTH, set(), night, BERLIN)
    assert actions(out) == [("sms", "drop", "quiet_hours"), ("email", "drop", "quiet_hours")]


@pytest.mark.parametrize("kind", [K.DAY_BEFORE, K.OUT_FOR_DELIVERY, K.DELIVERED, K.FAILED, K.RESCHEDULED])
def test_quiet_hours_defer_the_rest(kind):
    assert RULES[kind].in_quiet_hours == "defer"
    night = local(BERLIN, 2025, 6, 3, 6, 0)
    out = decide(event(kind, occurred=night), POLICY, BOTH, set(), night, BERLIN)
    assert actions(out)[1] == ("email", "defer", None)


def test_quiet_hours_are_in_the_recipients_zone():
    instant = utc(2025, 6, 3, 20, 0)  # 22:00 in Berlin, 16:00 in New York
    assert decide(event(K.DELIVERED, occurred=instant), POLICY, BOTH, set(), instant, BERLIN)[0].action is Action.DEFER
    assert decide(event(K.DELIVERED, occurred=instant), POLICY, BOTH, set(), instant, NEW_YORK)[0].action is Action.SEND


def test_unknown_recipient_zone_falls_back_to_the_merchant_default():
    instant = utc(2025, 6, 3, 21, 30)  # 17:30 in New York, 21:30 in UTC
    policy = NotificationPolicy(default_time_zone="America/New_York")
    ev = event(K.DELIVERED, occurred=instant)
    assert decide(ev, policy, BOTH, set(), instant, "Mars/Olympus")[0].action is Action.SEND
    assert decide(ev, policy, BOTH, set(), instant, None)[0].action is Action.SEND
    assert decide(ev, POLICY, BOTH, set(), instant, "../../etc/passwd")[0].action is Action.DEFER  # UTC
    assert recipient_zone("Mars/Olympus", "also/bad").key == "UTC"


def test_quiet_hours_can_be_limited_to_sms_or_disabled():
    night = local(BERLIN, 2025, 6, 3, 23, 0)
    sms_only = NotificationPolicy(quiet_channels=frozenset({Channel.SMS}))
    out = decide(event(K.APPROACHING, occurred=night), sms_only, BOTH, set(), night, BERLIN)
    assert actions(out) == [("sms", "drop", "quiet_hours"), ("email", "send", None)]
    out = decide(event(K.APPROACHING, occurred=night), NotificationPolicy(quiet_hours=None), BOTH, set(), night,
                 BERLIN)
    assert {d.action for d in out} == {Action.SEND}


def test_deferral_past_expiry_is_dropped():
    night = local(BERLIN, 2025, 6, 3, 21, 30)
    ev = event(K.OUT_FOR_DELIVERY, occurred=night, expires_at=local(BERLIN, 2025, 6, 3, 23, 0))
    assert {d.reason for d in decide(ev, POLICY, BOTH, set(), night, BERLIN)} == {DropReason.EXPIRES_IN_QUIET_HOURS}


def test_released_deferral_is_fresh_and_decided_again():
    night = local(BERLIN, 2025, 6, 3, 23, 0)
    ev = event(K.DELIVERED, occurred=night, status=S.DELIVERED)
    until = decide(ev, POLICY, BOTH, set(), night, BERLIN)[0].until
    assert until is not None
    # At release the event is 9 hours old but due at `until`: it goes.
    released = replace(ev, due_at=until, status=S.DELIVERED)  # as dispatch builds a released event
    again = decide(released, POLICY, BOTH, set(), until + timedelta(seconds=5), BERLIN)
    assert {d.action for d in again} == {Action.SEND}
    # An "out for delivery" held overnight is superseded once the parcel was delivered.
    ofd = event(K.OUT_FOR_DELIVERY, occurred=night, status=S.OUT_FOR_DELIVERY)
    again = decide(replace(ofd, due_at=until, status=S.DELIVERED), POLICY, BOTH, set(), until, BERLIN)
    assert {d.reason for d in again} == {DropReason.SUPERSEDED}
    # A release worker that ran two days late does not send a stale message.
    again = decide(released, POLICY, BOTH, set(), until + timedelta(days=2), BERLIN)
    assert {d.reason for d in again} == {DropReason.STALE}


# --- quiet hours: the clock ------------------------------------------------------------------


def test_same_day_and_overnight_ranges():
    overnight = QuietHours.parse("21:00", "08:00")
    assert overnight.overnight
    assert [overnight.contains_wall(time(h, m)) for h, m in ((20, 59), (21, 0), (0, 0), (7, 59), (8, 0))] == [
        False, True, True, True, False]
    siesta = QuietHours.parse("13:00", "15:00")
    assert not siesta.overnight
    assert [siesta.contains_wall(time(h, m)) for h, m in ((12, 59), (13, 0), (14, 59), (15, 0))] == [
        False, True, True, False]
    assert siesta.ends_at(local(BERLIN, 2025, 6, 3, 13, 30), BERLIN) == local(BERLIN, 2025, 6, 3, 15, 0)
    assert siesta.ends_at(local(BERLIN, 2025, 6, 3, 12, 0), BERLIN) is None


def test_before_midnight_waits_until_tomorrow_after_midnight_until_today():
    q = DEFAULT_QUIET_HOURS
    assert q.ends_at(local(BERLIN, 2025, 6, 3, 22, 0), BERLIN) == local(BERLIN, 2025, 6, 4, 8, 0)
    assert q.ends_at(local(BERLIN, 2025, 6, 4, 2, 0), BERLIN) == local(BERLIN, 2025, 6, 4, 8, 0)


def test_quiet_hours_parse_errors():
    for start, end in (("21:00", "21:00"), ("24:00", "08:00"), ("9:00", "08:00"), ("21:60", "08:00"),
                       ("21-00", "08:00"), ("\uff12\uff11:\uff10\uff10", "08:00")):  # full-width digits
        with pytest.raises(ValueError):
            QuietHours.parse(start, end)


@pytest.mark.parametrize(("zone", "night", "morning_utc"), [
    # Berlin springs forward 2025-03-30 02:00 CET -> 03:00 CEST: 08:00 is 06:00 UTC (not 07:00).
    (BERLIN, (2025, 3, 29, 23, 0), utc(2025, 3, 30, 6, 0)),
    # ...and falls back 2025-10-26 03:00 CEST -> 02:00 CET: 08:00 is 07:00 UTC.
    (BERLIN, (2025, 10, 25, 23, 0), utc(2025, 10, 26, 7, 0)),
    # New York: 2025-03-09 02:00 EST -> 03:00 EDT, 2025-11-02 02:00 EDT -> 01:00 EST.
    (NEW_YORK, (2025, 3, 8, 23, 0), utc(2025, 3, 9, 12, 0)),
    (NEW_YORK, (2025, 11, 1, 23, 0), utc(2025, 11, 2, 13, 0)),
])
def test_dst_nights_end_at_8_local(zone, night, morning_utc):
    start = local(zone, *night)
    until = DEFAULT_QUIET_HOURS.ends_at(start, zone)
    assert until == morning_utc
    assert until is not None and until.astimezone(zone).time() == time(8, 0)


def test_end_inside_the_spring_forward_gap_ends_when_the_clock_jumps():
    # Quiet 22:00-02:30; Berlin's clock goes 01:59:59 -> 03:00 on 2025-03-30, skipping 02:30.
    q = QuietHours.parse("22:00", "02:30")
    until = q.ends_at(local(BERLIN, 2025, 3, 30, 1, 30), BERLIN)
    assert until == utc(2025, 3, 30, 1, 0)  # 03:00 CEST, the first wall-clock time outside
    assert until is not None and until.astimezone(BERLIN).time() == time(3, 0)
    q_ny = QuietHours.parse("23:00", "02:15")
    assert q_ny.ends_at(local(NEW_YORK, 2025, 3, 9, 1, 0), NEW_YORK) == utc(2025, 3, 9, 7, 0)  # 03:00 EDT


def test_end_inside_the_repeated_hour_of_fall_back():
    # Quiet 22:00-02:30 on 2025-10-26 in Berlin: 02:00-02:59 happens twice (CEST, then CET).
    q = QuietHours.parse("22:00", "02:30")
    first = local(BERLIN, 2025, 10, 26, 2, 15, fold=0)  # 00:15 UTC
    assert q.ends_at(first, BERLIN) == utc(2025, 10, 26, 0, 30)
    second = local(BERLIN, 2025, 10, 26, 2, 10, fold=1)  # 01:10 UTC: the wall clock reads quiet again
    assert q.contains(second, BERLIN)
    assert q.ends_at(second, BERLIN) == utc(2025, 10, 26, 1, 30)


def test_clock_turned_back_out_of_the_range_does_not_end_the_night():
    # Quiet 01:30-06:00 in New York; at 02:00 EDT (06:00 UTC) the clock goes back to 01:00 EST, which is
    # outside [01:30, 06:00) by the wall clock. The night still runs on to 06:00 EST.
    q = QuietHours.parse("01:30", "06:00")
    at = local(NEW_YORK, 2025, 11, 2, 1, 45, fold=0)  # EDT, 05:45 UTC
    assert q.ends_at(at, NEW_YORK) == utc(2025, 11, 2, 11, 0)  # 06:00 EST


def test_offset_changes_finds_transitions_to_the_second():
    changes = offset_changes(BERLIN, utc(2025, 3, 29, 0, 0), utc(2025, 3, 31, 0, 0))
    assert changes == [utc(2025, 3, 30, 1, 0)]
    assert offset_changes(UTC_ZONE, utc(2025, 3, 29, 0, 0), utc(2025, 3, 31, 0, 0)) == []
    assert offset_changes(NEW_YORK, utc(2025, 10, 1), utc(2025, 12, 1)) == [utc(2025, 11, 2, 6, 0)]


ZONES = [BERLIN, NEW_YORK, UTC_ZONE, ZoneInfo("Australia/Lord_Howe"), ZoneInfo("Asia/Kolkata"),
         ZoneInfo("America/Sao_Paulo"), ZoneInfo("Pacific/Chatham"), ZoneInfo("America/St_Johns"),
         ZoneInfo("Pacific/Apia")]
instants = st.datetimes(min_value=datetime(2012, 1, 1), max_value=datetime(2030, 12, 31)).map(
    lambda d: d.replace(tzinfo=UTC))
wall_times = st.builds(time, st.integers(0, 23), st.sampled_from([0, 1, 15, 30, 45, 59]))


@settings(max_examples=400, deadline=None)
@given(instant=instants, zone=st.sampled_from(ZONES), start=wall_times, end=wall_times)
def test_property_deferral_lands_on_the_first_instant_outside_quiet_hours(instant, zone, start, end):
    assume(start != end)
    q = QuietHours(start, end)
    until = q.ends_at(instant, zone)
    if not q.contains(instant, zone):
        assert until is None
        return
    assert until is not None
    assert instant < until <= instant + timedelta(hours=25)
    assert not q.contains(until, zone)
    # It is where the wall clock reaches `end`, or a forward jump over it...
    wall = until.astimezone(zone).time()
    assert wall == end or offset_changes(zone, until - timedelta(seconds=1), until) == [until]
    # ...and, unless the clock was turned back on the way, not a moment too early.
    if not offset_changes(zone, instant, until):
        before = until - timedelta(seconds=1)
        if before >= instant:
            assert q.contains(before, zone)
        span = (until - instant) / 16
        assert all(q.contains(instant + span * i, zone) for i in range(16))


@settings(max_examples=200, deadline=None)
@given(instant=instants, zone=st.sampled_from(ZONES), kind=st.sampled_from(list(NotifyKind)))
def test_property_decide_never_sends_in_quiet_hours(instant, zone, kind):
    out = decide(event(kind, occurred=instant), POLICY, BOTH, set(), instant, zone)
    quiet = DEFAULT_QUIET_HOURS.contains(instant, zone)
    for d in out:
        if d.action is Action.SEND:
            assert not quiet
        elif d.action is Action.DEFER:
            assert quiet and d.until is not None and not DEFAULT_QUIET_HOURS.contains(d.until, zone)
        else:
            assert d.reason in (DropReason.DISABLED, DropReason.QUIET_HOURS)


# --- policy (de)serialisation -------------------------------------------------------------------


def test_policy_round_trip():
    policy = NotificationPolicy.from_dict({
        "events": {"day_before": ["email", "sms"], "approaching": ["sms"]},
        "quiet_hours": {"start": "22:30", "end": "07:00", "channels": ["sms"]},
        "max_age_minutes": {"approaching": 5},
        "default_time_zone": "Europe/Berlin",
    })
    assert policy.channels_for(K.DAY_BEFORE) == {Channel.SMS, Channel.EMAIL}
    assert policy.channels_for(K.APPROACHING) == {Channel.SMS}
    assert policy.channels_for(K.DELIVERED) == {Channel.SMS, Channel.EMAIL}
    assert policy.quiet_hours == QuietHours(time(22, 30), time(7, 0))
    assert policy.quiet_channels == {Channel.SMS}
    assert policy.max_age_for(K.APPROACHING) == timedelta(minutes=5)
    assert NotificationPolicy.from_dict(policy.to_dict()) == policy
    assert NotificationPolicy.from_dict({}) == NotificationPolicy()
    assert NotificationPolicy.from_dict({"quiet_hours": None}).quiet_hours is None


def test_policy_errors_name_every_field():
    with pytest.raises(ProblemsError) as err:
        NotificationPolicy.from_dict({
            "events": {"arrived": ["sms"], "delivered": ["pigeon"], "failed": "sms"},
            "quiet_hours": {"start": "25:00", "end": "08:00", "colour": 1},
            "max_age_minutes": {"approaching": 0, "delayed": "x"},
            "default_time_zone": "Nowhere/Special",
            "enabled": "yes",
            "extra": 1,
        })
    fields = {p.field for p in err.value.problems}
    assert fields == {
        "notifications.events.arrived", "notifications.events.delivered[0]", "notifications.events.failed",
        "notifications.quiet_hours", "notifications.quiet_hours.colour", "notifications.max_age_minutes.approaching",
        "notifications.max_age_minutes.delayed", "notifications.default_time_zone", "notifications.enabled",
        "notifications.extra"}


# --- ledger keys ---------------------------------------------------------------------------------


def test_ledger_key_is_deterministic_and_distinct():
    key = ledger_key("shp_01abc", K.APPROACHING, Channel.SMS, "2025-06-03")
    assert key == "NOTIFY#shp_01abc#approaching#sms#2025-06-03"
    assert key == ledger_key("shp_01abc", "approaching", "sms", "2025-06-03")
    keys = {ledger_key("shp_1", kind, channel, occ) for kind in NotifyKind for channel in Channel
            for occ in (None, "2025-06-03", "2025-06-04")}
    assert len(keys) == len(NotifyKind) * len(Channel) * 3
    assert ledger_key("shp_1", K.DELIVERED, Channel.EMAIL) == "NOTIFY#shp_1#delivered#email"


@pytest.mark.parametrize("bad", ["", "a#b", "a b", "x" * 101, "a\nb"])
def test_ledger_key_refuses_ambiguous_parts(bad):
    with pytest.raises(ValueError):
        ledger_key(bad, K.DELIVERED, Channel.SMS)
    with pytest.raises(ValueError):
        ledger_key("shp_1", K.DELIVERED, Channel.SMS, bad or "#")
    with pytest.raises(ValueError):
        ledger_key("shp_1", "arrived", Channel.SMS)


def test_occurrence_per_delivery_date_except_delivered():
    day = date(2025, 6, 3)
    assert occurrence_for(K.DELIVERED, day) is None
    assert occurrence_for(K.APPROACHING, day) == "2025-06-03"
    assert occurrence_for(K.RESCHEDULED, None) is None


# --- ledger state machine ----------------------------------------------------------------------

KEY = ledger_key("shp_1", K.OUT_FOR_DELIVERY, Channel.SMS, "2025-06-03")


def test_the_ledger_state_machine() -> None:
    """The one table the DynamoDB ledger builds its conditions from (tests/integration/test_ledger.py runs
    the same steps against the ledger itself)."""
    L, G = LedgerState, Guard
    assert ledger_steps(L.CLAIMED, claimant=False) == [(None, G.ALWAYS), (L.DEFERRED, G.DUE),
                                                       (L.CLAIMED, G.LEASE_EXPIRED)]
    assert (L.FAILED_PERMANENT, G.REPLAY) in ledger_steps(L.CLAIMED, claimant=False, replay=True)
    for final in (L.SENT, L.FAILED_PERMANENT):
        assert ledger_steps(final, claimant=True) == [(L.CLAIMED, G.CLAIMANT)]  # only the claimant completes
        with pytest.raises(ValueError):
            ledger_steps(final, claimant=False)
    assert ledger_steps(L.DEFERRED, claimant=False) == [(None, G.ALWAYS), (L.DEFERRED, G.DUE)]
    assert ledger_steps(L.DROPPED, claimant=False) == [(None, G.ALWAYS), (L.DEFERRED, G.DUE)]
    # Nothing leaves SENT or DROPPED.
    for to in LedgerState:
        for claimant in (False, True):
            try:
                steps = ledger_steps(to, claimant=claimant, replay=True)
            except ValueError:
                continue
            assert not {source for source, _ in steps} & {L.SENT, L.DROPPED}


# --- provider errors and retries ------------------------------------------------------------------


@pytest.mark.parametrize(("code", "status", "timed_out", "message", "expected"), [
    ("Throttling", 400, False, "Rate exceeded", ErrorClass.RETRY),
    ("ThrottlingException", 400, False, None, ErrorClass.RETRY),
    ("TooManyRequestsException", 429, False, None, ErrorClass.RETRY),
    ("InternalError", 500, False, None, ErrorClass.RETRY),
    ("ServiceUnavailable", 503, False, None, ErrorClass.RETRY),
    (None, None, True, None, ErrorClass.RETRY),
    (None, None, False, None, ErrorClass.RETRY),  # connection reset
    ("SomethingNew", 502, False, None, ErrorClass.RETRY),
    ("SomethingNew", 429, False, None, ErrorClass.RETRY),
    ("InvalidParameter", 400, False, "Invalid parameter: PhoneNumber", ErrorClass.PERMANENT),
    ("MessageRejected", 400, False, "Email address is not verified.", ErrorClass.PERMANENT),
    ("AuthorizationError", 403, False, None, ErrorClass.PERMANENT),
    ("SomethingNew", 400, False, None, ErrorClass.PERMANENT),
    ("OptedOut", 400, False, None, ErrorClass.UNREACHABLE),
    ("MessageRejected", 400, False, "Address is on the account-level suppression list", ErrorClass.UNREACHABLE),
])
def test_classify_provider_error(code, status, timed_out, message, expected):
    assert classify_provider_error(code, status, timed_out=timed_out, message=message).cls is expected


@given(attempt=st.integers(1, 10_000), seed=st.integers(0, 2**32))
def test_property_backoff_is_capped_and_positive(attempt, seed):
    delay = backoff_delay(attempt, base=2.0, cap=300.0, rng=random.Random(seed))
    nominal = min(300.0, 2.0 * 2 ** min(attempt - 1, 64))
    assert 0.75 * nominal <= delay <= nominal <= 300.0


def test_backoff_grows_then_caps():
    fixed = random.Random(0)
    delays = [backoff_delay(n, base=2, cap=300, jitter=0, rng=fixed) for n in range(1, 12)]
    assert delays == [2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]
    with pytest.raises(ValueError):
        backoff_delay(0, base=2, cap=300)


# --- the day-before reminder's clock -------------------------------------------------

def test_reminders_are_due_from_five_pm_local_for_the_next_local_day() -> None:
    from chalicelib.notifications.rules import reminder_day

    berlin = "Europe/Berlin"
    assert reminder_day(datetime(2026, 11, 21, 15, 59, tzinfo=UTC), berlin) is None  # 16:59 local
    assert reminder_day(datetime(2026, 11, 21, 16, 0, tzinfo=UTC), berlin) == date(2026, 11, 22)  # 17:00
    assert reminder_day(datetime(2026, 11, 21, 22, 59, tzinfo=UTC), berlin) == date(2026, 11, 22)  # 23:59
    # 00:30 local on the 22nd is already the next local day in Berlin, before 17:00: nothing yet.
    assert reminder_day(datetime(2026, 11, 21, 23, 30, tzinfo=UTC), berlin) is None
    # Auckland is a day ahead of UTC: 18:00 there on the 22nd reminds for the 23rd.
    assert reminder_day(datetime(2026, 11, 22, 5, 0, tzinfo=UTC), "Pacific/Auckland") == date(2026, 11, 23)

