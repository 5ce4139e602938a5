"""Message templates: the placeholder language, hostile values, SMS segments, branded email: no AWS."""

from __future__ import annotations

import html
import re
from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.core.problems import ProblemsError
from chalicelib.notifications import templates as templates_module
from chalicelib.notifications.rules import NotifyKind
from chalicelib.notifications.templates import (
    DEFAULT_TEMPLATES,
    DEFAULTS,
    KIND_PLACEHOLDERS,
    LANGUAGES,
    PLACEHOLDERS,
    SAMPLE_VALUES,
    RenderedEmail,
    RenderedSms,
    TemplateField,
    TemplateSet,
    clean_value,
    compile_template,
    first_name_of,
    format_day,
    format_early,
    format_window,
    message_values,
    render,
    render_email,
    sms_friendly,
    sms_info,
    validate_message_fields,
    validate_template,
)
from chalicelib.shipments.failures import failure_reason_text
from chalicelib.web.branding import Branding

K = NotifyKind
BERLIN = ZoneInfo("Europe/Berlin")
BRAND = Branding("Acme Parcels", primary_colour="#1d4ed8", logo_url="https://cdn.acme.example/logo.png",
                 support_email="help@acme.example")
HOSTILE = [
    "{tracking_url}", "{{first_name}}", "{{", "}}", "{", "}", "{0.__class__}", "{0.__class__.__mro__}",
    "{first_name!r}", "{first_name:>99999999}", "<script>alert(1)</script>", '"><img src=x onerror=alert(1)>',
    "' onmouseover='x", "&amp;", "javascript:alert(1)", "Eve\r\nBcc: victim@example.com", "\u202egnp.exe",
    "%s %d %(x)s", "${jndi:ldap://x}", "{{7*7}}", "<!--", "]]>",
]


def values(**kw: str) -> dict[str, str]:
    return {**SAMPLE_VALUES, **kw}


def codes(text: str, **kw: object) -> list[tuple[str, int | None]]:
    return [(p.code, p.position) for p in validate_template(text, **kw)]  # type: ignore[arg-type]


# --- syntax ---------------------------------------------------------------------------


def test_plain_placeholders_and_escaped_braces():
    t = compile_template("Hi {first_name}, {{literal}} }} {{")
    assert t.placeholders == {"first_name"}
    assert t.render_text({"first_name": "Jo"}) == "Hi Jo, {literal} } {"


@pytest.mark.parametrize(("text", "expected"), [
    ("{0.__class__}", [("syntax", 0)]),
    ("x {first_name.__class__}", [("syntax", 2)]),
    ("{first_name[0]}", [("syntax", 0)]),
    ("{first_name!r}", [("syntax", 0)]),
    ("{first_name:>10}", [("syntax", 0)]),
    ("{}", [("syntax", 0)]),
    ("{ first_name }", [("syntax", 0)]),
    ("{First_Name}", [("syntax", 0)]),
    ("{1}", [("syntax", 0)]),
    ("Hi {first_name", [("syntax", 3)]),
    ("Hi {first_{name}}", [("syntax", 3), ("unknown_placeholder", 10), ("syntax", 16)]),
    ("a } b", [("syntax", 2)]),
    ("{{first_name}", [("syntax", 12)]),
    ("{nope}", [("unknown_placeholder", 0)]),
    ("ok {reason}", [("unknown_placeholder", 3)]),  # not available in a delivered message
    ("bell \x07", [("control_character", 5)]),
])
def test_syntax_errors_name_the_position(text, expected):
    assert codes(text, kind=K.DELIVERED) == expected


def test_messages_name_the_field_line_and_column():
    problems = validate_template("Hello\n  {0.__class__} {shipment_id}", field="templates.delivered.en.email_text",
                                 kind=K.DELIVERED)
    assert [p.field for p in problems] == ["templates.delivered.en.email_text"] * 2
    assert "line 2, column 3" in problems[0].message and "attribute or index access" in problems[0].message
    assert "unknown placeholder {shipment_id}" in problems[1].message and "{proof_url}" in problems[1].message
    reason = validate_template("{reason}", kind=K.DELIVERED)[0].message
    assert "not available in a delivered message" in reason


