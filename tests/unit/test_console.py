"""The console's pure parts: the session cookie and CSRF rules, the page, and reading search text."""

from __future__ import annotations

import re

import pytest

from chalicelib.console import page, rules
from chalicelib.console.page import ConsoleShell, render_console, render_sign_in
from chalicelib.core.signing import Purpose, Signer
from chalicelib.shipments.search import MatchedBy, SearchKey, search_keys
from chalicelib.web.i18n import catalogue

SECRET = "s" * 40
NOW = 1_800_000_000
CLAIM = rules.SessionClaim("mer_1", "abcdefghijklmnopqrstuvwx", NOW + 60)


# --- the cookie -----------------------------------------------------------------------------------


def test_a_sealed_session_opens_until_it_expires() -> None:
    value = rules.seal_session(SECRET, CLAIM)
    assert rules.open_session(SECRET, value, NOW) == CLAIM
    assert rules.open_session(SECRET, value, NOW + 59) == CLAIM
    assert rules.open_session(SECRET, value, NOW + 60) is None  # expiry is exclusive


@pytest.mark.parametrize("value", [None, "", "x", "a.b", "." * 10, "é.é", "a" * 401])
def test_anything_else_does_not_open(value: str | None) -> None:
    assert rules.open_session(SECRET, value, NOW) is None


def test_a_session_signed_under_another_secret_or_purpose_does_not_open() -> None:
    assert rules.open_session(SECRET, rules.seal_session("t" * 40, CLAIM), NOW) is None
    payload = b'{"m":"mer_1","s":"abcdefghijklmnopqrstuvwx","e":1800000060}'
    assert rules.open_session(SECRET, Signer(SECRET, Purpose.DRIVER_LINK).seal(payload), NOW) is None
    assert rules.open_session(SECRET, Signer(SECRET, Purpose.CONSOLE_SESSION).seal(payload), NOW) == CLAIM


def test_a_changed_payload_does_not_open() -> None:
    value = rules.seal_session(SECRET, CLAIM)
    other = rules.seal_session(SECRET, rules.SessionClaim("mer_2", CLAIM.session_id, CLAIM.expires_s))
    assert rules.open_session(SECRET, f"{other.split('.')[0]}.{value.split('.')[1]}", NOW) is None


@pytest.mark.parametrize("payload", [b"[]", b'{"m":"mer_1"}', b'{"m":"","s":"abcdefghijklmnop","e":9999999999}',
                                     b'{"m":"mer_1","s":"short","e":9999999999}',
                                     b'{"m":"mer_1","s":"abcdefghijklmnop","e":"soon"}', b"not json"])
def test_a_signed_but_malformed_claim_does_not_open(payload: bytes) -> None:
    assert rules.open_session(SECRET, Signer(SECRET, Purpose.CONSOLE_SESSION).seal(payload), NOW) is None


def test_the_csrf_token_is_bound_to_its_session() -> None:
    token = rules.csrf_token(SECRET, CLAIM.session_id)
    assert rules.csrf_valid(SECRET, CLAIM.session_id, token)
    assert not rules.csrf_valid(SECRET, "another-session-id-000", token)
    assert not rules.csrf_valid("t" * 40, CLAIM.session_id, token)
    for bad in (None, "", token[:-1], token + "A", "x" * 65):
        assert not rules.csrf_valid(SECRET, CLAIM.session_id, bad)


@pytest.mark.parametrize(("method", "needed"), [("GET", False), ("HEAD", False), ("OPTIONS", False),
                                                ("POST", True), ("PUT", True), ("PATCH", True), ("DELETE", True),
                                                ("post", True)])
def test_only_unsafe_methods_need_the_csrf_token(method: str, needed: bool) -> None:
    assert rules.needs_csrf(method) is needed


def test_the_cookie_is_read_from_the_cookie_header() -> None:
    assert rules.session_cookie({"cookie": f"a=1; {rules.SESSION_COOKIE}=abc.def; b=2"}) == "abc.def"
    assert rules.session_cookie({"cookie": "a=1"}) is None
    assert rules.session_cookie({}) is None


def test_the_set_cookie_header_is_strict() -> None:
    header = rules.set_cookie("v.m", "/api")
    assert header.startswith(f"{rules.SESSION_COOKIE}=v.m;")
    for attribute in ("Path=/api", "HttpOnly", "Secure", "SameSite=Strict", f"Max-Age={rules.SESSION_TTL_S}"):
        assert attribute in header
    assert "Max-Age=0" in rules.clear_cookie("")
    assert "Path=/;" in rules.clear_cookie("")


# --- the page -------------------------------------------------------------------------------------


def shell(**overrides: object) -> ConsoleShell:
    values: dict[str, object] = {"csrf_token": "tok<&>", "api_base": "", "console_base": "/console", "locale": "en"}
    values.update(overrides)
    return ConsoleShell(**values)  # type: ignore[arg-type]


