"""Message templates for recipients: a tiny placeholder language, safe rendering, SMS length, branded email.

The language
------------
A template is text with placeholders: `{first_name}`, `{tracking_url}`... A
placeholder name is lower-case letters, digits and underscores. `{{` and `}}`
are a literal `{` and `}`. That is all: there is no attribute or index access,
no conversion (`!r`), no format spec (`:>10`), no expressions, and rendering is
plain concatenation of literal text and values, never `str.format`, so a
template such as `{0.__class__}` is refused when it is saved instead of
reaching into Python objects. Values are inserted once and never parsed again:
a recipient called `{tracking_url}` or `<script>` is printed as those characters
(HTML-escaped in the HTML part).

`validate_template` lists every problem (syntax error, unknown placeholder, a
placeholder this event kind does not provide, control characters, length) with
the template field and the character position, for a 4xx when a merchant saves
templates; `compile_template` raises `ProblemsError` with the same list.

Messages
--------
Every event kind has default templates in English and German (`DEFAULTS`):
an SMS text, an email subject and an email text body. Merchants override any of
them per kind and locale (`TemplateSet`); a field a merchant did not override
falls back to the default of the recipient's language, then to English.

Email HTML is not a merchant template: the platform lays out the merchant's
text body (escaped; blank lines become paragraphs, link placeholders become
links) inside a fixed branded frame (name or logo, colour, support contact,
unsubscribe link), so merchant text cannot inject markup either. The frame's
colours come from the one `chalicelib.web.branding.Branding` and its contrast
rule, so the email's button reads like the tracking page's.
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, tzinfo
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from chalicelib.core.problems import Problem, ProblemsError
from chalicelib.notifications.contacts import check_email, check_phone
from chalicelib.notifications.rules import NotifyKind
from chalicelib.shipments.failures import FailureReason, failure_reason_text
from chalicelib.web.branding import DEFAULT_ACCENT, WHITE, Branding, ink, text_on, valid_colour

K = NotifyKind

# --- placeholders ---------------------------------------------------------------


@dataclass(frozen=True)
class PlaceholderSpec:
    max_length: int
    is_url: bool = False


PLACEHOLDERS: Mapping[str, PlaceholderSpec] = {
    "first_name": PlaceholderSpec(50),
    "merchant_name": PlaceholderSpec(100),
    "support_contact": PlaceholderSpec(200),
    "tracking_url": PlaceholderSpec(2000, is_url=True),
    "eta_window": PlaceholderSpec(100),
    "delivery_date": PlaceholderSpec(100),
    "delivered_at": PlaceholderSpec(50),
    "proof_url": PlaceholderSpec(2000, is_url=True),
    "reason": PlaceholderSpec(200),
    "reschedule_url": PlaceholderSpec(2000, is_url=True),
    "delivery_pin_note": PlaceholderSpec(100),  # "Your delivery PIN: 123456. " when the stop requires a PIN, else ""
}
COMMON_PLACEHOLDERS = frozenset({"first_name", "merchant_name", "support_contact", "tracking_url"})
KIND_PLACEHOLDERS: Mapping[NotifyKind, frozenset[str]] = {
    K.DAY_BEFORE: COMMON_PLACEHOLDERS | {"delivery_date", "eta_window"},
    K.OUT_FOR_DELIVERY: COMMON_PLACEHOLDERS | {"eta_window", "delivery_pin_note"},
    K.APPROACHING: COMMON_PLACEHOLDERS | {"eta_window"},
    K.DELIVERED: COMMON_PLACEHOLDERS | {"delivered_at", "proof_url"},
    K.FAILED: COMMON_PLACEHOLDERS | {"reason", "reschedule_url"},
    K.DELAYED: COMMON_PLACEHOLDERS | {"eta_window"},
    K.RESCHEDULED: COMMON_PLACEHOLDERS | {"delivery_date", "eta_window"},
    K.RETURNED: COMMON_PLACEHOLDERS | {"reason"},
    K.CANCELLED: COMMON_PLACEHOLDERS,
}


class TemplateField(StrEnum):
    SMS = "sms"
    EMAIL_SUBJECT = "email_subject"
    EMAIL_TEXT = "email_text"


@dataclass(frozen=True)
class FieldRule:
    max_length: int
    multiline: bool


FIELD_RULES: Mapping[TemplateField, FieldRule] = {
    TemplateField.SMS: FieldRule(1000, multiline=True),
    TemplateField.EMAIL_SUBJECT: FieldRule(200, multiline=False),
    TemplateField.EMAIL_TEXT: FieldRule(10_000, multiline=True),
}
MAX_SMS_SEGMENTS = 4  # with typical values; a longer SMS costs more and arrives in pieces on old phones

_NAME = re.compile(r"[a-z][a-z0-9_]*")
_LOOSE_NAME = re.compile(r"\s*[A-Za-z_][A-Za-z0-9_]*\s*")


# --- parsing --------------------------------------------------------------------


@dataclass(frozen=True)
class Slot:
    """A placeholder in a compiled template, at `position` in its source."""

    name: str
    position: int


Token = str | Slot


def _line_col(text: str, position: int) -> str:
    line = text.count("\n", 0, position) + 1
    col = position - (text.rfind("\n", 0, position) + 1) + 1
    return f"line {line}, column {col}"


def _shown(fragment: str, limit: int = 40) -> str:
    return fragment if len(fragment) <= limit else fragment[: limit - 3] + "..."


def _parse(text: str, field_name: str, allowed: Collection[str] | None, multiline: bool,
           max_length: int | None, kind: NotifyKind | None) -> tuple[tuple[Token, ...], list[Problem]]:
    problems: list[Problem] = []
    tokens: list[Token] = []
    buf: list[str] = []

    def problem(code: str, message: str, position: int | None) -> None:
        where = f" ({_line_col(text, position)})" if position is not None else ""
        problems.append(Problem(field_name, code, message + where, position))

    if max_length is not None and len(text) > max_length:
        problem("too_long", f"is {len(text)} characters long; at most {max_length}", None)
        return (), problems
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "{":
            if text.startswith("{{", i):
                buf.append("{")
                i += 2
                continue
            close = text.find("}", i + 1)
            reopen = text.find("{", i + 1)
            if close == -1 or (reopen != -1 and reopen < close):
                problem("syntax", "'{' is not closed: a placeholder is {name}; write {{ for a literal {", i)
                i += 1
                continue
            inner = text[i + 1:close]
            if _NAME.fullmatch(inner):
                if allowed is not None and inner not in allowed:
                    problem("unknown_placeholder", _unknown_message(inner, allowed, kind), i)
                if buf:
                    tokens.append("".join(buf))
                    buf.clear()
                tokens.append(Slot(inner, i))
            else:
                problem("syntax", _invalid_message(inner), i)
            i = close + 1
            continue
        if c == "}":
            if text.startswith("}}", i):
                buf.append("}")
                i += 2
                continue
            problem("syntax", "'}' without a matching '{'; write }} for a literal }", i)
            i += 1
            continue
        if c in "\r\n":
            if not multiline:
                problem("line_break", "must be one line", i)
            elif c == "\r" and text.startswith("\r\n", i):
                i += 1  # CRLF is one line break
                continue
            buf.append("\n")
            i += 1
            continue
        if _is_control(c) and c != "\t":
            problem("control_character", f"contains the control character U+{ord(c):04X}", i)
            i += 1
            continue
        buf.append(c)
        i += 1
    if buf:
        tokens.append("".join(buf))
    return tuple(tokens), problems


def _unknown_message(name: str, allowed: Collection[str], kind: NotifyKind | None) -> str:
    choices = ", ".join("{" + a + "}" for a in sorted(allowed))
    if name in PLACEHOLDERS and kind is not None:
        return f"{{{name}}} is not available in a {kind.value} message; available: {choices}"
    return f"unknown placeholder {{{name}}}; available: {choices}"


def _invalid_message(inner: str) -> str:
    shown = "{" + _shown(inner) + "}"
    if _LOOSE_NAME.fullmatch(inner):
        return f"{shown} is not a placeholder: names are lower case without spaces, like {{first_name}}"
    if any(ch in inner for ch in ".[]!:()"):
        return (f"{shown} is not a placeholder: attribute or index access, conversions and format specs are not "
                "supported; write {{ and }} for literal braces")
    return f"{shown} is not a placeholder: use {{name}} with lower-case letters, digits and _"


def _is_control(c: str) -> bool:
    return unicodedata.category(c) in ("Cc", "Cs") or c in "\u2028\u2029"


def validate_template(text: str, *, field: str = "template", allowed: Collection[str] | None = None,
                      multiline: bool = True, max_length: int | None = None,
                      kind: NotifyKind | None = None) -> list[Problem]:
    """Every problem of `text` as a template, naming `field` and the position; empty when it is fine.

    `allowed` limits the placeholder names (default: any syntactically valid
    name); with `kind` given and `allowed` not, the kind's placeholders apply.
    """
    if allowed is None and kind is not None:
        allowed = KIND_PLACEHOLDERS[kind]
    return _parse(text, field, allowed, multiline, max_length, kind)[1]


@dataclass(frozen=True)
class CompiledTemplate:
    source: str
    tokens: tuple[Token, ...]

    @property
    def placeholders(self) -> frozenset[str]:
        return frozenset(t.name for t in self.tokens if isinstance(t, Slot))

    def render_text(self, values: Mapping[str, str]) -> str:
        """Plain text: literal text as written, values cleaned (one line, no control characters, capped)."""
        return "".join(t if isinstance(t, str) else clean_value(t.name, values.get(t.name)) for t in self.tokens)

    def render_html(self, values: Mapping[str, str], link_color: str = DEFAULT_ACCENT) -> str:
        """HTML paragraphs: everything escaped; blank lines split paragraphs, single line breaks are <br>;
        a link placeholder whose value is an http(s) URL becomes a link."""
        parts: list[str] = []
        for t in self.tokens:
            if isinstance(t, str):
                parts.append(html.escape(t, quote=True))
                continue
            value = clean_value(t.name, values.get(t.name))
            spec = PLACEHOLDERS.get(t.name)
            escaped = html.escape(value, quote=True)
            if spec is not None and spec.is_url and is_http_url(value):
                parts.append(f'<a href="{escaped}" style="color:{valid_colour(link_color, DEFAULT_ACCENT)}">'
                             f'{escaped}</a>')
            else:
                parts.append(escaped)
        out: list[str] = []
        for paragraph in re.split(r"\n[ \t]*\n", "".join(parts)):
            lines = [line for line in paragraph.strip("\n").split("\n")]
            if any(line.strip() for line in lines):
                out.append('<p style="margin:0 0 16px">' + "<br>".join(lines) + "</p>")
        return "".join(out)


def compile_template(text: str, *, field: str = "template", allowed: Collection[str] | None = None,
                     multiline: bool = True, max_length: int | None = None,
                     kind: NotifyKind | None = None) -> CompiledTemplate:
    """The compiled template; raises ProblemsError listing every problem `validate_template` would."""
    if allowed is None and kind is not None:
        allowed = KIND_PLACEHOLDERS[kind]
    tokens, problems = _parse(text, field, allowed, multiline, max_length, kind)
    if problems:
        raise ProblemsError(problems)
    return CompiledTemplate(text, tokens)


# --- values ---------------------------------------------------------------------

_DROP_FORMAT = {"\u200d"}  # keep the zero-width joiner of emoji sequences; drop other format characters


def clean_value(name: str, value: object) -> str:
    """A value as it may appear in a message: text, one line, no control or bidi-override characters, capped.

    Line breaks and tabs become spaces (a name cannot add lines to an SMS or a
    header to an email); format characters such as U+202E RIGHT-TO-LEFT OVERRIDE
    are removed so a value cannot disguise a link. Missing values are empty.
    """
    if value is None:
        return ""
    text = value if isinstance(value, str) else str(value)
    out: list[str] = []
    for c in text:
        cat = unicodedata.category(c)
        if cat in ("Cc", "Zl", "Zp") or c.isspace():
            out.append(" ")
        elif (cat == "Cf" and c not in _DROP_FORMAT) or cat in ("Cs", "Co", "Cn"):
            continue
        else:
            out.append(c)
    cleaned = " ".join("".join(out).split())
    spec = PLACEHOLDERS.get(name)
    limit = spec.max_length if spec else 500
    return cleaned[:limit].rstrip()


def is_http_url(value: str) -> bool:
    """An absolute http(s) URL with a host and nothing that needs quoting: safe as a link target."""
    if not value.startswith(("https://", "http://")) or any(c in value for c in "\"'<>\\ `"):
        return False
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return bool(parts.hostname) and parts.username is None and parts.password is None


def first_name_of(full_name: str | None) -> str:
    """The first word of a recipient's name, cleaned (the only part of the name messages use)."""
    words = clean_value("first_name", full_name).split()
    return words[0] if words else ""