def test_one_line_fields_and_length():
    assert codes("Subject\nBcc: x", multiline=False) == [("line_break", 7)]
    assert codes("x" * 11, max_length=10) == [("too_long", None)]
    with pytest.raises(ProblemsError) as err:
        compile_template("{0.__class__} {", field="f")
    assert len(err.value.problems) == 2 and str(err.value).startswith("f: ")


def test_crlf_is_one_line_break():
    t = compile_template("a\r\nb\rc")
    assert t.render_text({}) == "a\nb\nc"


@settings(max_examples=400)
@given(st.text(alphabet=st.sampled_from(list("{}ab_ .:!0[]\n")) | st.characters(), max_size=60))
def test_property_validate_and_compile_agree_and_render_never_raises(text):
    problems = validate_template(text)
    if problems:
        with pytest.raises(ProblemsError):
            compile_template(text)
        return
    t = compile_template(text)
    out = t.render_text({name: "{x}<y>" for name in t.placeholders})
    assert isinstance(out, str)
    assert isinstance(t.render_html({name: "{x}<y>" for name in t.placeholders}), str)


# --- values are data, never code or markup --------------------------------------------------


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_values_are_printed_not_interpreted(hostile):
    t = DEFAULT_TEMPLATES.template(K.OUT_FOR_DELIVERY, "en")
    sms = t.sms.render_text(values(merchant_name=hostile, first_name=hostile))
    cleaned = clean_value("merchant_name", hostile)
    assert sms.startswith(cleaned + ":")  # inserted once, literally, never re-parsed
    assert "\n" not in cleaned and "\r" not in cleaned and "\u202e" not in cleaned
    body = t.email_text.render_html(values(first_name=hostile, merchant_name=hostile))
    assert "<script" not in body and "<img" not in body and "<!--" not in body
    assert html.escape(clean_value("first_name", hostile), quote=True) in body


def test_a_name_that_looks_like_a_placeholder_stays_a_name():
    v = values(first_name="{tracking_url}", tracking_url="https://t.example/abc")
    email = render_email(K.OUT_FOR_DELIVERY, DEFAULT_TEMPLATES.template(K.OUT_FOR_DELIVERY, "en"), v, BRAND)
    assert email.text.startswith("Hi {tracking_url},")
    assert email.text.count("https://t.example/abc") == 1


def test_subject_cannot_gain_headers():
    email = render(K.DELIVERED, "email", "en", values(merchant_name="X\r\nBcc: evil@example.com"), BRAND)
    assert isinstance(email, RenderedEmail)
    assert "\n" not in email.subject and "\r" not in email.subject


def test_only_http_urls_become_links():
    t = compile_template("Go: {tracking_url}", kind=K.OUT_FOR_DELIVERY)
    assert '<a href="https://t.example/x?a=1&amp;b=2"' in t.render_html({"tracking_url": "https://t.example/x?a=1&b=2"})
    for bad in ("javascript:alert(1)", "data:text/html,<script>", 'https://x.example/"onclick=', "//evil.example"):
        out = t.render_html({"tracking_url": bad})
        assert "<a " not in out and "<script" not in out


non_url_names = sorted(name for name, spec in PLACEHOLDERS.items() if not spec.is_url)


@settings(max_examples=300)
@given(name=st.sampled_from(non_url_names), value=st.text(max_size=80),
       kind=st.sampled_from(list(NotifyKind)), lang=st.sampled_from(LANGUAGES))
def test_property_values_never_add_markup(name, value, kind, lang):
    t = DEFAULT_TEMPLATES.template(kind, lang)
    base = render_email(kind, t, values(**{name: "x"}), BRAND, lang).html
    hostile = render_email(kind, t, values(**{name: value}), BRAND, lang).html
    assert hostile.count("<") == base.count("<")
    assert hostile.count(">") == base.count(">")
    assert hostile.count('"') == base.count('"')