def test_the_console_escapes_what_it_embeds_and_has_no_inline_script_or_style() -> None:
    html = render_console(shell(tile_url='https://t.example/{z}/{x}/{y}.png?a="b"'))
    assert "tok<&>" not in html and "tok&lt;&amp;&gt;" in html
    assert '"b"' not in html
    assert "<script>" not in html and " style=" not in html
    assert not re.search(r"\son[a-z]+=", html)  # no event-handler attribute
    assert re.search(r"<script src=\"/static/console\.js\?v=[0-9a-f]{12}\" defer>", html)


def test_the_console_has_landmarks_headings_and_labelled_controls() -> None:
    html = render_console(shell())
    assert '<main id="main"' in html and "<header" in html
    for heading in ("fleet-h", "queue-h", "routes-h", "search-h", "detail-h"):
        assert f'id="{heading}"' in html and f'aria-labelledby="{heading}"' in html
    for control in re.findall(r'<input id="([^"]+)"', html):
        assert f'<label for="{control}">' in html
    assert 'role="status" aria-live="polite"' in html
    assert 'class="skip" href="#queue"' in html


def test_the_console_speaks_german() -> None:
    html = render_console(shell(locale="de"))
    assert 'lang="de"' in html and "Ausnahmen" in html and "Abmelden" in html
    messages = page.script_messages("de")
    assert messages["console.queue.acknowledge"] == "Bestätigen"
    assert set(messages) == {k for k in catalogue("en") if k.startswith("console.")}


def test_the_sign_in_posts_the_key_in_a_password_field_and_names_known_errors_only() -> None:
    html = render_sign_in("en", console_base="/api/console")
    assert '<form method="post" action="/api/console/session"' in html
    assert 'name="api_key" type="password"' in html
    assert 'role="alert"' not in html
    assert 'role="alert"' in render_sign_in("en", console_base="", error="invalid_key")
    assert 'role="alert"' not in render_sign_in("en", console_base="", error="<script>")


def test_the_console_headers_are_the_strict_csp_with_the_tile_and_photo_origins() -> None:
    headers = page.console_headers("https://{s}.tile.example/{z}/{x}/{y}.png", ["https://bucket.example/x"])
    csp = headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "connect-src 'self'" in csp
    assert "https://*.tile.example" in csp and "https://bucket.example" in csp
    assert headers["Cache-Control"] == "no-store"


def test_the_first_load_stays_under_200_kb_gzip() -> None:
    assert page.console_first_load_bytes(render_console(shell())) <= 200 * 1024


# --- search text ----------------------------------------------------------------------------------

TOKEN = "A" * 43


@pytest.mark.parametrize(("text", "first"), [
    (f"https://x.example/api/track/{TOKEN}", SearchKey(MatchedBy.TRACKING_LINK, TOKEN)),
    (f"/track/{TOKEN}?utm=1", SearchKey(MatchedBy.TRACKING_LINK, TOKEN)),
    (TOKEN, SearchKey(MatchedBy.TRACKING_LINK, TOKEN)),
    ("shp_01JABCDEF", SearchKey(MatchedBy.SHIPMENT_ID, "shp_01JABCDEF")),
    ("+1 (415) 555-0100", SearchKey(MatchedBy.PHONE, "+14155550100")),
    (" Ada@Example.COM ", SearchKey(MatchedBy.EMAIL, "ada@example.com")),
    ("order-42", SearchKey(MatchedBy.EXTERNAL_REF, "order-42")),
])
def test_search_text_is_read_as_the_most_specific_key_first(text: str, first: SearchKey) -> None:
    keys = search_keys(text)
    assert keys[0] == first
    if first.by is not MatchedBy.TRACKING_LINK or "/" not in text:
        assert keys[-1].by is MatchedBy.EXTERNAL_REF  # a ref may look like anything


def test_empty_or_overlong_text_has_no_external_ref_key() -> None:
    assert search_keys("   ") == []
    assert search_keys("x" * 101) == []


def test_any_single_character_change_of_a_cookie_is_refused() -> None:
    from hypothesis import given
    from hypothesis import strategies as st

    value = rules.seal_session(SECRET, CLAIM)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."

    @given(st.integers(min_value=0, max_value=len(value) - 1), st.sampled_from(alphabet))
    def changed(index: int, char: str) -> None:
        tampered = value[:index] + char + value[index + 1:]
        opened = rules.open_session(SECRET, tampered, NOW)
        # base64url's last character may carry unused bits: a change there can decode to the same bytes.
        assert opened is None or opened == CLAIM

    changed()


def test_the_shipment_detail_carries_its_conversation_and_a_labelled_reply_box() -> None:
    for locale, heading in (("en", "Conversation"), ("de", "Unterhaltung")):
        html = render_console(shell(locale=locale))
        detail = html[html.index('<section id="detail"'):]
        detail = detail[:detail.index("</section>")]
        assert f'<h3 id="detail-messages-h">{heading}</h3>' in detail
        assert 'id="detail-messages"' in detail and 'aria-labelledby="detail-messages-h"' in detail
        assert '<label for="detail-reply-text">' in detail and 'maxlength="500"' in detail