# --- dates and times in the recipient's language (failure reasons: chalicelib.shipments.failures) -------

_WEEKDAYS = {
    "en": ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"),
    "de": ("Montag", "Dienstag", "Mittwoch", "Donnerstag", "Freitag", "Samstag", "Sonntag"),
}
_MONTHS = {
    "en": ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December"),
    "de": ("Januar", "Februar", "März", "April", "Mai", "Juni", "Juli", "August", "September", "Oktober",
           "November", "Dezember"),
}
_WINDOW = {
    "en": ("between {start} and {end}", "around {start}", "during the day"),
    "de": ("zwischen {start} und {end} Uhr", "gegen {start} Uhr", "im Laufe des Tages"),
}
LANGUAGES = ("en", "de")
_LATER_TODAY = {"en": "later today (running late)", "de": "später heute (mit Verspätung)"}
# An estimate before the promised window opens (geo/day_window.before_window): said, as the tracking page says it.
_EARLY = {"en": "{window}, before your delivery window", "de": "{window}, vor Ihrem Lieferfenster"}


def language_of(locale: str | None) -> str:
    """The supported language of a locale tag (`de-AT` -> `de`), English when unsupported."""
    lang = (locale or "").replace("_", "-").split("-")[0].lower()
    return lang if lang in LANGUAGES else "en"