@settings(max_examples=200)
@given(st.dictionaries(st.sampled_from(sorted(PLACEHOLDERS)), st.text(max_size=300)),
       st.sampled_from(list(NotifyKind)), st.sampled_from(["en", "de", "de-AT", "fr", "", "x" * 30]))
def test_property_rendering_never_raises(vals, kind, locale):
    sms = render(kind, "sms", locale, vals, BRAND)
    email = render(kind, "email", locale, vals, BRAND)
    assert isinstance(sms, RenderedSms) and sms.segments >= 1
    assert isinstance(email, RenderedEmail)
    assert "\n" not in email.subject
    assert "<script" not in email.html.lower()


def test_values_are_capped_and_cleaned():
    assert clean_value("first_name", "x" * 500) == "x" * 50
    assert clean_value("first_name", "  Jo \t\n Doe  ") == "Jo Doe"
    assert clean_value("first_name", None) == ""
    assert clean_value("reason", "a\u200bb\u202ec\u2028d") == "abc d"
    assert clean_value("first_name", "👩\u200d💻") == "👩\u200d💻"  # the joiner of an emoji sequence stays
    assert first_name_of("  Jane  Q. Public ") == "Jane"
    assert first_name_of(None) == ""


# --- default templates ------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(NotifyKind))
@pytest.mark.parametrize("lang", LANGUAGES)
def test_defaults_exist_use_only_their_placeholders_and_fit_two_gsm7_segments(kind, lang):
    fields = DEFAULTS[(kind, lang)]
    assert set(fields) == set(TemplateField)
    for t in fields.values():
        assert t.placeholders <= KIND_PLACEHOLDERS[kind]
    sms = render(kind, "sms", lang, SAMPLE_VALUES, BRAND)
    assert isinstance(sms, RenderedSms)
    assert sms.encoding == "GSM-7" and sms.segments <= 2, sms.text
    assert "{" not in sms.text


@pytest.mark.parametrize("lang", LANGUAGES)
def test_an_early_estimate_is_said_and_every_default_sms_still_fits_two_segments(lang):
    start, end = datetime(2026, 12, 4, 10, 0, tzinfo=UTC), datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
    window = format_window(start, end, UTC, lang) + " UTC"
    early = format_early(window, lang)
    assert early.startswith(window) and early != window
    assert early.endswith({"en": ", before your delivery window", "de": ", vor Ihrem Lieferfenster"}[lang])
    for kind in NotifyKind:
        sms = render(kind, "sms", lang, {**SAMPLE_VALUES, "eta_window": early}, BRAND)
        assert isinstance(sms, RenderedSms) and sms.encoding == "GSM-7" and sms.segments <= 2, sms.text


def test_the_links_each_kind_needs():
    for kind in NotifyKind:
        for lang in LANGUAGES:
            used = DEFAULTS[(kind, lang)][TemplateField.SMS].placeholders
            link = {"delivered": "proof_url", "failed": "reschedule_url"}.get(kind.value, "tracking_url")
            assert link in used, (kind, lang)


def test_german_and_locale_fallbacks():
    de = render(K.DELIVERED, "email", "de-AT", values(), BRAND)
    assert isinstance(de, RenderedEmail)
    assert de.subject == "Ihr Paket von Example Store wurde zugestellt"
    assert '<html lang="de">' in de.html and "Zustellnachweis ansehen" in de.html
    fr = render(K.DELIVERED, "email", "fr", values(), BRAND)
    assert isinstance(fr, RenderedEmail) and fr.subject == "Your Example Store parcel was delivered"


# --- merchant overrides -------------------------------------------------------------------


