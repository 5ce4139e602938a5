"""The pure presence rules: due times, the once-a-minute write throttle, reasons and the shown state; and a
state machine checking that a model of the schedule + pipeline opens one offline episode per silence and
recovers each once, whatever the order of fixes and schedule runs."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from chalicelib.fleet.presence_rules import (
    DUE_STEP_MS,
    AppStatus,
    Presence,
    due_moves,
    due_shard,
    due_sort_key,
    offline_due_ms,
    offline_reason,
    shown_reason,
    state_of,
)

MIN = 60_000


def test_due_counts_from_the_later_of_last_fix_and_going_on_duty() -> None:
    assert offline_due_ms(None, 1_000, 5) == 1_000 + 5 * MIN
    assert offline_due_ms(10 * MIN, 1_000, 5) == 15 * MIN
    assert offline_due_ms(1_000, 10 * MIN, 2) == 12 * MIN


def test_a_batch_writes_only_when_the_due_time_moves_a_minute() -> None:
    assert due_moves(None, 5)
    assert not due_moves(100 * MIN, 100 * MIN + DUE_STEP_MS - 1)
    assert due_moves(100 * MIN, 100 * MIN + DUE_STEP_MS)
    assert not due_moves(100 * MIN, 99 * MIN)  # never backwards


@given(st.lists(st.integers(min_value=0, max_value=3_600_000), min_size=1, max_size=200))
def test_a_busy_driver_costs_at_most_one_write_a_minute(fix_times: list[int]) -> None:
    written: int | None = None
    writes = 0
    for t in sorted(fix_times):
        due = offline_due_ms(t, 0, 5)
        if due_moves(written, due):
            written, writes = due, writes + 1
    span = max(fix_times) - min(fix_times)
    assert writes <= span // DUE_STEP_MS + 1
    # ...and the written due time is never more than a step behind the last fix's
    assert written is not None and offline_due_ms(max(fix_times), 0, 5) - written < DUE_STEP_MS


def test_reasons_prefer_what_the_phone_said() -> None:
    assert offline_reason(Presence(on_duty=True), lwt=True) == "lwt"
    assert offline_reason(Presence(on_duty=True, status=AppStatus(location_permission="denied"))) == "location_off"
    assert offline_reason(Presence(on_duty=True, last_seen_ms=1, status=AppStatus(battery=9))) == "low_battery"
    assert offline_reason(Presence(on_duty=True, last_seen_ms=1, status=AppStatus(battery=80,
                                                                                   app_state="background"))) \
        == "app_background"
    assert offline_reason(Presence(on_duty=True)) == "no_fixes"


def test_the_shown_state() -> None:
    now = 100 * MIN
    off = Presence(on_duty=False, last_seen_ms=now)
    assert state_of(off, now_ms=now, offline_after_minutes=5, fix_ms=now, speed_mps=10) == "off_duty"
    on = Presence(on_duty=True, last_seen_ms=now - MIN)
    assert state_of(on, now_ms=now, offline_after_minutes=5, fix_ms=now - MIN, speed_mps=10) == "moving"
    assert state_of(on, now_ms=now, offline_after_minutes=5, fix_ms=now - MIN, speed_mps=0.2) == "stopped"
    assert state_of(on, now_ms=now, offline_after_minutes=5, fix_ms=now - 3 * MIN, speed_mps=10) == "stopped"
    silent = Presence(on_duty=True, last_seen_ms=now - 5 * MIN)
    state = state_of(silent, now_ms=now, offline_after_minutes=5, fix_ms=None, speed_mps=None)
    assert state == "offline" and shown_reason(silent, state) == "no_fixes"
    flagged = Presence(on_duty=True, offline=True, reason="lwt", last_seen_ms=now)
    assert state_of(flagged, now_ms=now, offline_after_minutes=5, fix_ms=now, speed_mps=5) == "offline"
    assert shown_reason(flagged, "offline") == "lwt" and shown_reason(flagged, "stopped") is None


def test_due_keys_sort_by_time_and_spread_over_shards() -> None:
    assert due_sort_key(999, "m", "d") < due_sort_key(1_000, "a", "a")
    assert len({due_shard(f"drv_{i}") for i in range(50)}) > 1


class PresenceMachine(RuleBasedStateMachine):
    """A model of fleet.presence's conditional writes: the item, the due index entry, the pipeline's cached due
    time and the declared-offline flag; events appended where the real code puts them once."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0
        self.on_duty = False
        self.offline = False
        self.episode = 0
        self.due: int | None = None  # the due index entry (None: not in the index)
        self.cached_due: int | None = None  # what the pipeline last wrote
        self.flag = False
        self.last_fix: int | None = None
        self.events: list[tuple[str, int]] = []

    @rule()
    def start_shift(self) -> None:
        self.on_duty = True
        if not self.offline:
            self.due = self.now + 5 * MIN

    @rule()
    def end_shift(self) -> None:
        self.on_duty, self.offline, self.due = False, False, None

    @rule(minutes=st.integers(min_value=0, max_value=12))
    def time_passes(self, minutes: int) -> None:
        self.now += minutes * MIN

    @rule(repeat=st.integers(min_value=1, max_value=3))
    def schedule_runs(self, repeat: int) -> None:
        for _ in range(repeat):
            if self.due is not None and self.due <= self.now and self.on_duty and not self.offline:
                self.offline, self.due, self.flag = True, None, True
                self.episode += 1
                self.events.append(("driver_offline", self.episode))

    @rule()
    def last_will(self) -> None:
        if self.on_duty and not self.offline:
            self.offline, self.due, self.flag = True, None, True
            self.episode += 1
            self.events.append(("driver_offline", self.episode))

    @rule(redeliver=st.booleans())
    def fix_arrives(self, redeliver: bool) -> None:
        for _ in range(2 if redeliver else 1):
            if self.last_fix is not None and self.now <= self.last_fix:
                return  # a redelivered batch: the pipeline's state says it is processed
            self.last_fix = self.now
            new_due = self.now + 5 * MIN
            if self.flag or due_moves(self.cached_due, new_due):
                self.cached_due, self.flag = new_due, False
                if self.on_duty and self.offline:
                    self.offline, self.due = False, new_due
                    self.events.append(("driver_online", self.episode))
                elif self.on_duty:
                    self.due = new_due
            self.now += 1000

    @precondition(lambda self: self.on_duty and not self.offline and self.due is not None)
    @invariant()
    def never_declared_early(self) -> None:
        assert self.last_fix is None or self.due is None or self.due >= self.last_fix

    @invariant()
    def episodes_alternate_and_each_fires_once(self) -> None:
        # a recovery follows its own episode's offline event directly (a shift may end an episode silently)
        for previous, (kind, episode) in zip(self.events, self.events[1:], strict=False):
            if kind == "driver_online":
                assert previous == ("driver_offline", episode)
        offline_ids = [e for k, e in self.events if k == "driver_offline"]
        assert offline_ids == list(range(1, len(offline_ids) + 1))
        online_ids = [e for k, e in self.events if k == "driver_online"]
        assert len(online_ids) == len(set(online_ids))

    @invariant()
    def an_offline_driver_recovers_on_its_next_fix(self) -> None:
        if self.offline:
            assert self.flag


TestPresenceMachine = PresenceMachine.TestCase
TestPresenceMachine.settings = settings(max_examples=150, stateful_step_count=30, deadline=None)
