"""Phone and email checks for shipment creation, and the keys opt-outs are stored under."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chalicelib.notifications.contacts import check_email, check_phone, contact_key, normalize_email, normalize_phone

MODEL_PHONE = re.compile(r"^\+[1-9]\d{6,14}$")  # chalicelib.models.E164Phone


@pytest.mark.parametrize("phone", ["+14155550100", "+4917012345678", "+442071838750", "+6831234", "+861012345678",
                                   "+919876543210", "+35312345678"])
def test_valid_phones(phone):
    assert check_phone(phone) is None


@pytest.mark.parametrize(("phone", "words"), [
    ("", "empty"),
    ("14155550100", "must start with +"),
    ("+1 415 555 0100", "only the digits"),
    ("+1-415-555-0100", "only the digits"),
    ("+", "only the digits"),
    ("+04155550100", "cannot start with 0"),
    ("+491701", "too short"),
    ("+4917012345678901", "too long"),
    ("+1415555010", "10 digits after +1"),
    ("+10155550100", "area code"),
    ("+14150550100", "exchange"),
    ("+٤٩١٧٠١٢٣٤٥٦٧", "only the digits"),  # Arabic-Indic digits are digits to str.isdigit, not to SNS
    (4155550100, "string"),
])
def test_invalid_phones_say_why(phone, words):
    reason = check_phone(phone)
    assert reason is not None and words in reason


def test_normalize_phone():
    assert normalize_phone(" +1 (415) 555-0100 ") == "+14155550100"
    assert normalize_phone("0049 170 1234 5678") == "+4917012345678"
    assert normalize_phone("+49.170.12345678") == "+4917012345678"
    with pytest.raises(ValueError, match="must start with"):
        normalize_phone("0170 12345678")  # a national number: the country is not guessed


@given(st.text(max_size=20))
def test_property_accepted_phones_also_pass_the_model_pattern(text):
    if check_phone(text) is None:
        assert MODEL_PHONE.match(text)


@pytest.mark.parametrize("email", ["jane@example.com", "Jane.Doe+parcels@mail.example.co.uk", "a@b.de",
                                   "o'brien@example.ie", "x_y-z@sub-domain.example", "user@bücher.example",
                                   "first.last@xn--bcher-kva.example"])
def test_valid_emails(email):
    assert check_email(email) is None


@pytest.mark.parametrize(("email", "words"), [
    ("", "empty"),
    ("jane", "exactly one @"),
    ("jane@@example.com", "exactly one @"),
    ('"jane doe"@example.com', "spaces"),
    ("jane@example", "dot after the @"),
    ("@example.com", "nothing before"),
    ("jane@", "nothing after"),
    (".jane@example.com", "dot"),
    ("ja..ne@example.com", "dot"),
    ("jane.@example.com", "dot"),
    ("jäne@example.com", "ASCII"),
    ("ja(ne)@example.com", "not allowed"),
    ("jane@[192.0.2.1]", "IP address"),
    ("jane@192.0.2.1", "IP address"),
    ("jane@-example.com", "not a valid domain"),
    ("jane@exa_mple.com", "not a valid domain"),
    ("jane@example.com.", "end with a dot"),
    ("jane@exam..ple.com", "domain"),
    ("a" * 65 + "@example.com", "longer than 64"),
    ("a@" + "b" * 250 + ".com", "too long"),
    ("jane@example.com\n", "spaces or control"),
    (None, "string"),
])
def test_invalid_emails_say_why(email, words):
    reason = check_email(email)
    assert reason is not None and words in reason


def test_normalize_email_and_contact_keys():
    assert normalize_email("  Jane.Doe@Example.COM ") == "Jane.Doe@example.com"
    assert normalize_email("user@Bücher.example") == "user@xn--bcher-kva.example"
    assert contact_key("email", "Jane.Doe@Example.COM") == "email:jane.doe@example.com"
    assert contact_key("sms", "+1 (415) 555-0100") == "sms:+14155550100"
    with pytest.raises(ValueError):
        contact_key("pigeon", "x")
    with pytest.raises(ValueError):
        contact_key("email", "nope")