def test_overrides_fall_back_per_field():
    templates = TemplateSet.from_dict({
        "delivered": {"en": {"sms": "{merchant_name} says: done! {proof_url}"},
                      "de-AT": {"email_subject": "Servus {first_name}, zugestellt"}},
    })
    t_en = templates.template(K.DELIVERED, "en-GB")
    assert t_en.sms.source == "{merchant_name} says: done! {proof_url}"
    assert t_en.email_subject is DEFAULTS[(K.DELIVERED, "en")][TemplateField.EMAIL_SUBJECT]
    t_at = templates.template(K.DELIVERED, "de-AT")
    assert t_at.email_subject.source == "Servus {first_name}, zugestellt"
    # The recipient's language beats the merchant's English text.
    assert templates.template(K.DELIVERED, "de").sms is DEFAULTS[(K.DELIVERED, "de")][TemplateField.SMS]
    assert TemplateSet.from_dict(templates.to_dict()).to_dict() == templates.to_dict()


def test_saving_bad_templates_lists_every_problem_by_field():
    with pytest.raises(ProblemsError) as err:
        TemplateSet.from_dict({
            "delivered": {"en": {"sms": "Hi {0.__class__}", "email_subject": "a\nb", "body": "x"},
                          "english": {"sms": "x"}},
            "arrived": {"en": {"sms": "x"}},
            "failed": {"de": {"email_text": "{reason} {proof_url}", "sms": "   "}},
            "approaching": {"en": {"sms": "{merchant_name} " + "long text " * 80}},
        })
    got = {(p.field, p.code) for p in err.value.problems}
    assert got == {
        ("templates.delivered.en.sms", "syntax"),
        ("templates.delivered.en.email_subject", "line_break"),
        ("templates.delivered.en.body", "unknown_field"),
        ("templates.delivered.english", "invalid_locale"),
        ("templates.arrived", "unknown_kind"),
        ("templates.failed.de.email_text", "unknown_placeholder"),
        ("templates.failed.de.sms", "empty"),
        ("templates.approaching.en.sms", "too_long"),
    }


def test_validate_message_fields_accepts_a_good_override():
    assert validate_message_fields(K.FAILED, {"sms": "Sorry {first_name}: {reason}. {reschedule_url}"}) == []


# --- SMS segments -------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "encoding", "units", "segments"), [
    ("", "GSM-7", 0, 0),
    ("a" * 160, "GSM-7", 160, 1),
    ("a" * 161, "GSM-7", 161, 2),
    ("a" * 306, "GSM-7", 306, 2),
    ("a" * 307, "GSM-7", 307, 3),
    ("€" * 80, "GSM-7", 160, 1),  # extension characters cost two septets
    ("€" * 81, "GSM-7", 162, 2),
    ("a" * 152 + "€", "GSM-7", 154, 1),
    ("a" * 159 + "€" + "a" * 10, "GSM-7", 171, 2),
    ("a" * 152 + "€" + "a" * 152, "GSM-7", 306, 3),  # the escape pair is not split across segments
    ("Grüße aus Köln, ÄÖÜß", "GSM-7", 20, 1),
    ("ł" * 70, "UCS-2", 70, 1),
    ("ł" * 71, "UCS-2", 71, 2),
    ("ł" * 134, "UCS-2", 134, 2),
    ("ł" * 135, "UCS-2", 135, 3),
    ("😀" * 35, "UCS-2", 70, 1),  # outside the BMP: a surrogate pair each
    ("a" * 66 + "😀" + "a" * 10, "UCS-2", 78, 2),
    ("a" * 66 + "😀" * 34, "UCS-2", 134, 3),  # the pair is not split
])
def test_sms_info(text, encoding, units, segments):
    info = sms_info(text)
    assert (info.encoding, info.units, info.segments) == (encoding, units, segments)


def test_sms_friendly_keeps_gsm7():
    text = "It\u2019s \u201cout\u201d \u2013 arriving\u2026\u00a0soon"
    assert sms_info(text).encoding == "UCS-2"
    assert sms_friendly(text) == 'It\'s "out" - arriving... soon'
    assert sms_info(sms_friendly(text)).encoding == "GSM-7"
    sms = render(K.APPROACHING, "sms", "en", values(merchant_name="Bob\u2019s Shop"), BRAND)
    assert isinstance(sms, RenderedSms) and sms.encoding == "GSM-7" and sms.text.startswith("Bob's Shop:")