def format_day(day: date, locale: str | None) -> str:
    lang = language_of(locale)
    weekday, month = _WEEKDAYS[lang][day.weekday()], _MONTHS[lang][day.month - 1]
    return f"{weekday}, {day.day}. {month}" if lang == "de" else f"{weekday} {day.day} {month}"


def format_clock(instant: datetime, zone: tzinfo) -> str:
    local = instant.astimezone(zone)
    return f"{local.hour:02d}:{local.minute:02d}"


def format_window(start: datetime | None, end: datetime | None, zone: tzinfo, locale: str | None) -> str:
    """ "between 10:00 and 12:00" / "zwischen 10:00 und 12:00 Uhr", in the recipient's zone (GSM-7 only)."""
    both, single, unknown = _WINDOW[language_of(locale)]
    if start is None:
        return unknown
    a = format_clock(start, zone)
    b = format_clock(end, zone) if end is not None else a
    return single.replace("{start}", a) if a == b else both.replace("{start}", a).replace("{end}", b)


def format_early(window: str, locale: str | None) -> str:
    """An estimate's window text, said to be before the promised window (the merchant's drivers deliver early)."""
    return _EARLY[language_of(locale)].replace("{window}", window)


def format_later_today(locale: str | None) -> str:
    """The ETA wording once the estimate left the local day (geo/day_window.py): never a multi-day span."""
    return _LATER_TODAY[language_of(locale)]


