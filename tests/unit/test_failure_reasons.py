"""The one failure-reason table and the surfaces that read it (pure)."""

from __future__ import annotations

from datetime import UTC, datetime

from chalicelib.driver_app.page import DriverShell, render_driver_page
from chalicelib.notifications.rules import NotifyKind
from chalicelib.notifications.templates import DEFAULT_TEMPLATES, SAMPLE_VALUES, render_sms, sms_info
from chalicelib.recipient.page import PageEvent, TrackingPage, status_payload
from chalicelib.shipments.failures import (
    FAILURE_REASONS,
    LANGUAGES,
    FailureReason,
    failure_reason,
    failure_reason_label,
    failure_reason_text,
)
from chalicelib.shipments.models import DriverStatusUpdate


def test_every_reason_has_words_in_every_language() -> None:
    assert set(FAILURE_REASONS) == set(FailureReason)
    for row in FAILURE_REASONS.values():
        assert set(row) == set(LANGUAGES)
        for words in row.values():
            assert words.label[0].isupper() and words.sentence[0].islower()
            assert sms_info(words.sentence).encoding == "GSM-7"


def test_unknown_or_missing_codes_read_as_other() -> None:
    assert failure_reason("not_home") is FailureReason.NOT_HOME
    assert failure_reason(None) is failure_reason("gone_fishing") is FailureReason.OTHER
    assert failure_reason_text("gone_fishing", "de") == failure_reason_text("other", "de")
    assert failure_reason_text("refused", "fr-FR") == failure_reason_text("refused", "en")
    assert failure_reason_label("damaged", "de-AT") == FAILURE_REASONS[FailureReason.DAMAGED]["de"].label


def test_the_failed_sms_reads_the_tables_sentence() -> None:
    text = failure_reason_text("not_home", "en")
    sms = render_sms(DEFAULT_TEMPLATES.template(NotifyKind.FAILED, "en"), {**SAMPLE_VALUES, "reason": text})
    assert f"could not deliver your parcel: {text}." in sms.text and "not_home" not in sms.text


def test_the_driver_app_offers_the_tables_labels() -> None:
    html = render_driver_page(DriverShell(token="dl1.a.b", driver_id="drv_1", driver_first_name="Max",
                                          merchant_name="Shop", locale="de"))
    for reason in FailureReason:
        assert f'<option value="{reason.value}">{failure_reason_label(reason, "de")}</option>' in html


def test_the_tracking_page_says_why_an_attempt_failed() -> None:
    at = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
    page = TrackingPage(token="A" * 43, status="failed", locale="de",
                        timeline=(PageEvent("failed", at, reason="no_access"), PageEvent("failed", at)))
    labels = [e["label"] for e in status_payload(page)["timeline"]]
    assert labels == [f"Zustellversuch fehlgeschlagen: {failure_reason_text('no_access', 'de')}",
                      "Zustellversuch fehlgeschlagen"]


def test_the_driver_api_takes_the_tables_codes() -> None:
    schema = DriverStatusUpdate.model_json_schema()
    assert sorted(schema["$defs"]["FailureReason"]["enum"]) == sorted(r.value for r in FailureReason)
