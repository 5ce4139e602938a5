"""The recipient's message preferences and one-click unsubscribe, and the merchant's opt-out list.

A preferences or unsubscribe link is signed (`preferences.link_token`) and names the merchant and shipment;
the contacts are the shipment's current ones. Every opt-out lives in the merchant's partition (so the merchant's
list is one Query and another merchant never reaches it): `OPTOUT#<contact key>` for all deliveries,
`OPTOUT#<contact key>#SHIPMENT#<sid>` for one. The ledger reads both before every send (`dispatch`).
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from datetime import datetime

from chalicelib.core import errors
from chalicelib.core.config import Settings
from chalicelib.core.cursors import cursor_in, cursor_out
from chalicelib.fleet.service import merchant_profile
from chalicelib.notifications.contacts import contact_key
from chalicelib.notifications.ledger import Ledger
from chalicelib.notifications.models import OptOutOut, OptOutPage
from chalicelib.notifications.preferences import (
    SOURCE_PROVIDER,
    LinkClaim,
    PreferenceSettings,
    Scope,
    delivery_key,
    mask,
    read_token,
    scope_of,
)
from chalicelib.notifications.rules import Channel, NotifyKind
from chalicelib.storage.repository import Repository
from chalicelib.storage.tables import as_dict
from chalicelib.web.branding import Branding


def ledger(repo: Repository) -> Ledger:
    return Ledger(repo.client)


@dataclass(frozen=True)
class ChannelChoice:
    channel: Channel
    masked: str
    scope: Scope
    blocked_by_provider: bool  # the carrier or mailbox refused: opting in here cannot undo it


@dataclass(frozen=True)
class PreferencesView:
    claim: LinkClaim
    branding: Branding
    locale: str | None  # the recipient's, when the merchant gave one
    merchant_locale: str
    channels: tuple[ChannelChoice, ...]
    critical_kinds: tuple[NotifyKind, ...]


@dataclass(frozen=True)
class _Resolved:
    claim: LinkClaim
    branding: Branding
    locale: str | None
    merchant_locale: str
    contacts: dict[Channel, str]  # channel -> contact key
    addresses: dict[Channel, str]
    preferences: PreferenceSettings


def _resolve(repo: Repository, settings: Settings, token: str) -> _Resolved:
    """The link's merchant and shipment, or the one 404 (forged link, shipment or merchant gone)."""
    from chalicelib.notifications.dispatch import load_preferences

    claim = read_token(settings.token_secret, token)
    shipment = repo.get_shipment(claim.merchant_id, claim.shipment_id) if claim else None
    profile = merchant_profile(repo, claim.merchant_id) if claim and shipment else None
    if claim is None or shipment is None or profile is None:
        raise errors.not_found("Preferences link")
    recipient = as_dict(shipment.recipient)
    contacts: dict[Channel, str] = {}
    addresses: dict[Channel, str] = {}
    for channel, address in ((Channel.SMS, recipient.get("phone")), (Channel.EMAIL, recipient.get("email"))):
        if address:
            try:
                contacts[channel] = contact_key(channel.value, str(address))
                addresses[channel] = str(address)
            except ValueError:
                continue
    return _Resolved(claim, Branding.of(profile.settings.branding, profile.name),
                     str(recipient["locale"]) if recipient.get("locale") else None, profile.settings.locale,
                     contacts, addresses,
                     load_preferences(profile.notifications_json))


def _stored_keys(r: _Resolved) -> list[str]:
    return [k for key in r.contacts.values() for k in (key, delivery_key(key, r.claim.shipment_id))]


def link_branding(repo: Repository, settings: Settings, token: str) -> Branding:
    """The look of the link's merchant (its pages' theme): the link resolved, no opt-out read."""
    return _resolve(repo, settings, token).branding