# --- SMS length -----------------------------------------------------------------

GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿"
    "abcdefghijklmnopqrstuvwxyzäöñüà")
GSM7_EXTENSION = frozenset("^{}\\[~]|€\f")  # two septets each (escape + character)


@dataclass(frozen=True)
class SmsInfo:
    encoding: str  # "GSM-7" or "UCS-2"
    units: int  # septets (GSM-7) or UTF-16 code units (UCS-2)
    segments: int


def sms_info(text: str) -> SmsInfo:
    """Encoding and segment count of an SMS as carriers bill it.

    GSM-7 when every character is in the GSM 03.38 basic or extension table
    (extension characters cost two septets): 160 septets in one segment, 153 per
    segment when concatenated. Otherwise UCS-2 (UTF-16): 70 units in one
    segment, 67 when concatenated; characters outside the BMP (most emoji) cost
    two units. An escape pair or a surrogate pair is never split across segments.
    """
    if all(c in GSM7_BASIC or c in GSM7_EXTENSION for c in text):
        encoding, single, multi = "GSM-7", 160, 153
        costs = [2 if c in GSM7_EXTENSION else 1 for c in text]
    else:
        encoding, single, multi = "UCS-2", 70, 67
        costs = [2 if ord(c) > 0xFFFF else 1 for c in text]
    units = sum(costs)
    if units == 0:
        return SmsInfo(encoding, 0, 0)
    if units <= single:
        return SmsInfo(encoding, units, 1)
    segments, used = 1, 0
    for cost in costs:
        if used + cost > multi:
            segments, used = segments + 1, 0
        used += cost
    return SmsInfo(encoding, units, segments)


_SMS_FRIENDLY = str.maketrans({
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u2033": '"', "\u00ab": '"', "\u00bb": '"',
    "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-", "\u2212": "-",
    "\u2026": "...", "\u00a0": " ", "\u202f": " ", "\u2009": " ",
})


def sms_friendly(text: str) -> str:
    """Typographic quotes, dashes, ellipses and special spaces as their GSM-7 look-alikes.

    One curly apostrophe would otherwise switch the whole SMS to UCS-2 and more
    than double its segment count.
    """
    return text.translate(_SMS_FRIENDLY)


# --- message templates --------------------------------------------------------------


@dataclass(frozen=True)
class MessageTemplate:
    sms: CompiledTemplate
    email_subject: CompiledTemplate
    email_text: CompiledTemplate

    def field(self, which: TemplateField) -> CompiledTemplate:
        return {TemplateField.SMS: self.sms, TemplateField.EMAIL_SUBJECT: self.email_subject,
                TemplateField.EMAIL_TEXT: self.email_text}[which]


# Typical values, to check an SMS template's length when it is saved.
SAMPLE_VALUES: Mapping[str, str] = {
    "first_name": "Alexandra", "merchant_name": "Example Store", "support_contact": "help@example.com",
    "tracking_url": "https://track.example.com/t/" + "x" * 43, "eta_window": "between 10:00 and 12:00",
    "delivery_date": "Wednesday 18 November", "delivered_at": "14:32",
    "proof_url": "https://track.example.com/t/" + "x" * 43 + "#proof",
    "reason": failure_reason_text(FailureReason.NOT_HOME, "en"),
    "reschedule_url": "https://track.example.com/t/" + "x" * 43 + "#reschedule",
}


def validate_message_fields(kind: NotifyKind, fields: Mapping[str, object],
                            field_prefix: str = "template") -> list[Problem]:
    """Problems of a merchant's templates for one kind and locale (`{"sms": ..., "email_subject": ...}`).

    Fields are optional (missing ones fall back to the defaults). An SMS that
    would need more than MAX_SMS_SEGMENTS segments with typical values is refused.
    """
    problems: list[Problem] = []
    for name, text in fields.items():
        path = f"{field_prefix}.{name}"
        try:
            which = TemplateField(name)
        except ValueError:
            problems.append(Problem(path, "unknown_field",
                                    f"unknown template field; expected {', '.join(f.value for f in TemplateField)}"))
            continue
        if not isinstance(text, str):
            problems.append(Problem(path, "type", "must be a string"))
            continue
        if not text.strip():
            problems.append(Problem(path, "empty", "must not be empty (leave it out to use the default)"))
            continue
        rule = FIELD_RULES[which]
        found = validate_template(text, field=path, kind=kind, multiline=rule.multiline, max_length=rule.max_length)
        problems.extend(found)
        if which is TemplateField.SMS and not found:
            info = sms_info(sms_friendly(compile_template(text).render_text(SAMPLE_VALUES)))
            if info.segments > MAX_SMS_SEGMENTS:
                problems.append(Problem(path, "too_long", f"would be {info.segments} SMS segments ({info.encoding}) "
                                        f"with typical values; at most {MAX_SMS_SEGMENTS}"))
    return problems


