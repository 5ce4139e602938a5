"""The conversation sections render text as text: escaped, never a link; the compose box only while open."""

from __future__ import annotations

from datetime import UTC, datetime

from chalicelib.messaging.page import ShownMessage, render_conversation, render_driver_messages

AT = datetime(2026, 12, 4, 12, 30, tzinfo=UTC)


def test_messages_are_escaped_and_links_inert() -> None:
    html = render_conversation("en", [ShownMessage("driver", "Dana", '<script>x</script> https://evil.example "q"', AT,
                                                   False)], is_open=True, csrf_token="1.abc", action_base="/track/t",
                               tz=UTC)
    assert "<script>x" not in html and "&lt;script&gt;x&lt;/script&gt;" in html
    assert "<a " not in html and 'href="https://evil' not in html
    assert 'action="/track/t/messages"' in html and 'name="csrf" value="1.abc"' in html
    assert 'name="quick" value="leave_at_door"' in html and "12:30" in html


def test_closed_conversation_has_no_compose_box_and_german_words() -> None:
    html = render_conversation("de", [], is_open=False, csrf_token="c", action_base="/t", tz=UTC)
    assert "<form" not in html and "Diese Unterhaltung ist geschlossen." in html
    assert "Ich bin in 5 Minuten da." in render_driver_messages("de")


def test_the_console_has_a_messages_panel() -> None:
    from chalicelib.messaging.page import render_console_messages

    html = render_console_messages("en")
    assert 'id="cm-driver"' in html and 'id="cm-broadcast"' in html and "console_messages.js" in html
