"""ETA honesty from the stream pipeline, counted once per arrival; the daily recalibration of a merchant's
window margin from its own arrivals (issue 16)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from tests.integration.helpers import make_shipment, now_ms, post_pings
from tests.integration.streams import drain, pipeline_runner
from tests.integration.test_pipeline import drive_park_leave, started_route_to_stop


@pytest.fixture()
def no_scans(chalice_app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from moto.dynamodb.models import DynamoDBBackend

    def refuse(*_: Any, **__: Any) -> None:
        raise AssertionError("scanned the table")

    monkeypatch.setattr(DynamoDBBackend, "scan", refuse)


def test_the_pipeline_records_eta_honesty_once_under_a_duplicated_batch(merchant, chalice_app, tmp_path, no_scans):
    from chalicelib.pipeline import honesty
    from chalicelib.pipeline.api import stream_pipeline
    from chalicelib.pipeline.service import eta_honesty
    from chalicelib.storage import get_repository

    runner = pipeline_runner(tmp_path)
    driver, target = started_route_to_stop(merchant)
    captured: list[dict] = []
    runner.handler = lambda event, ctx: (captured.append(event), stream_pipeline(event, ctx))[1]
    fixes = drive_park_leave(now_ms() - 3_600_000)  # 2 km at 10 m/s: the ETA is under 5 minutes from the start
    for start in range(0, 60, 10):
        post_pings(merchant.client, driver["token"], fixes[start:start + 10])
    drain(runner)
    repo = get_repository()
    arrived_day = datetime.fromtimestamp((now_ms() - 3_600_000) / 1000, UTC).date()
    days = (arrived_day - timedelta(days=1), arrived_day + timedelta(days=1))
    by_day = eta_honesty(repo, merchant.id, *days, "day")
    assert list(by_day) == [arrived_day.isoformat()], by_day
    five = by_day[arrived_day.isoformat()]["5"]
    assert five["n"] == 1 and five["median_abs_error_min"] is not None and five["inside_window_share"] in (0.0, 1.0)
    assert by_day[arrived_day.isoformat()]["30"]["n"] == 0  # never 30 minutes out
    by_driver = eta_honesty(repo, merchant.id, *days, "driver")
    assert list(by_driver) == [driver["id"]] and by_driver[driver["id"]]["5"] == five
    assert eta_honesty(repo, merchant.id, *days, "zone") == {}
    assert eta_honesty(repo, merchant.id, days[1], days[0], "day") == {}

    for event in captured:  # Lambda may deliver a batch twice
        assert stream_pipeline(event, None) == {"batchItemFailures": []}
    assert eta_honesty(repo, merchant.id, *days, "day") == by_day
    # The arrival's own write, retried (a state save lost after it): the marker makes it count once.
    shown = {target["id"]: [[5, 1000, 1300, 1200, 1400]]}
    attempt = "a-retried-attempt"
    epoch_day = (date(1970, 1, 1), date(1970, 1, 1))
    assert honesty.record_arrival(repo, merchant.id, driver["id"], dict(shown), target["id"], attempt, 1_350_000)
    once = eta_honesty(repo, merchant.id, *epoch_day, "day")
    assert once["1970-01-01"]["5"]["n"] == 1
    # Retried: counted once whatever the engine answers (a conditional failure, or DynamoDB acknowledging the
    # identical transaction's ClientRequestToken without applying it again).
    honesty.record_arrival(repo, merchant.id, driver["id"], dict(shown), target["id"], attempt, 1_350_000)
    assert eta_honesty(repo, merchant.id, *epoch_day, "day") == once
    # Another merchant's reader sees none of it.
    assert eta_honesty(repo, "someone-else", *days, "day") == {}


def _seed_arrivals(repo: Any, merchant_id: str, day: date, ratios: list[float], prefix: str = "s") -> None:
    """Arrivals shown 15 minutes out (predicted 900 s) that took ratio x 900 s, on `day`."""
    from chalicelib.pipeline import honesty

    noon_s = int(datetime(day.year, day.month, day.day, 12, tzinfo=UTC).timestamp())
    for i, ratio in enumerate(ratios):
        at = noon_s + i * 60
        sid = f"{merchant_id}-{prefix}{i}"  # shipment ids are unique across merchants
        shown = {sid: [[15, at, at + 900, at + 700, at + 1150]]}
        assert honesty.record_arrival(repo, merchant_id, "d1", shown, sid, "r1", int((at + ratio * 900) * 1000))


def test_the_daily_recalibration_moves_a_merchants_margin_from_its_own_arrivals(merchant, other_merchant, client,
                                                                                 no_scans):
    from chalicelib.pipeline import honesty
    from chalicelib.storage import get_repository

    repo = get_repository()
    today = datetime.now(UTC).date()
    honesty.forget_cached_errors()
    assert honesty.merchant_errors(repo, merchant.id).margin == 0.0  # nothing calibrated yet: the default
    # 60 arrivals, mostly right on time: the window can narrow (a negative margin) and still hold 8 in 10.
    _seed_arrivals(repo, merchant.id, today - timedelta(days=2), [1.0] * 50 + [1.3] * 10)
    # the other merchant's arrivals run late: its windows must widen; too few for the third to move anything
    _seed_arrivals(repo, other_merchant.id, today - timedelta(days=1), [1.0] * 20 + [1.6] * 40)
    margins = honesty.recalibrate_all(repo, today)
    assert margins[merchant.id] is not None and margins[merchant.id] < 0
    assert margins[other_merchant.id] is not None and margins[other_merchant.id] > 0
    honesty.forget_cached_errors()
    assert honesty.merchant_errors(repo, merchant.id).margin == margins[merchant.id]
    assert honesty.merchant_errors(repo, other_merchant.id).margin == margins[other_merchant.id]
    # the narrowed window still holds the on-time arrivals, the widened one the late ones
    narrow, wide = honesty.merchant_errors(repo, merchant.id), honesty.merchant_errors(repo, other_merchant.id)
    assert narrow.window(900)[1] < wide.window(900)[1]
    assert wide.window(900)[1] >= 1.6 * 900
    # the scheduled function runs through chalice
    event = client.events.generate_cw_event(source="aws.events", detail_type="Scheduled Event", detail={},
                                            resources=[])
    payload = client.lambda_.invoke("recalibrate_eta_windows", event).payload
    assert payload["calibrated"] >= 2


def test_with_enough_arrivals_the_merchant_gets_its_own_error_model(merchant, other_merchant, no_scans):
    """Completed stops feed the merchant's error model: its window learns that these ETAs run 30-40% long
    and stops reaching below the prediction, where the default window has to stretch both ways."""
    from chalicelib.pipeline import honesty
    from chalicelib.storage import get_repository

    repo = get_repository()
    today = datetime.now(UTC).date()
    honesty.forget_cached_errors()
    running_long = [1.3, 1.35, 1.4] * 40 + [2.0]  # 121 arrivals three weeks ago
    _seed_arrivals(repo, merchant.id, today - timedelta(days=20), running_long)
    _seed_arrivals(repo, merchant.id, today - timedelta(days=2), [1.3, 1.35, 1.4] * 12, prefix="recent")
    _seed_arrivals(repo, other_merchant.id, today - timedelta(days=2), running_long)  # no older days
    margins = honesty.recalibrate_all(repo, today)
    assert margins[merchant.id] is not None and margins[other_merchant.id] is not None
    item = repo.get_counters([(f"MERCHANT#{merchant.id}", honesty.CALIBRATION_SK)])
    (stored,) = item.values()
    assert stored["learned"] == 1 and stored["n"] == 121 + 36 and any(k.startswith("r3_") for k in stored)
    honesty.forget_cached_errors()
    own, default = honesty.merchant_errors(repo, merchant.id), honesty.merchant_errors(repo, other_merchant.id)
    low, high = own.window(900)
    assert low == 900 and high >= 1.4 * 900  # holds the arrivals it learned from, and no earlier ones
    assert default.window(900)[0] < 800  # the other merchant (only recent days) keeps the default's shape
    assert high - low < default.window(900)[1] - default.window(900)[0]


def test_the_tracking_page_publishes_measured_accuracy_only_when_asked_and_meaningful(merchant, client):
    from chalicelib.pipeline import honesty
    from chalicelib.storage import get_repository
    from tests.integration.test_tracking_page import page, put_settings, text, token_of

    repo = get_repository()
    honesty.forget_cached_errors()
    shipment = make_shipment(merchant, 1)
    token = token_of(shipment)
    english = "Our delivery windows held for"
    german = "Unsere Lieferfenster hielten"
    assert english not in text(page(client, token))  # off by default
    put_settings(merchant, publish_eta_accuracy=True)
    # 45 arrivals: too few to mean something
    _seed_arrivals(repo, merchant.id, datetime.now(UTC).date() - timedelta(days=3), [1.0] * 40 + [1.6] * 5)
    assert english not in text(page(client, token))
    honesty.forget_cached_errors()
    # 50 now: 45 of 50 inside their window (1.6 x 900 s lies past its 1,150 s end): "9 in 10"
    _seed_arrivals(repo, merchant.id, datetime.now(UTC).date() - timedelta(days=2), [1.0] * 5, prefix="extra")
    body = text(page(client, token))
    assert "Our delivery windows held for 9 in 10 deliveries in the last 30 days" in body
    assert "Unsere Lieferfenster hielten in den letzten 30 Tagen bei 9 von 10 Zustellungen" in text(
        page(client, token, **{"Accept-Language": "de"}))
    put_settings(merchant, publish_eta_accuracy=False)
    assert english not in text(page(client, token)) and german not in text(page(client, token))