def _compiled(kind: NotifyKind, which: TemplateField, text: str, path: str) -> CompiledTemplate:
    rule = FIELD_RULES[which]
    return compile_template(text, field=path, kind=kind, multiline=rule.multiline, max_length=rule.max_length)


_LOCALE = re.compile(r"^[a-z]{2}(-[A-Z]{2})?$")


@dataclass(frozen=True)
class TemplateSet:
    """A merchant's template overrides: {kind: {locale: {field: text}}}, compiled when built.

    `template(kind, locale)` resolves each field separately: the merchant's
    text for the exact locale (`de-AT`), then for its language (`de`), then
    the default of the language, then the merchant's English, then the default English.
    """

    overrides: Mapping[tuple[NotifyKind, str], Mapping[TemplateField, CompiledTemplate]] = field(
        default_factory=dict)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], field_prefix: str = "templates") -> TemplateSet:
        problems: list[Problem] = []
        out: dict[tuple[NotifyKind, str], dict[TemplateField, CompiledTemplate]] = {}
        if not isinstance(data, Mapping):
            raise ProblemsError([Problem(field_prefix, "type", "must be an object of kind -> locale -> fields")])
        for raw_kind, locales in data.items():
            try:
                kind = NotifyKind(raw_kind)
            except ValueError:
                problems.append(Problem(f"{field_prefix}.{raw_kind}", "unknown_kind",
                                        f"unknown event kind; expected one of {', '.join(k.value for k in K)}"))
                continue
            if not isinstance(locales, Mapping):
                problems.append(Problem(f"{field_prefix}.{kind.value}", "type",
                                        "must be an object of locale -> fields"))
                continue
            for locale, fields in locales.items():
                path = f"{field_prefix}.{kind.value}.{locale}"
                if not isinstance(locale, str) or not _LOCALE.match(locale):
                    problems.append(Problem(path, "invalid_locale", "locale must look like en or de-AT"))
                    continue
                if not isinstance(fields, Mapping):
                    problems.append(Problem(path, "type", "must be an object of field -> template text"))
                    continue
                found = validate_message_fields(kind, fields, path)
                problems.extend(found)
                if not found:
                    out[(kind, locale)] = {TemplateField(name): _compiled(kind, TemplateField(name), str(text),
                                                                          f"{path}.{name}")
                                           for name, text in fields.items()}
        if problems:
            raise ProblemsError(problems)
        return cls(out)

    def to_dict(self) -> dict[str, dict[str, dict[str, str]]]:
        out: dict[str, dict[str, dict[str, str]]] = {}
        for (kind, locale), fields in self.overrides.items():
            out.setdefault(kind.value, {})[locale] = {f.value: t.source for f, t in fields.items()}
        return out

    def template(self, kind: NotifyKind, locale: str | None) -> MessageTemplate:
        tag = (locale or "en").replace("_", "-")
        lang = tag.split("-")[0].lower()
        chain: list[Mapping[TemplateField, CompiledTemplate]] = [
            self.overrides.get((kind, tag), {}), self.overrides.get((kind, lang), {}),
            DEFAULTS[(kind, language_of(lang))], self.overrides.get((kind, "en"), {}), DEFAULTS[(kind, "en")]]

        def pick(which: TemplateField) -> CompiledTemplate:
            for layer in chain:
                if which in layer:
                    return layer[which]
            raise AssertionError("defaults cover every field")  # pragma: no cover

        return MessageTemplate(pick(TemplateField.SMS), pick(TemplateField.EMAIL_SUBJECT),
                               pick(TemplateField.EMAIL_TEXT))


