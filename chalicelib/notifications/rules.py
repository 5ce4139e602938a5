"""Notifications to recipients: which message goes where and when, and how each send is recorded once.

Pure rules, no AWS. The integration layer feeds them:

- `decide(event, policy, contacts, opted_out, now, zone)` answers, per channel
  (SMS, email), *send now*, *defer until <instant>* or *drop because <reason>*.
- `ledger_key` and `LEDGER_TRANSITIONS` are the exactly-once ledger: the
  storage layer (notifications/ledger.py) writes every step as a conditional
  write built from the table (`ledger_steps`), and only the claimant calls the provider.
- `classify_provider_error` and `backoff_delay` say whether and when a failed
  SNS/SES call is tried again.

Event kinds and their rules (`RULES`):

| kind              | default channels | max age | in quiet hours | still relevant while status is |
|-------------------|------------------|---------|----------------|--------------------------------|
| day_before        | email            | 12 h    | defer          | created, assigned, rescheduled |
| out_for_delivery  | sms, email       | 2 h     | defer          | out_for_delivery, approaching, arrived |
| approaching       | sms, email       | 10 min  | drop           | approaching, arrived           |
| delivered         | sms, email       | 24 h    | defer          | delivered                      |
| failed            | sms, email       | 12 h    | defer          | failed                         |
| delayed           | sms, email       | 30 min  | drop           | assigned, out_for_delivery, approaching |
| rescheduled       | sms, email       | 24 h    | defer          | rescheduled, created, assigned |
| returned          | sms, email       | 24 h    | defer          | returned                       |
| cancelled         | sms, email       | 24 h    | defer          | cancelled                      |

*Max age* is measured from the event's `due_at` (when it was meant to go: the
time it happened, or the end of the quiet period it waited through), so a
phone that was offline for 50 minutes does not make an "approaching" SMS go
out now, while a "delivered" email held overnight by quiet hours still goes at 08:00.
"Approaching" and "delayed" describe the next minutes; waiting until morning
makes them wrong, so quiet hours drop them (the decision says so, for the log).
Everything else waits until the quiet period ends in the recipient's time
zone, unless the event carries an `expires_at` the wait would pass (e.g. the
end of the delivery window for "out for delivery"), and it is decided again
when released: by then the status may have moved on (an "out for delivery"
held overnight is dropped as superseded once the parcel is delivered).
"""

from __future__ import annotations

import random
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from enum import StrEnum
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from chalicelib.core.problems import Problem, ProblemsError
from chalicelib.notifications.contacts import contact_key, normalize_email, normalize_phone
from chalicelib.shipments.lifecycle import ShipmentStatus

S = ShipmentStatus


class NotifyKind(StrEnum):
    DAY_BEFORE = "day_before"
    OUT_FOR_DELIVERY = "out_for_delivery"
    APPROACHING = "approaching"
    DELIVERED = "delivered"
    FAILED = "failed"
    DELAYED = "delayed"
    RESCHEDULED = "rescheduled"
    RETURNED = "returned"
    CANCELLED = "cancelled"


class Channel(StrEnum):
    SMS = "sms"
    EMAIL = "email"


K = NotifyKind
BOTH = frozenset({Channel.SMS, Channel.EMAIL})


@dataclass(frozen=True)
class KindRule:
    max_age: timedelta
    in_quiet_hours: Literal["defer", "drop"]
    relevant_while: frozenset[ShipmentStatus]
    default_channels: frozenset[Channel]


