"""The SNS/SES adapter against in-process moto, and how provider failures are classified."""

from __future__ import annotations

import boto3
import pytest
from botocore.stub import Stubber

from chalicelib.notifications.rules import ErrorClass
from chalicelib.notifications.senders import Notifier, SendFailed


@pytest.fixture()
def notifier(aws: None) -> Notifier:
    return Notifier()


def test_sms_and_email_are_sent(notifier: Notifier) -> None:
    assert notifier.send_sms("+14155550100", "Your parcel is on its way").provider_id
    boto3.client("ses").verify_email_identity(EmailAddress="hello@shop.example")
    sent = notifier.send_email("hello@shop.example", "ada@example.com", "On its way", "text", "<p>html</p>")
    assert sent.provider_id


def test_an_unverified_sender_is_a_permanent_failure(notifier: Notifier) -> None:
    with pytest.raises(SendFailed) as failed:
        notifier.send_email("nobody@unverified.example", "ada@example.com", "s", "t", "<p>h</p>")
    assert failed.value.verdict.cls is ErrorClass.PERMANENT


@pytest.mark.parametrize(("code", "status", "expected"), [
    ("Throttling", 400, ErrorClass.RETRY),
    ("InternalError", 500, ErrorClass.RETRY),
    ("InvalidParameter", 400, ErrorClass.PERMANENT),
])
def test_provider_errors_are_classified(notifier: Notifier, code: str, status: int, expected: ErrorClass) -> None:
    client = notifier._client("sns")
    with Stubber(client) as stub:
        stub.add_client_error("publish", service_error_code=code, http_status_code=status)
        with pytest.raises(SendFailed) as failed:
            notifier.send_sms("+14155550100", "hello")
    assert failed.value.verdict.cls is expected