_DEFAULT_TEXTS: Mapping[tuple[NotifyKind, str], tuple[str, str, str]] = {
    (K.DAY_BEFORE, "en"): (
        "{merchant_name}: your delivery is planned for tomorrow, {delivery_date}, {eta_window}. "
        "Track it: {tracking_url}",
        "Your {merchant_name} delivery arrives tomorrow",
        "Hi {first_name},\n\nyour delivery from {merchant_name} is planned for tomorrow, {delivery_date}, "
        "{eta_window}.\n\nFollow it, leave instructions for the driver or choose another day here:\n{tracking_url}"),
    (K.OUT_FOR_DELIVERY, "en"): (
        "{merchant_name}: your parcel is out for delivery, expected {eta_window}. {delivery_pin_note}"
        "Track it live: {tracking_url}",
        "Your {merchant_name} delivery is on its way",
        "Hi {first_name},\n\nyour parcel from {merchant_name} is out for delivery and expected {eta_window}. "
        "{delivery_pin_note}\n\nFollow it live:\n{tracking_url}"),
    (K.APPROACHING, "en"): (
        "{merchant_name}: your driver is almost there, expected {eta_window}. {tracking_url}",
        "Your {merchant_name} delivery is arriving soon",
        "Hi {first_name},\n\nyour driver is almost there and expected {eta_window}.\n\n"
        "See where your delivery is:\n{tracking_url}"),
    (K.DELIVERED, "en"): (
        "{merchant_name}: your parcel was delivered. Proof of delivery: {proof_url}",
        "Your {merchant_name} parcel was delivered",
        "Hi {first_name},\n\nyour parcel from {merchant_name} was delivered at {delivered_at}.\n\n"
        "See the proof of delivery:\n{proof_url}"),
    (K.FAILED, "en"): (
        "{merchant_name}: we could not deliver your parcel: {reason}. Choose a new day: {reschedule_url}",
        "We could not deliver your {merchant_name} parcel",
        "Hi {first_name},\n\nwe could not deliver your parcel from {merchant_name}: {reason}.\n\n"
        "Choose a new delivery day here:\n{reschedule_url}"),
    (K.DELAYED, "en"): (
        "{merchant_name}: sorry, your delivery is running late. Now expected {eta_window}. {tracking_url}",
        "Your {merchant_name} delivery is running late",
        "Hi {first_name},\n\nsorry, your delivery from {merchant_name} is running late. It is now expected "
        "{eta_window}.\n\nFollow it live:\n{tracking_url}"),
    (K.RESCHEDULED, "en"): (
        "{merchant_name}: your delivery is now planned for {delivery_date}, {eta_window}. {tracking_url}",
        "Your {merchant_name} delivery has a new date",
        "Hi {first_name},\n\nyour delivery from {merchant_name} is now planned for {delivery_date}, {eta_window}."
        "\n\nDetails and tracking:\n{tracking_url}"),
    (K.RETURNED, "en"): (
        "{merchant_name}: we could not deliver your parcel ({reason}) and are returning it to the sender. "
        "Please contact {merchant_name} for help. {tracking_url}",
        "Your {merchant_name} parcel is going back to the sender",
        "Hi {first_name},\n\nwe tried to deliver your parcel from {merchant_name} several times without success "
        "(last time: {reason}), so it is going back to the sender.\n\nPlease contact {merchant_name} about a new "
        "delivery or a refund. Details:\n{tracking_url}"),
    (K.CANCELLED, "en"): (
        "{merchant_name}: your delivery has been cancelled. Please contact {merchant_name} for help. {tracking_url}",
        "Your {merchant_name} delivery has been cancelled",
        "Hi {first_name},\n\nyour delivery from {merchant_name} has been cancelled, so no driver will come.\n\n"
        "If you did not expect this, please contact {merchant_name}. Details:\n{tracking_url}"),
    (K.DAY_BEFORE, "de"): (
        "{merchant_name}: Ihre Lieferung kommt morgen, {delivery_date}, {eta_window}. Verfolgen: {tracking_url}",
        "Ihre Lieferung von {merchant_name} kommt morgen",
        "Hallo {first_name},\n\nIhre Lieferung von {merchant_name} ist für morgen, {delivery_date}, {eta_window} "
        "geplant.\n\nHier können Sie sie verfolgen, dem Fahrer Hinweise geben oder einen anderen Tag wählen:\n"
        "{tracking_url}"),
    (K.OUT_FOR_DELIVERY, "de"): (
        "{merchant_name}: Ihr Paket ist in Zustellung, voraussichtlich {eta_window}. {delivery_pin_note}"
        "Live verfolgen: {tracking_url}",
        "Ihre Lieferung von {merchant_name} ist unterwegs",
        "Hallo {first_name},\n\nIhr Paket von {merchant_name} ist in Zustellung und kommt voraussichtlich "
        "{eta_window}. {delivery_pin_note}\n\nLive verfolgen:\n{tracking_url}"),
    (K.APPROACHING, "de"): (
        "{merchant_name}: Ihr Paket ist gleich da, voraussichtlich {eta_window}. {tracking_url}",
        "Ihre Lieferung von {merchant_name} ist gleich da",
        "Hallo {first_name},\n\nIhr Paket ist gleich bei Ihnen, voraussichtlich {eta_window}.\n\n"
        "Hier sehen Sie, wo Ihre Lieferung ist:\n{tracking_url}"),
    (K.DELIVERED, "de"): (
        "{merchant_name}: Ihr Paket wurde zugestellt. Zustellnachweis: {proof_url}",
        "Ihr Paket von {merchant_name} wurde zugestellt",
        "Hallo {first_name},\n\nIhr Paket von {merchant_name} wurde um {delivered_at} Uhr zugestellt.\n\n"
        "Zum Zustellnachweis:\n{proof_url}"),
    (K.FAILED, "de"): (
        "{merchant_name}: Wir konnten Ihr Paket nicht zustellen: {reason}. Neuen Tag wählen: {reschedule_url}",
        "Zustellung nicht möglich: Ihr Paket von {merchant_name}",
        "Hallo {first_name},\n\nwir konnten Ihr Paket von {merchant_name} nicht zustellen: {reason}.\n\n"
        "Hier wählen Sie einen neuen Liefertag:\n{reschedule_url}"),
    (K.DELAYED, "de"): (
        "{merchant_name}: Ihre Lieferung verspätet sich leider. Jetzt voraussichtlich {eta_window}. {tracking_url}",
        "Ihre Lieferung von {merchant_name} verspätet sich",
        "Hallo {first_name},\n\nIhre Lieferung von {merchant_name} verspätet sich leider. Sie kommt jetzt "
        "voraussichtlich {eta_window}.\n\nLive verfolgen:\n{tracking_url}"),
    (K.RESCHEDULED, "de"): (
        "{merchant_name}: Ihre Lieferung ist jetzt für {delivery_date}, {eta_window} geplant. {tracking_url}",
        "Neuer Liefertermin für Ihr Paket von {merchant_name}",
        "Hallo {first_name},\n\nIhre Lieferung von {merchant_name} ist jetzt für {delivery_date}, {eta_window} "
        "geplant.\n\nDetails und Sendungsverfolgung:\n{tracking_url}"),
    (K.RETURNED, "de"): (
        "{merchant_name}: Wir konnten Ihr Paket nicht zustellen ({reason}); es geht an den Absender zurück. "
        "Bitte wenden Sie sich an {merchant_name}. {tracking_url}",
        "Ihr Paket von {merchant_name} geht an den Absender zurück",
        "Hallo {first_name},\n\nwir haben mehrmals versucht, Ihr Paket von {merchant_name} zuzustellen (zuletzt: "
        "{reason}). Es geht nun an den Absender zurück.\n\nBitte wenden Sie sich wegen einer neuen Lieferung oder "
        "einer Erstattung an {merchant_name}. Details:\n{tracking_url}"),
    (K.CANCELLED, "de"): (
        "{merchant_name}: Ihre Lieferung wurde storniert. Bitte wenden Sie sich an {merchant_name}. {tracking_url}",
        "Ihre Lieferung von {merchant_name} wurde storniert",
        "Hallo {first_name},\n\nIhre Lieferung von {merchant_name} wurde storniert; es kommt kein Fahrer.\n\n"
        "Falls Sie das nicht erwartet haben, wenden Sie sich bitte an {merchant_name}. Details:\n{tracking_url}"),
}