RULES: Mapping[NotifyKind, KindRule] = {
    K.DAY_BEFORE: KindRule(timedelta(hours=12), "defer", frozenset({S.CREATED, S.ASSIGNED, S.RESCHEDULED}),
                           frozenset({Channel.EMAIL})),
    K.OUT_FOR_DELIVERY: KindRule(timedelta(hours=2), "defer",
                                 frozenset({S.OUT_FOR_DELIVERY, S.APPROACHING, S.ARRIVED}), BOTH),
    K.APPROACHING: KindRule(timedelta(minutes=10), "drop", frozenset({S.APPROACHING, S.ARRIVED}), BOTH),
    K.DELIVERED: KindRule(timedelta(hours=24), "defer", frozenset({S.DELIVERED}), BOTH),
    K.FAILED: KindRule(timedelta(hours=12), "defer", frozenset({S.FAILED}), BOTH),
    K.DELAYED: KindRule(timedelta(minutes=30), "drop", frozenset({S.ASSIGNED, S.OUT_FOR_DELIVERY, S.APPROACHING}),
                        BOTH),
    K.RESCHEDULED: KindRule(timedelta(hours=24), "defer", frozenset({S.RESCHEDULED, S.CREATED, S.ASSIGNED}), BOTH),
    K.RETURNED: KindRule(timedelta(hours=24), "defer", frozenset({S.RETURNED}), BOTH),
    K.CANCELLED: KindRule(timedelta(hours=24), "defer", frozenset({S.CANCELLED}), BOTH),
}

# Bounds of a merchant's own max-age override.
MIN_MAX_AGE = timedelta(minutes=1)
MAX_MAX_AGE = timedelta(hours=48)


# --- time zones and quiet hours ---------------------------------------------------


def zone_or_none(name: str | None) -> ZoneInfo | None:
    """The IANA zone called `name`, or None when there is no such zone (or the name is malformed)."""
    if not name or len(name) > 64:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


def recipient_zone(name: str | None, fallback: str = "UTC") -> ZoneInfo:
    """The recipient's zone, else the merchant's `fallback`, else UTC."""
    return zone_or_none(name) or zone_or_none(fallback) or ZoneInfo("UTC")


def _parse_hhmm(text: str) -> time:
    hh, sep, mm = text.partition(":")
    if sep != ":" or len(hh) != 2 or len(mm) != 2 or not (hh + mm).isascii() or not (hh + mm).isdigit():
        raise ValueError(f"{text!r} is not a time of day as HH:MM")
    hour, minute = int(hh), int(mm)
    if hour > 23 or minute > 59:
        raise ValueError(f"{text!r} is not a time of day as HH:MM (00:00-23:59)")
    return time(hour, minute)


def _aware(instant: datetime, name: str = "instant") -> None:
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware")


@dataclass(frozen=True)
class QuietHours:
    """Local wall-clock hours [start, end) in which recipients are not disturbed.

    `start > end` is an overnight range (21:00-08:00 covers 21:00 to midnight
    and midnight to 08:00). Membership is by the local wall clock of the
    instant, so on DST days the quiet period is an hour longer or shorter in
    real time, and `ends_at` finds the exact instant it ends even when the
    clock jumps over `end`.
    """

    start: time
    end: time

    def __post_init__(self) -> None:
        if self.start.tzinfo is not None or self.end.tzinfo is not None:
            raise ValueError("quiet hours are wall-clock times without a zone")
        if self.start == self.end:
            raise ValueError("quiet hours need start != end (use no quiet hours to disable them)")

    @classmethod
    def parse(cls, start: str, end: str) -> QuietHours:
        return cls(_parse_hhmm(start), _parse_hhmm(end))

    @property
    def overnight(self) -> bool:
        return self.start > self.end

    def contains_wall(self, wall: time) -> bool:
        wall = wall.replace(tzinfo=None, fold=0)
        if self.overnight:
            return wall >= self.start or wall < self.end
        return self.start <= wall < self.end

    def contains(self, instant: datetime, zone: tzinfo) -> bool:
        _aware(instant)
        return self.contains_wall(instant.astimezone(zone).time())

    def ends_at(self, instant: datetime, zone: tzinfo) -> datetime | None:
        """When the quiet period around `instant` ends (UTC), or None when `instant` is not quiet.

        The period ends when the wall clock next reaches `end`: the first
        instant whose local time is `end` (on a fall-back day that time occurs
        twice, and the first occurrence counts), or the instant the clock jumps
        forward over `end` (a spring-forward gap; 02:30 does not exist on that
        night, so a period ending 02:30 ends at 03:00). A clock turned *back*
        out of the range (quiet from 01:30, clocks go from 02:00 back to 01:00)
        does not end the night early: the period runs on to `end`. The result
        is always outside quiet hours.
        """
        if not self.contains(instant, zone):
            return None
        local_day = instant.astimezone(zone).date()
        candidates: set[datetime] = set()
        for offset in range(-1, 3):
            day = local_day + timedelta(days=offset)
            for fold in (0, 1):
                wall = datetime.combine(day, self.end, tzinfo=zone).replace(fold=fold)
                candidates.add(wall.astimezone(UTC))
        for change in offset_changes(zone, instant, instant + timedelta(hours=50)):
            before = (change - timedelta(seconds=1)).astimezone(zone).utcoffset()
            after = change.astimezone(zone).utcoffset()
            if before is not None and after is not None and after > before:
                candidates.add(change)  # the clock jumps forward here
        for candidate in sorted(candidates):
            if candidate > instant and not self.contains(candidate, zone):
                return candidate
        raise AssertionError("a quiet period longer than two days")  # pragma: no cover - start != end forbids it

    def to_dict(self) -> dict[str, str]:
        return {"start": self.start.strftime("%H:%M"), "end": self.end.strftime("%H:%M")}


