"""Recipient phone numbers and email addresses: checks with a clear reason, normal forms, opt-out keys.

Used at shipment creation (refuse what SNS/SES would refuse later, with a 4xx
naming the reason) and by the notification policy (opt-outs are stored under
`contact_key`, so "+49 170 1234567" and "+491701234567" are one recipient).

Phone numbers are E.164: `+`, a country code that does not start with 0, and
7 to 15 digits in all. North American numbers (+1) are checked further: 10
national digits whose area code and exchange start with 2-9. Nothing else is
assumed about national numbering plans (no libphonenumber in the Lambda).

Email addresses are the dot-atom form of RFC 5322 that SES accepts: an ASCII
local part of at most 64 characters without quotes or comments, and a domain
name (internationalised names are accepted and stored as IDNA/punycode) with at
least two labels and a non-numeric top-level label. IP-literal domains are refused.
"""

from __future__ import annotations

import re

PHONE_MIN_DIGITS = 7  # e.g. Niue: +683 and four digits
PHONE_MAX_DIGITS = 15  # ITU-T E.164
EMAIL_MAX_LENGTH = 254  # RFC 5321 path limit minus the angle brackets
EMAIL_LOCAL_MAX_LENGTH = 64

_DIGITS = frozenset("0123456789")
_PHONE_SEPARATORS = str.maketrans("", "", " \t-.()/\u00a0")
_LOCAL_ATOM = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+$")
_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


def check_phone(value: object) -> str | None:
    """Why `value` is not an E.164 phone number, or None when it is one."""
    if not isinstance(value, str):
        return "must be a string"
    if not value:
        return "must not be empty"
    if not value.startswith("+"):
        return "must start with + and the country code (E.164, e.g. +14155550100)"
    digits = value[1:]
    if not digits or any(c not in _DIGITS for c in digits):
        return "may contain only the digits 0-9 after the + (no spaces, dashes or brackets)"
    if digits[0] == "0":
        return "country code cannot start with 0"
    if len(digits) < PHONE_MIN_DIGITS:
        return f"is too short: {len(digits)} digits, an E.164 number has at least {PHONE_MIN_DIGITS}"
    if len(digits) > PHONE_MAX_DIGITS:
        return f"is too long: {len(digits)} digits, an E.164 number has at most {PHONE_MAX_DIGITS}"
    if digits[0] == "1":
        national = digits[1:]
        if len(national) != 10:
            return f"is not a North American (+1) number: it needs 10 digits after +1, not {len(national)}"
        if national[0] in "01":
            return "is not a North American (+1) number: the area code cannot start with 0 or 1"
        if national[3] in "01":
            return "is not a North American (+1) number: the exchange cannot start with 0 or 1"
    return None


def normalize_phone(raw: str) -> str:
    """The E.164 form of a phone number typed with the usual separators ("+1 (415) 555-0100", "0049 170 ...").

    A number without an international prefix is refused rather than guessed.
    Raises ValueError with the reason.
    """
    text = raw.strip().translate(_PHONE_SEPARATORS)
    if text.startswith("00"):
        text = "+" + text[2:]
    reason = check_phone(text)
    if reason is not None:
        raise ValueError(reason)
    return text


def check_email(value: object) -> str | None:
    """Why `value` is not an email address SES can send to, or None when it is one."""
    if not isinstance(value, str):
        return "must be a string"
    if not value:
        return "must not be empty"
    if len(value) > EMAIL_MAX_LENGTH:
        return f"is too long: at most {EMAIL_MAX_LENGTH} characters"
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in value):
        return "must not contain spaces or control characters"
    if value.count("@") != 1:
        return "must contain exactly one @"
    local, domain = value.split("@")
    if not local:
        return "has nothing before the @"
    if len(local) > EMAIL_LOCAL_MAX_LENGTH:
        return f"has a part before the @ longer than {EMAIL_LOCAL_MAX_LENGTH} characters"
    if not local.isascii():
        return "must use only ASCII characters before the @"
    if local.startswith(".") or local.endswith(".") or ".." in local:
        return "must not start or end with a dot or contain two dots in a row before the @"
    if not all(_LOCAL_ATOM.match(atom) for atom in local.split(".")):
        return "contains a character that is not allowed before the @ (quotes, brackets, commas, ...)"
    return _domain_problem(domain)


def _ascii_domain(domain: str) -> str | None:
    try:
        return domain.encode("idna").decode("ascii").lower()
    except (UnicodeError, ValueError):
        return None


def _domain_problem(domain: str) -> str | None:
    if not domain:
        return "has nothing after the @"
    if domain.startswith("["):
        return "must use a domain name after the @, not an IP address"
    if domain.endswith("."):
        return "must not end with a dot"
    ascii_domain = _ascii_domain(domain)
    if ascii_domain is None:
        return "has a domain that is not a valid (internationalised) domain name"
    labels = ascii_domain.split(".")
    if len(labels) < 2:
        return "needs a domain with a dot after the @ (e.g. example.com)"
    if len(ascii_domain) > 253 or not all(_LABEL.match(label) for label in labels):
        return "has a domain that is not a valid domain name"
    if labels[-1].isdigit():
        return "must use a domain name after the @, not an IP address"
    return None


def normalize_email(raw: str) -> str:
    """The stored form: surrounding space removed, domain in lower-case ASCII (punycode). Raises ValueError."""
    text = raw.strip()
    reason = check_email(text)
    if reason is not None:
        raise ValueError(reason)
    local, domain = text.split("@")
    ascii_domain = _ascii_domain(domain)
    assert ascii_domain is not None  # check_email accepted it
    return f"{local}@{ascii_domain}"


def contact_key(channel: str, address: str) -> str:
    """The key an opt-out is stored under: `sms:+4917...` or `email:jane@example.com`.

    Email keys are lower-cased whole: most mailboxes ignore case, and an opt-out
    must rather match too much than too little. Raises ValueError on a bad address.
    """
    if channel == "sms":
        return f"sms:{normalize_phone(address)}"
    if channel == "email":
        return f"email:{normalize_email(address).lower()}"
    raise ValueError(f"unknown channel {channel!r}")
