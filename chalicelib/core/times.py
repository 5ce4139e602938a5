"""Epoch milliseconds and datetimes: the one conversion each way (pure, stdlib only).

The table stores instants as epoch milliseconds (`fix_ms`, `eta_ms`, ...) and the code works with aware
UTC datetimes. `to_ms` and `from_ms` convert with integer arithmetic (no float rounding: 12:00:00.123 is
always ...123 ms), pass None through, and treat a naive datetime as UTC. `iso_z` is the fixed-width UTC text
that sorts like the instant (sort keys, conditions on stored strings).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import SupportsInt, overload

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


@overload
def to_ms(moment: datetime) -> int: ...
@overload
def to_ms(moment: None) -> None: ...
def to_ms(moment: datetime | None) -> int | None:
    """Epoch milliseconds of `moment`, rounded down (a naive datetime is UTC); None stays None."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - EPOCH) // _MS


@overload
def from_ms(ms: SupportsInt) -> datetime: ...
@overload
def from_ms(ms: None) -> None: ...
def from_ms(ms: SupportsInt | None) -> datetime | None:
    """The aware UTC datetime of epoch milliseconds (int, float or Decimal, as stored); None stays None."""
    if ms is None:
        return None
    return EPOCH + timedelta(milliseconds=int(ms))


def now_ms() -> int:
    """The current time in epoch milliseconds."""
    return time.time_ns() // 1_000_000


def iso_z(moment: datetime) -> str:
    """`2026-11-21T15:00:00.000000Z`: UTC with microseconds, fixed width, so the text sorts like the instant."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