DEFAULT_QUIET_HOURS = QuietHours(time(21, 0), time(8, 0))


def offset_changes(zone: tzinfo, start: datetime, end: datetime) -> list[datetime]:
    """The instants in (start, end] at which `zone`'s UTC offset changes, to the second (UTC)."""
    _aware(start, "start")
    _aware(end, "end")
    out: list[datetime] = []
    step = 3600

    def offset(ts: int) -> timedelta | None:
        return datetime.fromtimestamp(ts, UTC).astimezone(zone).utcoffset()

    lo_ts = int(start.timestamp())
    end_ts = int(end.timestamp())
    lo_off = offset(lo_ts)
    while lo_ts < end_ts:
        hi_ts = min(lo_ts + step, end_ts)
        hi_off = offset(hi_ts)
        if hi_off != lo_off:
            a, b = lo_ts, hi_ts  # offset(a) == lo_off, offset(b) != lo_off
            while b - a > 1:
                mid = (a + b) // 2
                if offset(mid) == lo_off:
                    a = mid
                else:
                    b = mid
            out.append(datetime.fromtimestamp(b, UTC))
        lo_ts, lo_off = hi_ts, hi_off
    return out


# --- the merchant's policy ----------------------------------------------------------


@dataclass(frozen=True)
class NotificationPolicy:
    """Per merchant: which events go to which channels, quiet hours, how old an event may be.

    `channels` maps every kind to its channels (kinds absent from a policy built
    by `from_dict` keep their defaults). `quiet_hours=None` disables quiet hours;
    they apply to the channels in `quiet_channels`. `max_age` overrides a kind's
    freshness limit (between 1 minute and 48 hours). `default_time_zone` is used
    for recipients whose own zone is unknown.
    """

    channels: Mapping[NotifyKind, frozenset[Channel]] = field(
        default_factory=lambda: {kind: rule.default_channels for kind, rule in RULES.items()})
    quiet_hours: QuietHours | None = DEFAULT_QUIET_HOURS
    quiet_channels: frozenset[Channel] = BOTH
    max_age: Mapping[NotifyKind, timedelta] = field(default_factory=dict)
    default_time_zone: str = "UTC"
    enabled: bool = True

    def channels_for(self, kind: NotifyKind) -> frozenset[Channel]:
        if not self.enabled:
            return frozenset()
        return self.channels.get(kind, RULES[kind].default_channels)

    def max_age_for(self, kind: NotifyKind) -> timedelta:
        return self.max_age.get(kind, RULES[kind].max_age)

    def to_dict(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "events": {kind.value: sorted(c.value for c in self.channels_for_all(kind)) for kind in NotifyKind},
            "quiet_hours": None if self.quiet_hours is None else {
                **self.quiet_hours.to_dict(), "channels": sorted(c.value for c in self.quiet_channels)},
            "max_age_minutes": {kind.value: age.total_seconds() / 60 for kind, age in self.max_age.items()},
            "default_time_zone": self.default_time_zone,
        }

    def channels_for_all(self, kind: NotifyKind) -> frozenset[Channel]:
        """The configured channels of `kind`, whether or not the policy is enabled."""
        return self.channels.get(kind, RULES[kind].default_channels)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], field_prefix: str = "notifications") -> NotificationPolicy:
        """Build from the stored / API form (`to_dict`'s shape); raises ProblemsError naming every bad field."""
        problems: list[Problem] = []

        def bad(path: str, code: str, message: str) -> None:
            problems.append(Problem(f"{field_prefix}.{path}" if path else field_prefix, code, message))

        known = {"enabled", "events", "quiet_hours", "max_age_minutes", "default_time_zone"}
        for key in data:
            if key not in known:
                bad(str(key), "unknown_field", f"unknown field; expected one of {', '.join(sorted(known))}")

        enabled = data.get("enabled", True)
        if not isinstance(enabled, bool):
            bad("enabled", "type", "must be true or false")
            enabled = True

        channels: dict[NotifyKind, frozenset[Channel]] = {k: r.default_channels for k, r in RULES.items()}
        events = data.get("events", {})
        if not isinstance(events, Mapping):
            bad("events", "type", "must be an object of event kind -> list of channels")
            events = {}
        for raw_kind, raw_channels in events.items():
            kind = _enum_or_none(NotifyKind, raw_kind)
            if kind is None:
                bad(f"events.{raw_kind}", "unknown_kind",
                    f"unknown event kind; expected one of {', '.join(k.value for k in NotifyKind)}")
                continue
            parsed = _channels(raw_channels, f"events.{kind.value}", bad)
            if parsed is not None:
                channels[kind] = parsed

        quiet: QuietHours | None = DEFAULT_QUIET_HOURS
        quiet_channels = BOTH
        raw_quiet = data.get("quiet_hours", DEFAULT_QUIET_HOURS.to_dict())
        if raw_quiet is not None:
            if not isinstance(raw_quiet, Mapping):
                bad("quiet_hours", "type", 'must be null or {"start": "HH:MM", "end": "HH:MM"}')
            else:
                for key in raw_quiet:
                    if key not in ("start", "end", "channels"):
                        bad(f"quiet_hours.{key}", "unknown_field", "unknown field; expected start, end, channels")
                try:
                    start, end = raw_quiet.get("start"), raw_quiet.get("end")
                    if not isinstance(start, str) or not isinstance(end, str):
                        raise ValueError("start and end are required, as HH:MM")
                    quiet = QuietHours.parse(start, end)
                except ValueError as exc:
                    bad("quiet_hours", "invalid", str(exc))
                if "channels" in raw_quiet:
                    parsed = _channels(raw_quiet["channels"], "quiet_hours.channels", bad)
                    if parsed is not None:
                        quiet_channels = parsed
        else:
            quiet = None

        max_age: dict[NotifyKind, timedelta] = {}
        raw_ages = data.get("max_age_minutes", {})
        if not isinstance(raw_ages, Mapping):
            bad("max_age_minutes", "type", "must be an object of event kind -> minutes")
            raw_ages = {}
        for raw_kind, minutes in raw_ages.items():
            kind = _enum_or_none(NotifyKind, raw_kind)
            if kind is None:
                bad(f"max_age_minutes.{raw_kind}", "unknown_kind", "unknown event kind")
                continue
            if isinstance(minutes, bool) or not isinstance(minutes, int | float) or minutes != minutes:
                bad(f"max_age_minutes.{kind.value}", "type", "must be a number of minutes")
                continue
            age = timedelta(minutes=min(float(minutes), 1e7))
            if not MIN_MAX_AGE <= age <= MAX_MAX_AGE:
                bad(f"max_age_minutes.{kind.value}", "range",
                    f"must be between {MIN_MAX_AGE.total_seconds() / 60:g} and {MAX_MAX_AGE.total_seconds() / 60:g}")
                continue
            max_age[kind] = age

        tz_name = data.get("default_time_zone", "UTC")
        if not isinstance(tz_name, str) or zone_or_none(tz_name) is None:
            bad("default_time_zone", "invalid", "must be an IANA time zone name such as Europe/Berlin")
            tz_name = "UTC"

        if problems:
            raise ProblemsError(problems)
        return cls(channels, quiet, quiet_channels, max_age, tz_name, enabled)


