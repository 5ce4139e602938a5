"""The recipient's preferences page and the one-click unsubscribe answer (HTML, no script). Pure."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from chalicelib.notifications.preferences import Scope
from chalicelib.notifications.rules import Channel, NotifyKind
from chalicelib.recipient.page import content_security_policy, document_head, theme_href
from chalicelib.web.assets import asset_url
from chalicelib.web.branding import Branding
from chalicelib.web.i18n import Translator

HEADERS = {"Content-Type": "text/html; charset=utf-8", "Referrer-Policy": "no-referrer",
           "X-Robots-Tag": "noindex, nofollow", "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store",
           "Content-Security-Policy": content_security_policy(None)}


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _page(t: Translator, title: str, branding: Branding, body: str, static_base: str, theme_base: str) -> str:
    """The page in the merchant's colours, as its tracking page (`{theme_base}/theme.css`)."""
    out = document_head(t, title, static_base)
    out.append(f'<link rel="stylesheet" href="{_e(asset_url("track.css", static_base))}">')
    out.append(f'<link rel="stylesheet" href="{_e(theme_href(theme_base, branding))}">')
    out.append("</head><body>")
    out.append(f'<header class="brand-bar"><p class="brand-name">{_e(branding.name)}</p></header>')
    out.append(f'<main id="main"><section class="card"><h1>{_e(title)}</h1>{body}</section></main>')
    out.append(f'<footer class="footer"><p>{_e(t("page.powered_by"))}</p></footer></body></html>')
    return "\n".join(out) + "\n"


def still_receive(t: Translator, merchant: str, critical: Sequence[NotifyKind]) -> str:
    if not critical:
        return t("prefs.still.nothing", merchant=merchant)
    kinds = ", ".join(t(f"prefs.kind.{k.value}") for k in critical)
    return t("prefs.still.critical", merchant=merchant, kinds=kinds)


def render_preferences(t: Translator, branding: Branding, channels: Sequence[tuple[Channel, str, Scope, bool]],
                       critical: Sequence[NotifyKind], *, action: str, static_base: str, saved: bool = False) -> str:
    """One fieldset of radio buttons per channel (`(channel, masked address, current scope, blocked by the
    provider)`): messages, not for this delivery, not for any delivery of the merchant. `action` is the page's
    own path, under which its theme is served."""
    merchant = branding.name
    parts = [f'<p class="notice" role="status">{_e(t("prefs.saved"))}</p>' if saved else "",
             f"<p>{_e(t('prefs.intro', merchant=merchant))}</p>"]
    if channels:
        parts.append(f'<form method="post" action="{_e(action)}">')
        for channel, masked, scope, provider in channels:
            name = channel.value
            parts.append(f'<fieldset><legend>{_e(t(f"prefs.channel.{name}", address=masked))}</legend>')
            for option in (Scope.NONE, Scope.DELIVERY, Scope.MERCHANT):
                checked = " checked" if option is scope else ""
                field_id = f"{name}-{option.value}"
                parts.append(f'<div class="field field--check"><input type="radio" id="{field_id}" name="{name}" '
                             f'value="{option.value}"{checked}><label for="{field_id}">'
                             f'{_e(t(f"prefs.scope.{option.value}", merchant=merchant))}</label></div>')
            if provider:
                parts.append(f'<p class="hint">{_e(t("prefs.provider_blocked"))}</p>')
            parts.append("</fieldset>")
        parts.append(f'<button type="submit">{_e(t("prefs.submit"))}</button></form>')
    else:
        parts.append(f"<p>{_e(t('prefs.no_contacts'))}</p>")
    parts.append(f'<h2>{_e(t("prefs.still.heading"))}</h2><p>{_e(still_receive(t, merchant, critical))}</p>')
    return _page(t, t("prefs.title"), branding, "".join(p for p in parts if p), static_base, action)


def render_unsubscribe(t: Translator, branding: Branding, channel: Channel, *, action: str, preferences_href: str,
                       static_base: str, done: bool, critical: Sequence[NotifyKind]) -> str:
    """Before (a button: mail scanners follow links, so a GET never unsubscribes) and after the one click. The
    theme is the preferences page's (`preferences_href`)."""
    merchant = branding.name
    if done:
        body = (f'<p role="status">{_e(t(f"unsubscribe.done.{channel.value}", merchant=merchant))}</p>'
                f"<p>{_e(still_receive(t, merchant, critical))}</p>")
    else:
        body = (f"<p>{_e(t(f'unsubscribe.ask.{channel.value}', merchant=merchant))}</p>"
                f'<form method="post" action="{_e(action)}"><input type="hidden" name="List-Unsubscribe" '
                f'value="One-Click"><button type="submit">{_e(t("unsubscribe.submit"))}</button></form>')
    body += f'<p><a href="{_e(preferences_href)}">{_e(t("unsubscribe.preferences"))}</a></p>'
    return _page(t, t("unsubscribe.title"), branding, body, static_base, preferences_href)