def _defaults() -> dict[tuple[NotifyKind, str], dict[TemplateField, CompiledTemplate]]:
    out: dict[tuple[NotifyKind, str], dict[TemplateField, CompiledTemplate]] = {}
    for (kind, lang), texts in _DEFAULT_TEXTS.items():
        out[(kind, lang)] = {which: _compiled(kind, which, text, f"defaults.{kind.value}.{lang}.{which.value}")
                             for which, text in zip(TemplateField, texts, strict=True)}
    return out


DEFAULTS: Mapping[tuple[NotifyKind, str], Mapping[TemplateField, CompiledTemplate]] = _defaults()
DEFAULT_TEMPLATES = TemplateSet()


# --- rendering --------------------------------------------------------------------


@dataclass(frozen=True)
class RenderedSms:
    text: str
    encoding: str
    segments: int


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    text: str
    html: str


_LABELS: Mapping[str, Mapping[str, str]] = {
    "en": {"track": "Track your delivery", "proof": "See proof of delivery", "reschedule": "Choose a new day",
           "questions": "Questions? Contact", "unsubscribe": "Unsubscribe from these messages",
           "unsubscribe_text": "Unsubscribe"},
    "de": {"track": "Sendung verfolgen", "proof": "Zustellnachweis ansehen", "reschedule": "Neuen Tag wählen",
           "questions": "Fragen? Kontakt zu", "unsubscribe": "Diese Nachrichten abbestellen",
           "unsubscribe_text": "Abbestellen"},
}
_BUTTON: Mapping[NotifyKind, tuple[str, str]] = {
    K.DELIVERED: ("proof", "proof_url"),
    K.FAILED: ("reschedule", "reschedule_url"),
}


_PIN_NOTES = {"en": "Your delivery PIN: ", "de": "Ihre Liefer-PIN: "}


def delivery_pin_note(pin: str | None, locale: str | None) -> str:
    """The sentence that gives the recipient the PIN to tell the driver (empty when the stop needs none)."""
    return _PIN_NOTES[language_of(locale)] + pin + ". " if pin else ""


def message_values(branding: Branding, *, recipient_name: str | None = None, **values: str | None) -> dict[str, str]:
    """The value mapping for a message: merchant name and support contact from the branding, the
    recipient's first name, and the given values (None is left out)."""
    out = {"merchant_name": branding.name, "support_contact": branding.support_contact,
           "first_name": first_name_of(recipient_name)}
    out.update({k: v for k, v in values.items() if v is not None})
    return out