def _enum_or_none(enum: type[NotifyKind] | type[Channel], raw: object) -> Any:
    if not isinstance(raw, str):
        return None
    try:
        return enum(raw)
    except ValueError:
        return None


def _channels(raw: object, path: str, bad: Any) -> frozenset[Channel] | None:
    if not isinstance(raw, list | tuple):
        bad(path, "type", 'must be a list of channels ("sms", "email")')
        return None
    out: set[Channel] = set()
    for i, item in enumerate(raw):
        channel = _enum_or_none(Channel, item)
        if channel is None:
            bad(f"{path}[{i}]", "unknown_channel", 'unknown channel; expected "sms" or "email"')
            return None
        out.add(channel)
    return frozenset(out)


# --- deciding ---------------------------------------------------------------------


class Action(StrEnum):
    SEND = "send"
    DEFER = "defer"
    DROP = "drop"


class DropReason(StrEnum):
    DISABLED = "disabled"  # the merchant's policy does not send this kind on this channel
    NO_CONTACT = "no_contact"  # the recipient has no phone / email
    INVALID_CONTACT = "invalid_contact"  # the stored phone / email is not usable
    OPTED_OUT = "opted_out"  # this contact opted out of this merchant's messages
    SUPERSEDED = "superseded"  # the shipment's status moved past what the message says
    STALE = "stale"  # the event is older than the kind's max age
    EXPIRED = "expired"  # past the event's expires_at
    QUIET_HOURS = "quiet_hours"  # due in quiet hours, and the kind loses its meaning by waiting
    EXPIRES_IN_QUIET_HOURS = "expires_in_quiet_hours"  # would wait past its expires_at