@given(st.text(max_size=400) | st.text(alphabet="a€{ł😀", max_size=400))
def test_property_segments_fit_the_units(text):
    info = sms_info(text)
    single, per = (160, 153) if info.encoding == "GSM-7" else (70, 67)
    if info.units == 0:
        assert info.segments == 0
    elif info.units <= single:
        assert info.segments == 1
    else:
        # At least what the units need; at most one unit lost per segment to an unsplittable pair.
        assert -(-info.units // per) <= info.segments <= -(-info.units // (per - 1))


# --- email layout and branding ---------------------------------------------------------------


def test_email_has_branding_button_support_and_unsubscribe():
    v = message_values(BRAND, recipient_name="Jane Doe", tracking_url="https://t.example/t/abc",
                       eta_window="between 10:00 and 12:00")
    email = render(K.OUT_FOR_DELIVERY, "email", "en", v, BRAND, unsubscribe_url="https://t.example/u/abc")
    assert isinstance(email, RenderedEmail)
    assert email.subject == "Your Acme Parcels delivery is on its way"
    assert email.text.startswith("Hi Jane,\n\nyour parcel from Acme Parcels is out for delivery")
    assert email.text.endswith("-- \nAcme Parcels\nhelp@acme.example\nUnsubscribe: https://t.example/u/abc\n")
    h = email.html
    assert '<img src="https://cdn.acme.example/logo.png" alt="Acme Parcels"' in h
    assert "background:#1d4ed8;color:#ffffff" in h  # white text on a dark brand colour
    assert '<a href="https://t.example/t/abc" style="display:inline-block' in h and "Track your delivery" in h
    assert 'href="mailto:help@acme.example"' in h and 'href="https://t.example/u/abc"' in h
    light = Branding("Sunny", primary_colour="#fde047")
    assert "color:#111111" in render_email(K.DELIVERED, DEFAULT_TEMPLATES.template(K.DELIVERED, "en"), v, light).html


def test_hostile_branding_cannot_reach_the_html():
    evil = Branding('Evil"><script>x</script>', primary_colour="red;background:url(x)",
                    logo_url="javascript:alert(1)", support_email="a@b.example", support_phone="javascript:alert(1)")
    email = render(K.FAILED, "email", "en", values(), evil, unsubscribe_url="javascript:alert(2)")
    assert isinstance(email, RenderedEmail)
    assert "<script" not in email.html and "javascript:" not in email.html and "url(x)" not in email.html
    assert "&lt;script&gt;" in email.html


def test_sender_name():
    assert Branding('Acme <sales@evil.example>, "x"').display_sender == "Acme sales evil.example x"
    assert Branding("Acme\nBcc: x").display_sender == "Acme Bcc x"


# --- words in the recipient's language -------------------------------------------------------------


def test_dates_windows_and_reasons():
    assert format_day(date(2025, 11, 18), "en") == "Tuesday 18 November"
    assert format_day(date(2025, 3, 18), "de-DE") == "Dienstag, 18. März"
    start, end = datetime(2025, 6, 3, 8, 0, tzinfo=UTC), datetime(2025, 6, 3, 10, 0, tzinfo=UTC)
    assert format_window(start, end, BERLIN, "en") == "between 10:00 and 12:00"
    assert format_window(start, end, BERLIN, "de") == "zwischen 10:00 und 12:00 Uhr"
    assert format_window(start, start, BERLIN, "en") == "around 10:00"
    assert format_window(None, None, BERLIN, "de") == "im Laufe des Tages"
    assert failure_reason_text("not_home", "de") == "niemand war zu Hause"
    assert failure_reason_text("unheard_of", "en") == "the delivery could not be completed"
    for text in (format_window(start, end, BERLIN, "de"), failure_reason_text("damaged", "de")):
        assert sms_info(text).encoding == "GSM-7"


def test_no_str_format_anywhere_in_rendering():
    # Guard against a regression to str.format / format_map on template text.
    source = Path(templates_module.__file__).read_text(encoding="utf-8")
    assert not re.search(r"\.format(_map)?\(", source)
