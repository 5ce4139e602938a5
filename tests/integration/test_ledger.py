"""The DynamoDB notification ledger walks the one state machine (rules.LEDGER_TRANSITIONS), on moto."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest

from chalicelib.core.security import new_id
from chalicelib.notifications.rules import Channel, LedgerState, NotifyKind, ledger_key

NOON = datetime(2025, 6, 3, 12, 0, tzinfo=UTC)
L = LedgerState


@pytest.fixture()
def ledger(chalice_app: Any) -> Any:
    from chalicelib.notifications.ledger import Ledger

    return Ledger(boto3.client("dynamodb"))


@pytest.fixture()
def message() -> tuple[str, str]:
    shipment_id = new_id("shp")
    return shipment_id, ledger_key(shipment_id, NotifyKind.OUT_FOR_DELIVERY, Channel.SMS, "2025-06-03")


def state(ledger: Any, message: tuple[str, str]) -> dict[str, str]:
    (entry,) = [e for e in ledger.entries(message[0]) if e["SK"] == message[1]]
    return entry


def test_only_the_first_claim_wins(ledger, message):
    assert ledger.claim(*message, "worker-a", NOON) == 1
    # A redelivered stream record, a Lambda retry or a concurrent worker finds the claim.
    assert ledger.claim(*message, "worker-b", NOON + timedelta(seconds=1)) == 0
    assert ledger.finish(*message, "worker-a", L.SENT, NOON + timedelta(seconds=2), detail="msg-1")
    assert state(ledger, message)["state"] == "sent" and state(ledger, message)["detail"] == "msg-1"
    for later in (NOON + timedelta(seconds=3), NOON + timedelta(days=3)):
        assert ledger.claim(*message, "worker-c", later) == 0
        assert ledger.claim(*message, "worker-c", later, replay=True) == 0  # sent is final


def test_only_the_claimant_completes(ledger, message):
    assert ledger.claim(*message, "worker-a", NOON) == 1
    assert not ledger.finish(*message, "worker-b", L.SENT, NOON)
    assert not ledger.finish(*message, "worker-b", L.FAILED_PERMANENT, NOON, detail="x")
    assert state(ledger, message)["state"] == "claimed"


def test_an_expired_lease_is_taken_over(ledger, message):
    assert ledger.claim(*message, "worker-a", NOON) == 1
    assert ledger.claim(*message, "worker-b", NOON + timedelta(minutes=5)) == 0  # the lease still holds
    assert ledger.claim(*message, "worker-b", NOON + timedelta(minutes=5, seconds=1)) == 2
    # The presumed-dead worker woke up: its completion is refused.
    assert not ledger.finish(*message, "worker-a", L.SENT, NOON + timedelta(minutes=6))
    assert ledger.finish(*message, "worker-b", L.SENT, NOON + timedelta(minutes=6))


def test_a_deferred_message_is_claimable_only_when_due_and_may_wait_again(ledger, message):
    until = NOON + timedelta(hours=8)
    assert ledger.settle(*message, L.DEFERRED, NOON, detail="quiet_hours", not_before=until)
    assert ledger.claim(*message, "worker-a", until - timedelta(seconds=1)) == 0
    assert not ledger.settle(*message, L.DROPPED, until - timedelta(seconds=1), detail="stale")  # not due yet
    assert ledger.settle(*message, L.DEFERRED, until, detail="quiet_hours", not_before=until + timedelta(hours=1))
    assert ledger.claim(*message, "worker-a", until + timedelta(hours=1)) == 1
    assert state(ledger, message)["state"] == "claimed"


def test_final_states_and_replay(ledger, message):
    assert ledger.claim(*message, "w", NOON) == 1
    assert ledger.finish(*message, "w", L.FAILED_PERMANENT, NOON, detail="permanent:InvalidParameter")
    assert ledger.claim(*message, "w2", NOON + timedelta(days=1)) == 0
    assert ledger.claim(*message, "replay-1", NOON + timedelta(days=1), replay=True) == 2
    dropped = (message[0], message[1] + "#x")
    assert ledger.settle(*dropped, L.DROPPED, NOON, detail="quiet_hours")
    assert ledger.claim(*dropped, "w", NOON, replay=True) == 0
    assert not ledger.finish(*dropped, "w", L.SENT, NOON)
    assert not ledger.settle(*dropped, L.DEFERRED, NOON, detail="x", not_before=NOON)


def test_a_step_the_state_machine_lacks_cannot_be_written(ledger, message):
    with pytest.raises(ValueError):
        ledger.settle(*message, L.SENT, NOON, detail="nobody claimed it")
    with pytest.raises(ValueError):
        ledger.finish(*message, "w", L.CLAIMED, NOON)
    assert ledger.entries(message[0]) == []