@dataclass(frozen=True)
class NotifyEvent:
    """Something that may notify the recipient of one shipment.

    `occurred_at` is when it happened (a fix time, a driver's timestamp);
    `due_at` when the message was meant to go, if not then (a message released
    after quiet hours carries the instant its wait ended). `expires_at`, when
    set, is the instant after which the message is pointless. `status` is the
    shipment's status when deciding; None skips the "superseded" check.
    """

    kind: NotifyKind
    shipment_id: str
    occurred_at: datetime
    due_at: datetime | None = None
    expires_at: datetime | None = None
    status: ShipmentStatus | None = None

    def __post_init__(self) -> None:
        _aware(self.occurred_at, "occurred_at")
        if self.due_at is not None:
            _aware(self.due_at, "due_at")
        if self.expires_at is not None:
            _aware(self.expires_at, "expires_at")


@dataclass(frozen=True)
class Contacts:
    phone: str | None = None
    email: str | None = None

    def address(self, channel: Channel) -> str | None:
        return self.phone if channel is Channel.SMS else self.email


@dataclass(frozen=True)
class Decision:
    """What to do on one channel. `address` is the normalised phone / email (None when there is none).

    SEND: now. DEFER: at `until` (UTC), deciding again then with `due_at=until`.
    DROP: never, for `reason`; the caller records it (ledger + log) so nothing is dropped silently.
    """

    channel: Channel
    action: Action
    address: str | None = None
    until: datetime | None = None
    reason: DropReason | None = None

    @classmethod
    def drop(cls, channel: Channel, reason: DropReason, address: str | None = None) -> Decision:
        return cls(channel, Action.DROP, address, None, reason)


def _normalised(channel: Channel, address: str) -> str | None:
    try:
        return normalize_phone(address) if channel is Channel.SMS else normalize_email(address)
    except ValueError:
        return None


