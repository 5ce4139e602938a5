"""The failed-attempt rules, the redirect form and the reason words on every recipient surface."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from chalicelib.fleet.models import BrandingSettings
from chalicelib.notifications.rules import NotifyKind
from chalicelib.notifications.templates import DEFAULT_TEMPLATES, SAMPLE_VALUES, render
from chalicelib.recipient.forms import FormError, RedirectForm, csrf_token, parse_redirect
from chalicelib.recipient.page import TrackingPage, render_tracking_page
from chalicelib.shipments.attempts import (
    RedirectKind,
    after_failed_attempt,
    attempts_left,
    redirect_instructions,
    ring_centre,
)
from chalicelib.shipments.failures import LANGUAGES, FailureReason, failure_reason_text
from chalicelib.web.branding import Branding

SECRET = "s" * 32
SHOP = Branding.of(BrandingSettings(), "Shop")


def test_the_attempt_that_reaches_the_limit_returns_the_parcel() -> None:
    assert after_failed_attempt(0, 3).attempts == 1 and not after_failed_attempt(0, 3).returned
    assert not after_failed_attempt(1, 3).returned
    assert after_failed_attempt(2, 3).returned and after_failed_attempt(2, 3).attempts == 3
    assert after_failed_attempt(0, 1).returned
    assert attempts_left(1, 3) == 2 and attempts_left(5, 3) == 0


@given(previous=st.integers(min_value=0, max_value=20), limit=st.integers(min_value=1, max_value=10))
def test_returned_exactly_from_the_limit_on(previous: int, limit: int) -> None:
    outcome = after_failed_attempt(previous, limit)
    assert outcome.attempts == previous + 1
    assert outcome.returned == (previous + 1 >= limit)


def test_a_redirect_reads_as_a_driver_instruction() -> None:
    safe = redirect_instructions(RedirectKind.SAFE_PLACE, "behind the bins", None)
    assert safe == {"leave_at_door": True, "note": "Leave in a safe place: behind the bins"}
    neighbour = redirect_instructions(RedirectKind.NEIGHBOUR, "no. 12", "Grace")
    assert neighbour == {"leave_at_door": False, "note": "Deliver to neighbour Grace: no. 12"}


def test_the_depot_centre_is_the_mean_of_the_exterior_corners() -> None:
    ring = [[0.0, 0.0], [2.0, 0.0], [2.0, 4.0], [0.0, 4.0], [0.0, 0.0]]
    assert ring_centre({"type": "Polygon", "coordinates": [ring]}) == (2.0, 1.0)
    assert ring_centre({"type": "MultiPolygon", "coordinates": [[ring]]}) == (2.0, 1.0)
    assert ring_centre({"type": "Polygon", "coordinates": []}) is None
    assert ring_centre({"type": "Polygon", "coordinates": [[["a", "b"]] * 4]}) is None


def _fields(**values: str) -> dict[str, str]:
    return {"csrf": csrf_token(SECRET, "tok"), **values}


def test_the_redirect_form_needs_a_place_or_a_name_and_an_offered_time() -> None:
    offered = frozenset({"2026-12-05_morning"})
    ok = parse_redirect(_fields(kind="neighbour", neighbour_name=" Grace ", option="2026-12-05_morning"), offered,
                        secret=SECRET, page_token="tok")
    assert ok == RedirectForm("neighbour", None, "Grace", "2026-12-05_morning")
    cases = [
        (_fields(kind="safe_place", option="2026-12-05_morning"), FormError("invalid_input", "note")),
        (_fields(kind="neighbour", note="x", option="2026-12-05_morning"),
         FormError("invalid_input", "neighbour_name")),
        (_fields(kind="roof", note="x", option="2026-12-05_morning"), FormError("invalid_input", "kind")),
        (_fields(kind="safe_place", note="x" * 301, option="2026-12-05_morning"), FormError("invalid_input", "note")),
        (_fields(kind="safe_place", note="porch"), FormError("invalid_input", "option")),
        (_fields(kind="safe_place", note="porch", option="2099-01-01_x"), FormError("not_available", "option")),
        ({"kind": "safe_place", "note": "porch", "option": "2026-12-05_morning"}, FormError("form_expired", "csrf")),
    ]
    for fields, expected in cases:
        assert parse_redirect(fields, offered, secret=SECRET, page_token="tok") == expected, fields
    # a name given with a safe place is not kept
    safe = parse_redirect(_fields(kind="safe_place", note="porch", neighbour_name="Grace",
                                  option="2026-12-05_morning"), offered, secret=SECRET, page_token="tok")
    assert isinstance(safe, RedirectForm) and safe.neighbour_name is None


def _page(status: str, **extra: object) -> str:
    page = TrackingPage(token="tok", status=status, failure_reason="not_home", attempts=1, max_attempts=3,
                        **extra)  # type: ignore[arg-type]
    return render_tracking_page(page, SHOP, tile_url=None, csrf_token="1.x", status_url="/s",
                                action_base="/track/tok")


def test_the_page_names_the_reason_in_words_in_each_language() -> None:
    for lang in LANGUAGES:
        html = _page("failed", locale=lang)
        assert failure_reason_text("not_home", lang) in html and "not_home" not in html
    assert "Attempt 1 of 3." in _page("failed")
    returned = _page("returned")
    assert "nobody was at home" in returned and "/reschedule" not in returned
    assert "/redirect" not in _page("failed")  # nothing offered: no form


def test_returned_and_cancelled_messages_exist_in_every_language_without_codes() -> None:
    for kind in (NotifyKind.RETURNED, NotifyKind.CANCELLED):
        for lang in LANGUAGES:
            for channel in ("sms", "email"):
                values = dict(SAMPLE_VALUES) | {"reason": failure_reason_text(FailureReason.REFUSED, lang)}
                message = render(kind, channel, lang, values, SHOP, DEFAULT_TEMPLATES)
                rendered = str(message)
                assert "{" not in getattr(message, "text", ""), rendered
                assert not any(code.value in rendered for code in FailureReason if "_" in code.value)