def preferences_view(repo: Repository, settings: Settings, token: str) -> PreferencesView:
    r = _resolve(repo, settings, token)
    found = ledger(repo).opt_outs(r.claim.merchant_id, _stored_keys(r))
    choices = tuple(ChannelChoice(channel, mask(channel, r.addresses[channel]),
                                  scope_of(key, r.claim.shipment_id, found), found.get(key) == SOURCE_PROVIDER)
                    for channel, key in r.contacts.items())
    return PreferencesView(r.claim, r.branding, r.locale, r.merchant_locale, choices,
                           tuple(sorted(r.preferences.critical_kinds, key=lambda k: k.value)))


def set_preferences(repo: Repository, settings: Settings, token: str, choices: dict[Channel, Scope],
                    now: datetime) -> None:
    """Each channel's choice: messages (both opt-outs removed), not for this delivery, or not for any."""
    r = _resolve(repo, settings, token)
    store = ledger(repo)
    for channel, scope in choices.items():
        key = r.contacts.get(channel)
        if key is None:
            continue
        one = delivery_key(key, r.claim.shipment_id)
        if scope is Scope.MERCHANT:
            store.put_recipient_opt_out(r.claim.merchant_id, key, r.claim.shipment_id, now)
            store.remove_recipient_opt_out(r.claim.merchant_id, one)
        elif scope is Scope.DELIVERY:
            store.put_recipient_opt_out(r.claim.merchant_id, one, r.claim.shipment_id, now)
            store.remove_recipient_opt_out(r.claim.merchant_id, key)
        else:
            store.remove_recipient_opt_out(r.claim.merchant_id, key)
            store.remove_recipient_opt_out(r.claim.merchant_id, one)


def unsubscribe(repo: Repository, settings: Settings, token: str, now: datetime) -> PreferencesView:
    """One click (RFC 8058): the link's channel, all deliveries of this merchant. Idempotent."""
    claim = read_token(settings.token_secret, token)
    if claim is None or claim.channel is None:
        raise errors.not_found("Unsubscribe link")
    set_preferences(repo, settings, token, {claim.channel: Scope.MERCHANT}, now)
    return preferences_view(repo, settings, token)


# --- the merchant's list ---


def _out(row: dict[str, str]) -> OptOutOut:
    key, _, shipment = row["key"].partition("#SHIPMENT#")
    channel, _, contact = key.partition(":")
    return OptOutOut(channel=channel, contact=contact, scope="delivery" if shipment else "merchant",
                     shipment_id=shipment or None, source=row["source"] or "provider",
                     created_at=row["created_at"] or None)


def list_opt_outs(repo: Repository, settings: Settings, merchant_id: str, limit: int, cursor: str | None
                  ) -> OptOutPage:
    scope = f"opt-outs:{merchant_id}"
    rows, last = ledger(repo).opt_out_page(merchant_id, limit, cursor_in(settings, scope, cursor))
    return OptOutPage(items=[_out(r) for r in rows], next_cursor=cursor_out(settings, scope, last))


_E164 = re.compile(r"^\+[0-9]{6,15}$")


def _cell(value: object) -> str:
    """A leading =, +, - or @ would be a formula in a spreadsheet: quoted as text (an E.164 number is safe)."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in "=+-@" and not _E164.match(text) else text


CSV_FIELDS = ("channel", "contact", "scope", "shipment_id", "source", "created_at")
CSV_MAX_PAGES = 100  # 100 pages of 1000: a larger export pages with the JSON list's cursor


def opt_outs_csv(repo: Repository, settings: Settings, merchant_id: str) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_FIELDS)
    cursor: str | None = None
    for _ in range(CSV_MAX_PAGES):
        page = list_opt_outs(repo, settings, merchant_id, 1000, cursor)
        for item in page.items:
            row = item.model_dump()
            # A leading =, +, - or @ would be a formula in a spreadsheet: quote it as text.
            writer.writerow([_cell(row[f]) for f in CSV_FIELDS])
        cursor = page.next_cursor
        if cursor is None:
            break
    return out.getvalue()