def decide(event: NotifyEvent, policy: NotificationPolicy, contacts: Contacts, opted_out: Collection[str],
           now: datetime, zone: tzinfo | str | None = None) -> list[Decision]:
    """One decision per channel (SMS first, then email), for the log as much as for sending.

    `opted_out` holds the `contact_key`s this merchant must not message (its own
    opt-out records plus the numbers SNS reports as opted out). `zone` is the
    recipient's time zone (a tzinfo or an IANA name); when unknown, the
    policy's default zone is used for quiet hours.
    """
    _aware(now, "now")
    if isinstance(zone, tzinfo):
        local_zone: tzinfo = zone
    else:
        local_zone = recipient_zone(zone, policy.default_time_zone)
    rule = RULES[event.kind]
    enabled = policy.channels_for(event.kind)
    due = event.due_at or event.occurred_at
    age = now - due

    decisions: list[Decision] = []
    for channel in (Channel.SMS, Channel.EMAIL):
        raw = contacts.address(channel)
        address = _normalised(channel, raw) if raw else None
        if channel not in enabled:
            decisions.append(Decision.drop(channel, DropReason.DISABLED, address))
        elif not raw:
            decisions.append(Decision.drop(channel, DropReason.NO_CONTACT))
        elif address is None:
            decisions.append(Decision.drop(channel, DropReason.INVALID_CONTACT))
        elif contact_key(channel, address) in opted_out:
            decisions.append(Decision.drop(channel, DropReason.OPTED_OUT, address))
        elif event.status is not None and event.status not in rule.relevant_while:
            decisions.append(Decision.drop(channel, DropReason.SUPERSEDED, address))
        elif age > policy.max_age_for(event.kind):
            decisions.append(Decision.drop(channel, DropReason.STALE, address))
        elif event.expires_at is not None and now >= event.expires_at:
            decisions.append(Decision.drop(channel, DropReason.EXPIRED, address))
        else:
            decisions.append(_quiet_decision(event, policy, channel, address, now, local_zone))
    return decisions


def _quiet_decision(event: NotifyEvent, policy: NotificationPolicy, channel: Channel, address: str,
                    now: datetime, zone: tzinfo) -> Decision:
    quiet = policy.quiet_hours
    if quiet is None or channel not in policy.quiet_channels:
        return Decision(channel, Action.SEND, address)
    until = quiet.ends_at(now, zone)
    if until is None:
        return Decision(channel, Action.SEND, address)
    if RULES[event.kind].in_quiet_hours == "drop":
        return Decision.drop(channel, DropReason.QUIET_HOURS, address)
    if event.expires_at is not None and until >= event.expires_at:
        return Decision.drop(channel, DropReason.EXPIRES_IN_QUIET_HOURS, address)
    return Decision(channel, Action.DEFER, address, until)


REMINDER_LOCAL_TIME = time(17, 0)  # the day-before reminder goes from this local time on the day before


def reminder_day(now: datetime, zone: tzinfo | str | None, send_from: time = REMINDER_LOCAL_TIME) -> date | None:
    """The delivery date whose day-before reminders are due at `now` in the merchant's zone, if any.

    From `send_from` until midnight local time it is tomorrow; before, nothing. A scheduled run that is
    missed or repeated within those hours changes nothing: the ledger sends each reminder once.
    """
    _aware(now, "now")
    local_zone = zone if isinstance(zone, tzinfo) else recipient_zone(zone)
    local = now.astimezone(local_zone)
    if local.time() < send_from:
        return None
    return local.date() + timedelta(days=1)


def reminder_statuses() -> frozenset[ShipmentStatus]:
    """The statuses a shipment can have the day before and still want its reminder."""
    return RULES[NotifyKind.DAY_BEFORE].relevant_while


# --- the exactly-once ledger --------------------------------------------------------

LEDGER_PREFIX = "NOTIFY"
_KEY_PART_MAX = 100


def occurrence_for(kind: NotifyKind, delivery_date: date | None) -> str | None:
    """The ledger occurrence of a kind: "delivered" happens once per shipment; every other kind once per
    delivery date, so a rescheduled delivery gets its own day-before, out-for-delivery, approaching...
    """
    if kind is NotifyKind.DELIVERED or delivery_date is None:
        return None
    return delivery_date.isoformat()


def _key_part(name: str, value: str) -> str:
    if not value or len(value) > _KEY_PART_MAX or "#" in value or not value.isprintable() or any(
            c.isspace() for c in value):
        raise ValueError(f"ledger key {name} must be 1-{_KEY_PART_MAX} printable characters without # or spaces")
    return value


def ledger_key(shipment_id: str, kind: NotifyKind | str, channel: Channel | str,
               occurrence: str | int | None = None) -> str:
    """`NOTIFY#<shipment>#<kind>#<channel>[#<occurrence>]`: one key per message that may be sent once.

    Deterministic, so a stream batch delivered twice, a Lambda retry and a
    concurrent worker all compute the same key and only one claim succeeds.
    """
    parts = [LEDGER_PREFIX, _key_part("shipment_id", shipment_id), NotifyKind(kind).value, Channel(channel).value]
    if occurrence is not None:
        parts.append(_key_part("occurrence", str(occurrence)))
    return "#".join(parts)


