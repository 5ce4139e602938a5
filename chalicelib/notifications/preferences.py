"""The recipient's say over their messages: signed links (preferences page, one-click unsubscribe), which
opt-outs block which message, and the merchant's preference settings. Pure.

Opt-outs are per merchant and contact (`contacts.contact_key`), for all deliveries of the merchant or for one
delivery. A recipient's opt-out spares the kinds the merchant marks delivery-critical; a provider's verdict
(an unreachable number, a suppressed address) blocks everything, as before.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from chalicelib.core.problems import Problem, ProblemsError
from chalicelib.core.signing import Purpose, Signer
from chalicelib.notifications.rules import Channel, NotifyKind
from chalicelib.notifications.templates import RenderedSms, sms_info

SOURCE_RECIPIENT = "recipient"
SOURCE_PROVIDER = "provider"
PREFERENCES_PATH = "/preferences"
UNSUBSCRIBE_PATH = "/unsubscribe"
ONE_CLICK = "List-Unsubscribe=One-Click"  # RFC 8058: the body a mail client POSTs


class Scope(StrEnum):
    NONE = "none"  # send me messages
    DELIVERY = "delivery"  # not for this delivery
    MERCHANT = "merchant"  # not for any delivery of this merchant


@dataclass(frozen=True)
class LinkClaim:
    """What a preferences or unsubscribe link names: the merchant, the shipment, and for an unsubscribe link
    the channel of the message it came in."""

    merchant_id: str
    shipment_id: str
    channel: Channel | None = None


def _signer(secret: str) -> Signer:
    return Signer(secret, Purpose.PREFERENCES)


def link_token(secret: str, claim: LinkClaim) -> str:
    channel = claim.channel.value if claim.channel else ""
    return _signer(secret).seal(f"{claim.merchant_id}\n{claim.shipment_id}\n{channel}".encode())


def read_token(secret: str, token: str) -> LinkClaim | None:
    """The claim of a link this stage signed; None for anything else (forged, truncated, malformed)."""
    if len(token) > 400:
        return None
    payload = _signer(secret).unseal(token)
    if payload is None:
        return None
    try:
        merchant_id, shipment_id, channel = payload.decode().split("\n")
        return LinkClaim(merchant_id, shipment_id, Channel(channel) if channel else None)
    except (UnicodeDecodeError, ValueError):
        return None


def preferences_url(base: str, secret: str, merchant_id: str, shipment_id: str) -> str:
    return f"{base}{PREFERENCES_PATH}/{link_token(secret, LinkClaim(merchant_id, shipment_id))}"


def unsubscribe_url(base: str, secret: str, merchant_id: str, shipment_id: str, channel: Channel) -> str:
    return f"{base}{UNSUBSCRIBE_PATH}/{link_token(secret, LinkClaim(merchant_id, shipment_id, channel))}"


def list_unsubscribe_headers(url: str) -> dict[str, str]:
    """RFC 2369 / RFC 8058 headers: mail clients offer one-click unsubscribe and POST `ONE_CLICK` to `url`."""
    return {"List-Unsubscribe": f"<{url}>", "List-Unsubscribe-Post": ONE_CLICK}


# --- the merchant's settings ---


@dataclass(frozen=True)
class PreferenceSettings:
    """`critical_kinds`: messages a recipient's opt-out does not stop (e.g. a failed attempt); `sms_opt_out_hint`:
    SMS end with a short opt-out hint."""

    critical_kinds: frozenset[NotifyKind] = field(default_factory=frozenset)
    sms_opt_out_hint: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"critical_kinds": sorted(k.value for k in self.critical_kinds),
                "sms_opt_out_hint": self.sms_opt_out_hint}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, prefix: str = "preferences") -> PreferenceSettings:
        data = data or {}
        known = {"critical_kinds", "sms_opt_out_hint"}
        problems = [Problem(f"{prefix}.{name}", "unknown_field", "unknown field") for name in set(data) - known]
        kinds = data.get("critical_kinds", [])
        valid = {k.value for k in NotifyKind}
        if not isinstance(kinds, list) or any(not isinstance(k, str) or k not in valid for k in kinds):
            problems.append(Problem(f"{prefix}.critical_kinds", "invalid", f"a list of: {', '.join(sorted(valid))}"))
        hint = data.get("sms_opt_out_hint", True)
        if not isinstance(hint, bool):
            problems.append(Problem(f"{prefix}.sms_opt_out_hint", "invalid", "true or false"))
        if problems:
            raise ProblemsError(problems)
        return cls(frozenset(NotifyKind(k) for k in kinds), hint)


# --- which opt-outs block a message ---


def delivery_key(contact_key: str, shipment_id: str) -> str:
    """The opt-out of one delivery, next to the merchant-wide one: `<contact key>#SHIPMENT#<sid>`."""
    return f"{contact_key}#SHIPMENT#{shipment_id}"


def blocked(kind: NotifyKind, contact_keys: Iterable[str], shipment_id: str, found: Mapping[str, str],
            settings: PreferenceSettings) -> set[str]:
    """The contact keys a message of `kind` must not go to. `found` maps the opt-out keys stored (merchant-wide
    `<key>` and this delivery's `delivery_key`) to their source. A recipient's own opt-out spares critical kinds."""
    out: set[str] = set()
    for key in contact_keys:
        for stored in (key, delivery_key(key, shipment_id)):
            source = found.get(stored)
            if source is None:
                continue
            if source != SOURCE_RECIPIENT or kind not in settings.critical_kinds:
                out.add(key)
    return out


def scope_of(contact_key: str, shipment_id: str, found: Mapping[str, str]) -> Scope:
    if contact_key in found:
        return Scope.MERCHANT
    if delivery_key(contact_key, shipment_id) in found:
        return Scope.DELIVERY
    return Scope.NONE


def mask(channel: Channel, address: str) -> str:
    """Enough of the address to recognise it, not to learn it: `•••• 4567`, `j•••@example.com`."""
    if channel is Channel.SMS:
        digits = "".join(c for c in address if c.isdigit())
        return f"\u2022\u2022\u2022\u2022 {digits[-4:]}"
    local, _, domain = address.partition("@")
    return f"{local[:1]}\u2022\u2022\u2022@{domain}"


_SMS_HINTS = {"en": "Reply STOP to opt out.", "de": "Abmelden: STOP antworten."}


def sms_opt_out_hint(message: RenderedSms, locale: str | None) -> RenderedSms:
    """The SMS with a short opt-out hint at its end (the carrier's STOP keyword: a provider opt-out follows)."""
    hint = _SMS_HINTS.get((locale or "en").split("-")[0].lower(), _SMS_HINTS["en"])
    text = f"{message.text} {hint}"
    info = sms_info(text)
    return RenderedSms(text, info.encoding, info.segments)
