"""Shipment statuses and the transitions between them."""

from __future__ import annotations

from enum import StrEnum


class ShipmentStatus(StrEnum):
    CREATED = "created"
    ASSIGNED = "assigned"
    OUT_FOR_DELIVERY = "out_for_delivery"
    APPROACHING = "approaching"
    ARRIVED = "arrived"
    DELIVERED = "delivered"
    FAILED = "failed"
    RESCHEDULED = "rescheduled"
    RETURNED = "returned"
    CANCELLED = "cancelled"


S = ShipmentStatus

ALLOWED: dict[ShipmentStatus, frozenset[ShipmentStatus]] = {
    S.CREATED: frozenset({S.ASSIGNED, S.CANCELLED, S.RESCHEDULED}),
    S.ASSIGNED: frozenset({S.OUT_FOR_DELIVERY, S.CREATED, S.CANCELLED, S.RESCHEDULED}),
    S.OUT_FOR_DELIVERY: frozenset({S.APPROACHING, S.ARRIVED, S.DELIVERED, S.FAILED, S.CANCELLED}),
    # No way back to out_for_delivery: "approaching" is announced once per stop.
    S.APPROACHING: frozenset({S.ARRIVED, S.DELIVERED, S.FAILED, S.CANCELLED}),
    S.ARRIVED: frozenset({S.DELIVERED, S.FAILED, S.OUT_FOR_DELIVERY}),
    S.FAILED: frozenset({S.RESCHEDULED, S.RETURNED}),
    # Rescheduled again: the recipient may pick another offered window until it is on a route again.
    S.RESCHEDULED: frozenset({S.ASSIGNED, S.CANCELLED, S.RESCHEDULED}),
    S.DELIVERED: frozenset(),
    S.RETURNED: frozenset(),
    S.CANCELLED: frozenset(),
}

FINAL = frozenset(status for status, nexts in ALLOWED.items() if not nexts)
# Statuses that end a delivery attempt: the tracking link's expiry clock starts when one is reached
# (a failed shipment may still be rescheduled, which stops the clock again).
CLOSED = FINAL | {S.FAILED}
# Statuses during which the recipient may see where the driver is.
DRIVER_VISIBLE = frozenset({S.OUT_FOR_DELIVERY, S.APPROACHING, S.ARRIVED})


class TransitionError(ValueError):
    def __init__(self, current: ShipmentStatus, wanted: ShipmentStatus) -> None:
        super().__init__(f"cannot go from {current} to {wanted}")
        self.current = current
        self.wanted = wanted


def check_transition(current: ShipmentStatus, wanted: ShipmentStatus) -> None:
    if wanted not in ALLOWED[current]:
        raise TransitionError(current, wanted)