class LedgerState(StrEnum):
    CLAIMED = "claimed"  # a worker holds it until lease_until and is sending
    SENT = "sent"  # the provider accepted it (final)
    DEFERRED = "deferred"  # waiting until not_before: quiet hours, or a retry after a transient error
    FAILED_PERMANENT = "failed_permanent"  # will not be sent; on the dead-letter queue (replay reopens it)
    DROPPED = "dropped"  # decided not to send, with the reason (final)


L = LedgerState


class Guard(StrEnum):
    """What must hold besides the current state for a ledger step (the ledger writes it into its condition)."""

    ALWAYS = "always"  # nothing more (a new item)
    DUE = "due"  # the deferral's not_before has passed
    LEASE_EXPIRED = "lease_expired"  # the claimant's lease ran out (it crashed): another worker may take over
    CLAIMANT = "claimant"  # only the worker that holds the claim (its claim id)
    REPLAY = "replay"  # only an operator's explicit replay


# The one definition of the ledger's state machine: (from, to) -> guard; None is "no item yet".
# notifications/ledger.py builds every conditional write from it; a step not listed is refused.
LEDGER_TRANSITIONS: Mapping[tuple[LedgerState | None, LedgerState], Guard] = {
    (None, L.CLAIMED): Guard.ALWAYS,
    (None, L.DEFERRED): Guard.ALWAYS,  # quiet hours
    (None, L.DROPPED): Guard.ALWAYS,
    (L.DEFERRED, L.CLAIMED): Guard.DUE,  # released by the stream's retry or the release schedule
    (L.DEFERRED, L.DEFERRED): Guard.DUE,  # decided again on release: wait again
    (L.DEFERRED, L.DROPPED): Guard.DUE,  # decided again on release: superseded or stale
    (L.CLAIMED, L.CLAIMED): Guard.LEASE_EXPIRED,
    (L.CLAIMED, L.SENT): Guard.CLAIMANT,
    (L.CLAIMED, L.DEFERRED): Guard.CLAIMANT,  # a transient provider error: retry after a backoff
    (L.CLAIMED, L.FAILED_PERMANENT): Guard.CLAIMANT,
    (L.CLAIMED, L.DROPPED): Guard.CLAIMANT,
    (L.FAILED_PERMANENT, L.CLAIMED): Guard.REPLAY,
    # SENT and DROPPED are final.
}
DEFAULT_LEASE = timedelta(minutes=5)  # must exceed the sending Lambda's timeout


def ledger_steps(to: LedgerState, *, claimant: bool, replay: bool = False
                 ) -> list[tuple[LedgerState | None, Guard]]:
    """The steps into `to` open to a caller: the claimant finishing its claim (`claimant`) may take only
    CLAIMANT steps; anyone else (claiming, or settling a message nobody holds) every other step, REPLAY ones
    only on an explicit `replay`. Raises ValueError when there is none (a step the state machine refuses).

    A claimed entry is taken over only after its lease: a worker that crashed between the provider's answer
    and marking it sent may cause one duplicate, which beats losing the message; anything else (redelivery,
    retries, concurrency) finds the claim and sends nothing.
    """
    steps = [(source, guard) for (source, target), guard in LEDGER_TRANSITIONS.items() if target is to
             and (guard is Guard.CLAIMANT) == claimant and (replay or guard is not Guard.REPLAY)]
    if not steps:
        raise ValueError(f"no ledger step into {to.value} for {'the claimant' if claimant else 'a new claim'}")
    return steps


# --- provider errors and retries -----------------------------------------------------


class ErrorClass(StrEnum):
    RETRY = "retry"  # throttling, 5xx, timeouts, network: try again later
    PERMANENT = "permanent"  # this message will never go through as it is: dead-letter it
    UNREACHABLE = "unreachable"  # permanent, and the contact should be recorded as opted out / suppressed


@dataclass(frozen=True)
class ErrorVerdict:
    cls: ErrorClass
    code: str

    @property
    def retry(self) -> bool:
        return self.cls is ErrorClass.RETRY


