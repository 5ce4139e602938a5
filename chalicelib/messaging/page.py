"""The tracking page's conversation section, server-side: readable and usable without JavaScript (a form post
per message or quick reply); `static/messages.js` then polls `/track/{token}/messages` and sends without a reload.

Message text is written as text (escaped) and never turned into links."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from html import escape

from chalicelib.messaging.rules import MAX_TEXT_CHARS, QUICK_REPLIES
from chalicelib.web.assets import DEFAULT_STATIC_BASE, asset_url
from chalicelib.web.i18n import Translator


def _e(value: object) -> str:
    return escape(str(value), quote=True)


@dataclass(frozen=True)
class ShownMessage:
    sender_role: str
    sender_name: str
    text: str
    sent_at: datetime
    read_by_other: bool


def _time(moment: datetime, tz: tzinfo) -> str:
    return moment.astimezone(tz).strftime("%H:%M")


def render_conversation(locale: str, messages: Sequence[ShownMessage], *, is_open: bool, csrf_token: str,
                        action_base: str, tz: tzinfo, static_base: str = DEFAULT_STATIC_BASE) -> str:
    """The section: the messages (the recipient's own as "You"), and while open a compose box and quick replies."""
    t = Translator(locale)
    items = []
    for m in messages:
        mine = m.sender_role == "recipient"
        who = t("messages.role.recipient") if mine else m.sender_name
        read = f' <span class="msg-read">{_e(t("messages.read"))}</span>' if mine and m.read_by_other else ""
        items.append(f'<li class="msg msg--{"mine" if mine else "theirs"}"><span class="msg-who">{_e(who)}</span> '
                     f'<time datetime="{_e(m.sent_at.isoformat())}">{_e(_time(m.sent_at, tz))}</time>{read}'
                     f'<p class="msg-text">{_e(m.text)}</p></li>')
    empty = f'<p class="msg-empty" data-field="messages_empty"{" hidden" if messages else ""}>' \
            f'{_e(t("messages.empty"))}</p>'
    out = ['<section class="card" id="messages" aria-labelledby="messages-h" '
           f'data-messages-url="{_e(action_base)}/messages" data-you="{_e(t("messages.role.recipient"))}" '
           f'data-read="{_e(t("messages.read"))}">',
           f'<h2 id="messages-h">{_e(t("messages.title"))}</h2>', f'<p>{_e(t("messages.intro"))}</p>', empty,
           f'<ol class="msgs" aria-live="polite" data-field="messages">{"".join(items)}</ol>']
    if is_open:
        quick = "".join(f'<button type="submit" class="quick" name="quick" value="{_e(key)}">'
                        f'{_e(t(f"messages.quick.{key}"))}</button>' for key in QUICK_REPLIES)
        out.append(f'<form method="post" action="{_e(action_base)}/messages" class="compose">'
                   f'<input type="hidden" name="csrf" value="{_e(csrf_token)}">'
                   f'<div class="field"><label for="message-text">{_e(t("messages.compose"))}</label>'
                   f'<textarea id="message-text" name="text" rows="2" maxlength="{MAX_TEXT_CHARS}"></textarea></div>'
                   f'<button type="submit" class="send">{_e(t("messages.send"))}</button>'
                   f'<div class="quick-replies" role="group" aria-label="{_e(t("messages.quick"))}">{quick}</div>'
                   '</form>')
    else:
        out.append(f'<p class="notice">{_e(t("messages.closed"))}</p>')
    out.append(f'<script src="{_e(asset_url("messages.js", static_base))}" defer></script>')
    out.append("</section>")
    return "".join(out)


def render_driver_messages(locale: str, *, static_base: str = DEFAULT_STATIC_BASE) -> str:
    """The driver app's messages card: a thread picker (dispatch, then each stop with its unread count), the
    thread, a compose box and canned replies. `static/driver_messages.js` fills it; sends go through the app's
    offline queue."""
    from chalicelib.messaging.rules import CANNED_REPLIES

    t = Translator(locale)
    canned = "".join(f'<button type="button" class="btn btn--secondary dm-canned" data-text="'
                     f'{_e(t(f"messages.canned.{key}"))}">{_e(t(f"messages.canned.{key}"))}</button>'
                     for key in CANNED_REPLIES)
    return ('<section id="dm" class="card" aria-labelledby="dm-h" '
            f'data-dispatch="{_e(t("messages.dispatch_thread"))}" data-unread="{_e(t("messages.unread"))}" '
            f'data-you="{_e(t("messages.role.recipient"))}" data-read="{_e(t("messages.read"))}" '
            f'data-queued="{_e(t("messages.queued"))}" data-stop="{_e(t("driver.route.heading"))}">'
            f'<h2 id="dm-h">{_e(t("messages.title"))} <span id="dm-total" class="badge" hidden></span></h2>'
            f'<div class="field"><label for="dm-thread">{_e(t("messages.title"))}</label>'
            f'<select id="dm-thread"><option value="">{_e(t("messages.dispatch_thread"))}</option></select></div>'
            '<ol id="dm-list" class="msgs" aria-live="polite"></ol>'
            f'<form id="dm-form" novalidate><div class="field"><label for="dm-text">{_e(t("messages.compose"))}'
            f'</label><textarea id="dm-text" rows="2" maxlength="{MAX_TEXT_CHARS}"></textarea></div>'
            f'<button type="submit" class="btn">{_e(t("messages.send"))}</button></form>'
            f'<div class="quick-replies" role="group" aria-label="{_e(t("messages.quick"))}">{canned}</div>'
            f'<script src="{_e(asset_url("driver_messages.js", static_base))}" defer></script></section>')


def render_console_messages(locale: str, *, static_base: str = DEFAULT_STATIC_BASE) -> str:
    """The dispatcher console's messages panel: a driver's thread (pick the driver), a reply box, and a
    broadcast to every driver on duty. `static/console_messages.js` fills it through the `/v1` merchant API."""
    t = Translator(locale)
    return ('<section id="messages-panel" class="panel" aria-labelledby="cm-h" '
            f'data-sent="{_e(t("messages.broadcast_sent"))}" data-read="{_e(t("messages.read"))}">'
            f'<h2 id="cm-h">{_e(t("messages.title"))}</h2>'
            f'<div class="field"><label for="cm-driver">{_e(t("messages.driver"))}</label>'
            '<select id="cm-driver"></select></div>'
            '<ol id="cm-list" class="msgs" aria-live="polite"></ol>'
            f'<form id="cm-form" class="search"><label for="cm-text">{_e(t("messages.compose"))}</label>'
            f'<textarea id="cm-text" rows="2" maxlength="{MAX_TEXT_CHARS}"></textarea>'
            f'<button type="submit" class="btn">{_e(t("messages.send"))}</button></form>'
            f'<form id="cm-broadcast" class="search"><label for="cm-broadcast-text">{_e(t("messages.broadcast"))}'
            f'</label><textarea id="cm-broadcast-text" rows="2" maxlength="{MAX_TEXT_CHARS}"></textarea>'
            f'<button type="submit" class="btn">{_e(t("messages.broadcast_send"))}</button></form>'
            '<p id="cm-status" class="empty" role="status" aria-live="polite"></p>'
            f'<script src="{_e(asset_url("console_messages.js", static_base))}" defer></script></section>')


def render_shipment_conversation(locale: str) -> str:
    """The conversation block of the console's shipment detail: the shipment's messages (recipient, driver,
    dispatch) and a reply box as dispatch. `static/console.js` fills it when it opens a shipment."""
    t = Translator(locale)
    return (f'<h3 id="detail-messages-h">{_e(t("console.detail.conversation"))}</h3>'
            f'<ol id="detail-messages" class="msgs" aria-labelledby="detail-messages-h" aria-live="polite" '
            f'data-empty="{_e(t("messages.empty"))}" data-read="{_e(t("messages.read"))}"></ol>'
            f'<form id="detail-reply" class="search"><label for="detail-reply-text">{_e(t("messages.compose"))}'
            f'</label><textarea id="detail-reply-text" rows="2" maxlength="{MAX_TEXT_CHARS}"></textarea>'
            f'<button type="submit" class="btn">{_e(t("messages.send"))}</button></form>'
            '<p id="detail-reply-status" class="empty" role="status" aria-live="polite"></p>')
