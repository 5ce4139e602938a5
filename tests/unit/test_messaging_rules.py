"""Messaging's pure rules: text, closing, retention, unread counts, read receipts, page open, SMS keywords."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from chalicelib.core.errors import DomainError, ErrorKind
from chalicelib.messaging import rules
from chalicelib.messaging.rules import ConversationState, Keyword, Role

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def test_text_is_trimmed_cleaned_and_bounded() -> None:
    assert rules.clean_message_text("  hi\r\nthere\x00\u200b ") == "hi\nthere"
    assert rules.clean_message_text("<b>bold</b>") == "<b>bold</b>"  # kept as typed: pages escape it
    for bad in ("", "   ", "\x00", 5, None, "x" * 501):
        with pytest.raises(DomainError) as caught:
            rules.clean_message_text(bad)
        assert caught.value.kind is ErrorKind.INVALID and caught.value.details[0].field == "text"
    assert rules.clean_message_text("x" * 500) == "x" * 500


def test_a_conversation_closes_a_set_time_after_the_shipment_is_final() -> None:
    assert rules.is_open(None, NOW)
    assert rules.is_open(NOW, NOW + timedelta(hours=1))
    assert not rules.is_open(NOW, NOW + rules.CLOSE_AFTER_FINAL)
    assert rules.closed_error().kind is ErrorKind.CONFLICT and rules.closed_error().code == "conversation_closed"


def test_retention_is_thirty_days_after_final() -> None:
    assert rules.expires_at_s(NOW, NOW) == int((NOW + timedelta(days=30)).timestamp())
    assert rules.expires_at_s(None, NOW) == int((NOW + timedelta(days=60)).timestamp())


def test_unread_counts_and_read_receipts() -> None:
    state = ConversationState({Role.RECIPIENT: 3, Role.DRIVER: 2, Role.DISPATCH: 1},
                              {(Role.DRIVER, Role.RECIPIENT): 1}, {Role.DRIVER: 500, Role.RECIPIENT: 100})
    assert rules.unread(state, Role.DRIVER) == 2 + 1
    assert rules.unread(state, Role.RECIPIENT) == 3
    assert rules.read_by(state, Role.RECIPIENT, 400, rules.SHIPMENT_ROLES) == [Role.DRIVER]
    assert rules.read_by(state, Role.DRIVER, 100, rules.SHIPMENT_ROLES) == [Role.RECIPIENT]


def test_page_open_and_keywords_and_names() -> None:
    assert rules.page_open(1_000, 1_000 + rules.PAGE_OPEN_S * 1000)
    assert not rules.page_open(1_000, 2_000 + rules.PAGE_OPEN_S * 1000) and not rules.page_open(None, 5)
    assert rules.sms_keyword(" stop ") is Keyword.STOP and rules.sms_keyword("Unsubscribe.") is Keyword.STOP
    assert rules.sms_keyword("help") is Keyword.HELP and rules.sms_keyword("stop by later") is None
    assert rules.sender_name(Role.DRIVER, "Dana Driver") == "Dana"
    assert rules.sender_name(Role.DRIVER, None) == "Driver" and rules.sender_name(Role.DISPATCH, "x") == "Dispatch"