def render_sms(template: MessageTemplate, values: Mapping[str, str]) -> RenderedSms:
    text = sms_friendly(template.sms.render_text(values)).strip()
    info = sms_info(text)
    return RenderedSms(text, info.encoding, info.segments)


def render_email(kind: NotifyKind, template: MessageTemplate, values: Mapping[str, str], branding: Branding,
                 locale: str | None = "en", *, unsubscribe_url: str | None = None) -> RenderedEmail:
    """Subject, text part and HTML part. The HTML frame is the platform's; every value in it is escaped."""
    lang = language_of(locale)
    labels = _LABELS[lang]
    subject = template.email_subject.render_text(values).strip()
    esc = html.escape
    color = branding.primary
    on_color = text_on(color)
    merchant = clean_value("merchant_name", branding.name)

    unsubscribe = unsubscribe_url if unsubscribe_url and is_http_url(unsubscribe_url) else None
    support = clean_value("support_contact", branding.support_contact)
    footer_lines = [merchant] + ([support] if support else []) + (
        [f"{labels['unsubscribe_text']}: {unsubscribe}"] if unsubscribe else [])
    text = template.email_text.render_text(values).strip() + "\n\n-- \n" + "\n".join(footer_lines) + "\n"

    logo = branding.logo_url if branding.logo_url and _https_url(branding.logo_url) else None
    header = (f'<img src="{esc(logo)}" alt="{esc(merchant)}" height="40" style="display:block;border:0;height:40px">'
              if logo else f'<span style="font-size:20px;font-weight:bold">{esc(merchant)}</span>')
    label_key, url_name = _BUTTON.get(kind, ("track", "tracking_url"))
    button_url = clean_value(url_name, values.get(url_name)) or clean_value("tracking_url", values.get("tracking_url"))
    button = ""
    if is_http_url(button_url):
        button = (f'<tr><td style="padding:0 24px 24px"><a href="{esc(button_url)}" style="display:inline-block;'
                  f'background:{color};color:{on_color};padding:12px 20px;border-radius:6px;text-decoration:none;'
                  f'font-weight:bold">{esc(labels[label_key])}</a></td></tr>')
    footer = []
    if support:
        href = _support_href(branding)
        shown = f'<a href="{esc(href)}" style="color:#52525b">{esc(support)}</a>' if href else esc(support)
        footer.append(f"{esc(labels['questions'])} {esc(merchant)}: {shown}")
    if unsubscribe:
        footer.append(f'<a href="{esc(unsubscribe)}" style="color:#52525b">{esc(labels["unsubscribe"])}</a>')
    body = template.email_text.render_html(values, link_color=ink(color, WHITE))
    html_doc = (
        f'<!DOCTYPE html><html lang="{lang}"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{esc(subject)}</title></head>"
        '<body style="margin:0;padding:0;background:#f4f4f5">'
        '<table role="presentation" width="100%" cellpadding="0" cellspacing="0" style="background:#f4f4f5">'
        '<tr><td align="center" style="padding:24px 12px">'
        '<table role="presentation" width="100%" cellpadding="0" cellspacing="0" style="max-width:600px;'
        'table-layout:fixed;background:#ffffff;border-radius:8px;font-family:Arial,Helvetica,sans-serif">'
        f'<tr><td style="background:{color};color:{on_color};padding:16px 24px;border-radius:8px 8px 0 0">'
        f"{header}</td></tr>"
        # Long links (the reschedule URL) would widen the card past a phone's screen: let them break anywhere.
        f'<tr><td style="padding:24px;color:#18181b;font-size:16px;line-height:1.5;overflow-wrap:anywhere;'
        f'word-break:break-word">{body}</td></tr>'
        f"{button}"
        f'<tr><td style="padding:16px 24px;border-top:1px solid #e4e4e7;color:#52525b;font-size:12px;'
        f'line-height:1.5">{"<br>".join(footer)}</td></tr>'
        "</table></td></tr></table></body></html>"
    )
    return RenderedEmail(subject, text, html_doc)


def _https_url(value: str) -> bool:
    """An https URL fit for an email's `src`/`href` (the merchant's logo)."""
    return len(value) <= 2000 and value.startswith("https://") and is_http_url(value)


def _support_href(branding: Branding) -> str | None:
    if branding.support_email and check_email(branding.support_email) is None:
        return f"mailto:{branding.support_email}"
    if branding.support_phone and check_phone(branding.support_phone) is None:
        return f"tel:{branding.support_phone}"
    return None


def render(kind: NotifyKind, channel: str, locale: str | None, values: Mapping[str, str], branding: Branding,
           templates: TemplateSet = DEFAULT_TEMPLATES, *,
           unsubscribe_url: str | None = None) -> RenderedSms | RenderedEmail:
    """The message of `kind` for `channel` ("sms" | "email") in the recipient's locale."""
    template = templates.template(kind, locale)
    if channel == "sms":
        return render_sms(template, values)
    if channel == "email":
        return render_email(kind, template, values, branding, locale, unsubscribe_url=unsubscribe_url)
    raise ValueError(f"unknown channel {channel!r}")