RETRYABLE_CODES = frozenset({
    "Throttling", "ThrottlingException", "ThrottledException", "TooManyRequestsException", "RequestThrottled",
    "RequestLimitExceeded", "LimitExceededException", "SlowDown", "ServiceUnavailable",
    "ServiceUnavailableException", "InternalError", "InternalFailure", "InternalServerError",
    "InternalErrorException", "RequestTimeout", "RequestTimeoutException", "KMSThrottlingException",
    "ExpiredToken", "ExpiredTokenException", "RequestExpired", "EC2ThrottledException",
})
UNREACHABLE_CODES = frozenset({"OptedOut", "OptedOutException", "PhoneNumberOptedOut", "EndpointDisabled",
                               "EndpointDisabledException"})
PERMANENT_CODES = frozenset({
    "InvalidParameter", "InvalidParameterValue", "InvalidParameterException", "InvalidParameterValueException",
    "ValidationError", "ValidationException", "MessageRejected", "BadRequestException",
    "AuthorizationError", "AuthorizationErrorException", "AccessDenied", "AccessDeniedException",
    "MailFromDomainNotVerifiedException", "ConfigurationSetDoesNotExistException",
    "AccountSendingPausedException", "SendingPausedException", "NotFound", "NotFoundException",
    "KMSDisabledException", "KMSNotFoundException", "KMSInvalidStateException", "KMSAccessDeniedException",
    "InvalidClientTokenId", "UnrecognizedClientException", "SignatureDoesNotMatch", "InvalidSecurity",
})
_UNREACHABLE_HINTS = ("opted out", "opted-out", "suppression list", "suppressed")


def classify_provider_error(code: str | None, http_status: int | None = None, *, timed_out: bool = False,
                            message: str | None = None) -> ErrorVerdict:
    """Whether an SNS/SES error is worth retrying.

    Known AWS error codes decide first (throttling / internal / timeout codes
    retry; invalid number or address, rejected message, missing permission or
    an unverified sender are permanent; an opted-out number or a suppressed
    address is permanent *and* should be recorded as an opt-out). Unknown codes
    go by HTTP status: 429 and 5xx retry, other 4xx are permanent. No answer at
    all (timeout, connection reset) retries: the provider may have sent it, but
    a rare duplicate beats a lost message.
    """
    label = code or (f"HTTP{http_status}" if http_status is not None else "Timeout" if timed_out else "NoResponse")
    hint = (message or "").lower()
    if code in UNREACHABLE_CODES or (code in PERMANENT_CODES and any(h in hint for h in _UNREACHABLE_HINTS)):
        return ErrorVerdict(ErrorClass.UNREACHABLE, label)
    if code in RETRYABLE_CODES:
        return ErrorVerdict(ErrorClass.RETRY, label)
    if code in PERMANENT_CODES:
        return ErrorVerdict(ErrorClass.PERMANENT, label)
    if timed_out or http_status is None or http_status == 429 or http_status >= 500:
        return ErrorVerdict(ErrorClass.RETRY, label)
    return ErrorVerdict(ErrorClass.PERMANENT, label)


NOTIFY_RETRY_BASE_S = 2.0
NOTIFY_RETRY_CAP_S = 300.0
NOTIFY_MAX_ATTEMPTS = 10  # claims; the nine waits add up to at most 2+4+...+256+300 s = 13.5 minutes


def backoff_delay(attempt: int, *, base: float, cap: float, jitter: float = 0.25,
                  rng: random.Random | None = None) -> float:
    """Seconds to wait before retry number `attempt` (1 = the first retry).

    Capped exponential with jitter: d = min(cap, base * 2**(attempt-1)), drawn
    uniformly from [(1 - jitter) * d, d]. Never above `cap`, never below
    (1 - jitter) * base, so retries spread out without bunching at zero.
    """
    if attempt < 1:
        raise ValueError("attempt counts from 1")
    if base <= 0 or cap < base or not 0 <= jitter <= 1:
        raise ValueError("need 0 < base <= cap and 0 <= jitter <= 1")
    d = min(cap, base * 2.0 ** min(attempt - 1, 64))
    r = (rng or random).random()
    return d * (1 - jitter * r)

