"""Scheduled functions against in-process moto: day-before reminders and the release of deferred messages.

Each test fixes "now" and picks a fixed-offset zone where the local hour is what the case needs, so the
results do not depend on when the suite runs. A botocore hook fails any Scan: these functions must
answer from their indexes.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from botocore.stub import Stubber

from tests.integration.helpers import make_driver, make_shipment
from tests.integration.test_notifications import _sms_to

NOW = datetime.now(UTC).replace(microsecond=0)


def zone_at_hour(hour: int, now: datetime = NOW) -> str:
    """An Etc/GMT zone whose local hour at `now` is `hour` (Etc signs are inverted: Etc/GMT-2 is UTC+2)."""
    offset = (hour - now.hour) % 24
    if offset > 14:
        offset -= 24
    return "Etc/GMT" + (f"-{offset}" if offset > 0 else f"+{-offset}")


@pytest.fixture()
def no_scans(chalice_app: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    from moto.dynamodb.models import DynamoDBBackend

    def refuse(*_: Any, **__: Any) -> None:
        raise AssertionError("a scheduled function scanned the table")

    monkeypatch.setattr(DynamoDBBackend, "scan", refuse)  # whichever client pynamodb or boto3 uses
    yield


def _policy(merchant: Any, **changes: Any) -> None:
    policy = merchant.call("GET", "/v1/notifications/settings").json_body["policy"]
    policy.update(changes)
    response = merchant.call("PUT", "/v1/notifications/settings", {"policy": policy})
    assert response.status_code == 200, response.body


def _zone(merchant: Any, zone: str) -> None:
    settings = merchant.call("GET", "/v1/settings").json_body
    response = merchant.call("PUT", "/v1/settings", {**settings, "time_zone": zone})
    assert response.status_code == 200, response.body
    from chalicelib.fleet.service import forget_cached_profiles

    forget_cached_profiles()  # stream and schedules cache merchant profiles for a minute


def _out_for_delivery(merchant: Any, phone: str, zone: str) -> dict[str, Any]:
    driver = make_driver(merchant)
    shipment = make_shipment(merchant, 1, recipient={"name": "Ada", "phone": phone, "time_zone": zone})
    route = merchant.call("POST", "/v1/routes", {"driver_id": driver["id"], "day": shipment["delivery_date"],
                                                 "planned_start": NOW.isoformat(),
                                                 "shipment_ids": [shipment["id"]]}).json_body
    assert merchant.call("POST", f"/v1/routes/{route['id']}/start").status_code == 200
    return shipment


def _image(merchant: Any, shipment: dict[str, Any], kind: str, occurred: datetime = NOW) -> dict[str, Any]:
    return {"merchant_id": merchant.id, "shipment_id": shipment["id"], "type": kind,
            "occurred_at": occurred.isoformat()}


def _ledger_states(shipment_id: str) -> dict[str, str]:
    import boto3

    from chalicelib.notifications.ledger import Ledger

    entries = Ledger(boto3.client("dynamodb")).entries(shipment_id)
    return {"#".join(e["SK"].split("#")[2:4]): e["state"] for e in entries}


def _due(now: datetime) -> list[Any]:
    from chalicelib.notifications import service as notifications_service
    from chalicelib.storage import get_repository

    return list(notifications_service.notify_parts(get_repository())[0].due(now))


def test_a_message_due_in_quiet_hours_waits_and_is_released_once_when_they_end(merchant, no_scans):
    from chalicelib.notifications import service as notifications_service
    from chalicelib.notifications.schedules import release_deferred
    from chalicelib.storage import get_repository

    zone = zone_at_hour(23)
    _policy(merchant, quiet_hours={"start": "21:00", "end": "08:00", "channels": ["sms", "email"]},
            events={"out_for_delivery": ["sms"]})
    phone = "+14155550301"
    shipment = _out_for_delivery(merchant, phone, zone)
    outcomes = notifications_service.notify(get_repository(), _image(merchant, shipment, "out_for_delivery"), now=NOW)
    assert [o.result for o in outcomes if o.channel == "sms"] == ["deferred"]
    assert _sms_to(phone) == [] and _ledger_states(shipment["id"]) == {"out_for_delivery#sms": "deferred"}

    # Still quiet: not due, not sent (other tests' deferred messages may be released meanwhile).
    assert shipment["id"] not in [m.shipment_id for m in _due(NOW + timedelta(hours=8))]
    release_deferred(get_repository(), NOW + timedelta(hours=8))
    assert _sms_to(phone) == []
    morning = NOW + timedelta(hours=9, minutes=1)  # 08:01 local
    assert [m.shipment_id for m in _due(morning)].count(shipment["id"]) == 1
    release_deferred(get_repository(), morning)
    assert len(_sms_to(phone)) == 1 and _ledger_states(shipment["id"]) == {"out_for_delivery#sms": "sent"}
    # Released again (a second scheduler run, a retry): the index no longer holds it, the ledger says sent.
    assert shipment["id"] not in [m.shipment_id for m in _due(morning + timedelta(hours=1))]
    release_deferred(get_repository(), morning + timedelta(minutes=1))
    assert len(_sms_to(phone)) == 1


def test_a_deferred_message_whose_status_moved_on_is_dropped_on_release_and_leaves_the_index(merchant, no_scans):
    from chalicelib.notifications import service as notifications_service
    from chalicelib.notifications.schedules import release_deferred
    from chalicelib.shipments.lifecycle import ShipmentStatus
    from chalicelib.storage import get_repository
    from chalicelib.storage.tables import event_item

    zone = zone_at_hour(22)
    _policy(merchant, quiet_hours={"start": "21:00", "end": "08:00", "channels": ["sms"]},
            events={"out_for_delivery": ["sms"]})
    phone = "+14155550302"
    shipment = _out_for_delivery(merchant, phone, zone)
    notifications_service.notify(get_repository(), _image(merchant, shipment, "out_for_delivery"), now=NOW)
    repo = get_repository()
    item = repo.get_shipment(merchant.id, shipment["id"])
    repo.change_statuses([(item, ShipmentStatus.DELIVERED, [], event_item(
        merchant.id, item.shipment_id, "late-delivery", "delivered", "driver", NOW, NOW, item.status,
        ShipmentStatus.DELIVERED))])
    morning = NOW + timedelta(hours=10, minutes=1)
    release_deferred(repo, morning)
    assert _sms_to(phone) == [] and _ledger_states(shipment["id"]) == {"out_for_delivery#sms": "dropped"}
    assert shipment["id"] not in [m.shipment_id for m in _due(morning)]


def test_a_transient_failure_the_stream_gave_up_on_is_sent_by_the_release(merchant, no_scans):
    from chalicelib.notifications import service as notifications_service
    from chalicelib.notifications.dispatch import RELEASE_RETRY_AFTER_S, RetryLater
    from chalicelib.notifications.schedules import release_deferred
    from chalicelib.storage import get_repository

    _policy(merchant, quiet_hours=None, events={"out_for_delivery": ["sms"]})
    phone = "+14155550303"
    shipment = _out_for_delivery(merchant, phone, zone_at_hour(12))
    repo = get_repository()
    _, notifier = notifications_service.notify_parts(repo)
    with Stubber(notifier._client("sns")) as stub:  # throttled, and the stream's retries run out
        stub.add_client_error("publish", service_error_code="Throttling", http_status_code=400)
        with pytest.raises(RetryLater):
            notifications_service.notify(repo, _image(merchant, shipment, "out_for_delivery"), now=NOW)
    assert _ledger_states(shipment["id"]) == {"out_for_delivery#sms": "deferred"}
    # Not before its release time: the stream may still be retrying the record itself.
    assert shipment["id"] not in [m.shipment_id for m in _due(NOW + timedelta(seconds=RELEASE_RETRY_AFTER_S - 5))]
    later = NOW + timedelta(seconds=RELEASE_RETRY_AFTER_S + 5)
    release_deferred(repo, later)
    assert len(_sms_to(phone)) == 1
    release_deferred(repo, later + timedelta(minutes=1))
    assert len(_sms_to(phone)) == 1


def _tomorrow(zone: str) -> date:
    from zoneinfo import ZoneInfo

    return NOW.astimezone(ZoneInfo(zone)).date() + timedelta(days=1)


def test_day_before_reminders_go_once_to_tomorrows_shipments_from_five_pm_local(merchant, no_scans):
    from chalicelib.notifications.schedules import send_day_before_reminders
    from chalicelib.storage import get_repository

    zone = zone_at_hour(19)
    _zone(merchant, zone)
    _policy(merchant, quiet_hours=None, events={"day_before": ["sms"]})
    tomorrow = _tomorrow(zone).isoformat()
    due = [make_shipment(merchant, n, delivery_date=tomorrow, time_window=None,
                         recipient={"name": f"R{n}", "phone": f"+1415555040{n}"}) for n in (1, 2)]
    later_day = make_shipment(merchant, 3, delivery_date=(_tomorrow(zone) + timedelta(days=1)).isoformat(),
                              time_window=None, recipient={"name": "R3", "phone": "+14155550403"})
    cancelled = make_shipment(merchant, 4, delivery_date=tomorrow, time_window=None,
                              recipient={"name": "R4", "phone": "+14155550404"})
    assert merchant.call("POST", f"/v1/shipments/{cancelled['id']}/cancel").status_code == 200

    repo = get_repository()
    send_day_before_reminders(repo, NOW - timedelta(hours=3))  # 16:00 local: not yet
    assert all(_sms_to(s["recipient"]["phone"]) == [] for s in due)
    send_day_before_reminders(repo, NOW)
    for shipment in due:
        (text,) = _sms_to(shipment["recipient"]["phone"])
        assert "planned for tomorrow" in text and shipment["tracking_url"].rsplit("/", 1)[1] in text, text
    assert _sms_to(later_day["recipient"]["phone"]) == [] and _sms_to(cancelled["recipient"]["phone"]) == []
    # The hourly schedule runs again this evening: the marker and the ledger keep it to one each.
    send_day_before_reminders(repo, NOW + timedelta(hours=1))
    assert [len(_sms_to(s["recipient"]["phone"])) for s in due] == [1, 1]
    assert _ledger_states(due[0]["id"]) == {"day_before#sms": "sent"}


def test_the_scheduled_lambdas_run_through_chalice(merchant, client, no_scans):
    from chalice.test import Client

    assert isinstance(client, Client)
    for name in ("release_deferred_notifications", "day_before_reminders"):
        event = client.events.generate_cw_event(source="aws.events", detail_type="Scheduled Event", detail={},
                                                resources=[])
        response = client.lambda_.invoke(name, event)
        assert set(response.payload) >= {"considered", "outcomes", "retry_later"}, response.payload


def test_the_local_scheduler_runs_every_schedule_the_app_declares(chalice_app, monkeypatch):
    import app as app_module
    from infra.local import scheduler

    jobs = {job.name: job for job in scheduler.jobs_of(app_module, max_interval_s=5.0)}
    assert set(jobs) >= {"release_deferred_notifications", "day_before_reminders"}
    assert {job.interval_s for job in jobs.values()} == {5.0}  # every rate is a minute or more
    assert scheduler.rate_seconds(app_module.app.event_sources[0].schedule_expression) in (60.0, 3600.0)
    calls: list[str] = []
    for job in jobs.values():
        job.handler = lambda event, context, name=job.name: calls.append(f"{name}:{event['detail-type']}")
    assert sorted(scheduler.run_due(list(jobs.values()), now=100.0)) == sorted(jobs)
    assert scheduler.run_due(list(jobs.values()), now=102.0) == []  # not due again for 5 s
    assert len(scheduler.run_due(list(jobs.values()), now=105.0)) == len(jobs)
    assert calls.count("day_before_reminders:Scheduled Event") == 2


def test_a_provider_that_keeps_throttling_is_given_up_on_after_the_attempt_limit(merchant, no_scans):
    from chalicelib.notifications import service as notifications_service
    from chalicelib.notifications.dispatch import RetryLater
    from chalicelib.notifications.rules import NOTIFY_MAX_ATTEMPTS
    from chalicelib.storage import get_repository

    _policy(merchant, quiet_hours=None, events={"out_for_delivery": ["sms"]})
    shipment = _out_for_delivery(merchant, "+14155550304", zone_at_hour(12))
    repo = get_repository()
    _, notifier = notifications_service.notify_parts(repo)
    image = _image(merchant, shipment, "out_for_delivery")
    with Stubber(notifier._client("sns")) as stub:
        for attempt in range(1, NOTIFY_MAX_ATTEMPTS + 1):
            stub.add_client_error("publish", service_error_code="Throttling", http_status_code=400)
            if attempt < NOTIFY_MAX_ATTEMPTS:
                with pytest.raises(RetryLater):  # the stream's retries, then the release's
                    notifications_service.notify(repo, image, now=NOW + timedelta(minutes=attempt))
            else:
                (outcome,) = [o for o in notifications_service.notify(repo, image, now=NOW + timedelta(minutes=attempt))
                              if o.channel == "sms"]
    assert outcome.result == f"failed:gave_up_after_{NOTIFY_MAX_ATTEMPTS}_attempts:Throttling"
    assert _ledger_states(shipment["id"]) == {"out_for_delivery#sms": "failed_permanent"}
    timeline = merchant.call("GET", f"/v1/shipments/{shipment['id']}/timeline").json_body["items"]
    assert [e["type"] for e in timeline].count("notification_failed") == 1
    assert shipment["id"] not in [m.shipment_id for m in _due(NOW + timedelta(days=1))]
