"""Notification settings (policy and templates) for merchants, and the scheduled notification functions.

Locally, infra/local/scheduler.py runs every schedule declared here, faster than deployed.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from chalice.app import Blueprint, Rate, Response

from chalicelib.core.config import get_settings
from chalicelib.core.observability import flushes_metrics
from chalicelib.http.routes import Call, Routes, WebCall, html_response
from chalicelib.storage import get_repository
from chalicelib.web.api import static_base

if TYPE_CHECKING:  # the route models load on first use of a route (`Routes(models=...)`)
    from chalicelib.notifications.models import NotificationSettingsDoc, OptOutPage
    from chalicelib.notifications.optouts import PreferencesView

blueprint = Blueprint(__name__)
routes = Routes(blueprint, models="chalicelib.notifications.models")


@routes.route("/v1/notifications/settings", "GET", summary="The notification policy (channels per event, quiet "
              "hours, freshness) and template overrides", tag="notifications", response="NotificationSettingsDoc",
              errors_=(401,))
def get_notification_settings(call: Call) -> NotificationSettingsDoc:
    from chalicelib.notifications import settings
    from chalicelib.notifications.models import NotificationSettingsDoc

    return NotificationSettingsDoc.model_validate(settings.notification_settings(get_repository(),
                                                                                 call.merchant_id))


@routes.route("/v1/notifications/settings", "PUT", summary="Replace the notification policy and templates "
              "(validated before storing: a template error names the template and the position)",
              tag="notifications", body_doc="NotificationSettingsDoc", raw_body=True,
              response="NotificationSettingsDoc", errors_=(400, 401, 413, 415, 422))
def put_notification_settings(call: Call) -> NotificationSettingsDoc:
    from chalicelib.notifications import settings
    from chalicelib.notifications.models import NotificationSettingsDoc

    stored = settings.replace_notification_settings(get_repository(), call.merchant_id, call.body)
    return NotificationSettingsDoc.model_validate(stored)


# --- opt-outs: the merchant's list, the recipient's preferences page and one-click unsubscribe ---


@routes.route("/v1/opt-outs", "GET", summary="Recipients who opted out (all deliveries or one), by the recipient "
              "or the provider; ?format=csv exports them all", tag="notifications", query="OptOutQuery",
              response="OptOutPage", errors_=(400, 401, 422), text_media=("text/csv",))
def list_opt_outs(call: Call) -> OptOutPage | Response:
    from chalicelib.notifications import optouts

    if call.query.format == "csv":
        body = optouts.opt_outs_csv(get_repository(), get_settings(), call.merchant_id)
        return Response(body=body, status_code=200, headers={
            "Content-Type": "text/csv; charset=utf-8", "Cache-Control": "no-store",
            "Content-Disposition": 'attachment; filename="opt-outs.csv"'})
    return optouts.list_opt_outs(get_repository(), get_settings(), call.merchant_id, call.query.limit,
                                 call.query.cursor)


def _translator(view: PreferencesView, call: WebCall) -> Any:
    from chalicelib.web.i18n import Translator, negotiate

    # The recipient's language when the merchant gave one, else the browser's, else the merchant's default.
    if view.locale:
        return Translator(negotiate(view.locale, call.accept_language))
    accept, fallback = call.accept_language, f"{view.merchant_locale};q=0.001"
    return Translator(negotiate(None, f"{accept},{fallback}" if accept else fallback))


def _preferences_page(view: PreferencesView, call: WebCall, token: str, *, saved: bool) -> Response:
    from chalicelib.notifications.preferences import PREFERENCES_PATH
    from chalicelib.notifications.preferences_page import HEADERS, render_preferences

    channels = [(c.channel, c.masked, c.scope, c.blocked_by_provider) for c in view.channels]
    html = render_preferences(_translator(view, call), view.branding, channels, view.critical_kinds,
                              action=f"{get_settings().public_path}{PREFERENCES_PATH}/{token}",
                              static_base=static_base(), saved=saved)
    return html_response(html, 200, HEADERS)


@routes.web("/preferences/{token}")
def preferences_page(call: WebCall, token: str) -> Response:
    from chalicelib.notifications import optouts

    view = optouts.preferences_view(get_repository(), get_settings(), token)
    return _preferences_page(view, call, token, saved=call.query.get("saved") == "1")


@routes.web("/preferences/{token}/theme.css")
def preferences_theme(call: WebCall, token: str) -> Response:
    """The merchant's colours for its preferences and unsubscribe pages (the tracking page's stylesheet)."""
    from chalicelib.notifications import optouts
    from chalicelib.recipient.page import render_theme_css, theme_headers

    return html_response(render_theme_css(optouts.link_branding(get_repository(), get_settings(), token)), 200,
                         theme_headers())


@routes.web("/preferences/{token}", "POST", form=True)
def preferences_post(call: WebCall, token: str) -> Response:
    from chalicelib.core import errors
    from chalicelib.notifications import optouts
    from chalicelib.notifications.preferences import PREFERENCES_PATH, Scope
    from chalicelib.notifications.rules import Channel
    from chalicelib.recipient.forms import is_cross_site

    s = get_settings()
    if is_cross_site(call.headers, s.public_origin):
        raise errors.DomainError(errors.ErrorKind.FORBIDDEN, "form_expired", "Cross-site form posts are refused.")
    choices: dict[Channel, Scope] = {}
    for channel in Channel:
        value = call.form.get(channel.value)
        if value is not None:
            try:
                choices[channel] = Scope(value)
            except ValueError:
                raise errors.DomainError(errors.ErrorKind.INVALID, "invalid_input",
                                         f"{channel.value}: none, delivery or merchant") from None
    optouts.set_preferences(get_repository(), s, token, choices, datetime.now(UTC))
    return Response(body="", status_code=303, headers={
        "Location": f"{s.public_base_url}{PREFERENCES_PATH}/{token}?saved=1", "Cache-Control": "no-store",
        "Referrer-Policy": "no-referrer"})


def _unsubscribe_page(view: PreferencesView, call: WebCall, token: str, *, done: bool) -> Response:
    from chalicelib.notifications.preferences import PREFERENCES_PATH, UNSUBSCRIBE_PATH, link_token
    from chalicelib.notifications.preferences_page import HEADERS, render_unsubscribe

    s = get_settings()
    assert view.claim.channel is not None
    preferences = link_token(s.token_secret, type(view.claim)(view.claim.merchant_id, view.claim.shipment_id))
    html = render_unsubscribe(_translator(view, call), view.branding, view.claim.channel,
                              action=f"{s.public_path}{UNSUBSCRIBE_PATH}/{token}",
                              preferences_href=f"{s.public_path}{PREFERENCES_PATH}/{preferences}",
                              static_base=static_base(), done=done, critical=view.critical_kinds)
    return html_response(html, 200, HEADERS)


@routes.web("/unsubscribe/{token}")
def unsubscribe_page(call: WebCall, token: str) -> Response:
    """Asks first: mail scanners follow links, so a GET never unsubscribes."""
    from chalicelib.core import errors
    from chalicelib.notifications import optouts

    view = optouts.preferences_view(get_repository(), get_settings(), token)
    if view.claim.channel is None:
        raise errors.not_found("Unsubscribe link")
    return _unsubscribe_page(view, call, token, done=False)


@routes.web("/unsubscribe/{token}", "POST")
def unsubscribe_post(call: WebCall, token: str) -> Response:
    """RFC 8058 one-click: the mail client POSTs `List-Unsubscribe=One-Click` with no cookie or session; the signed
    link is the authority. Any body is accepted (urlencoded or multipart), and a repeat does nothing new."""
    from chalicelib.notifications import optouts

    view = optouts.unsubscribe(get_repository(), get_settings(), token, datetime.now(UTC))
    return _unsubscribe_page(view, call, token, done=True)


@blueprint.schedule(Rate(1, unit=Rate.MINUTES), name="release_deferred_notifications")
@flushes_metrics
def release_deferred_notifications(event: Any) -> dict[str, Any]:
    from chalicelib.notifications.schedules import release_deferred

    return release_deferred(get_repository()).as_dict()


@blueprint.schedule(Rate(1, unit=Rate.HOURS), name="day_before_reminders")
@flushes_metrics
def day_before_reminders(event: Any) -> dict[str, Any]:
    from chalicelib.notifications.schedules import send_day_before_reminders

    return send_day_before_reminders(get_repository()).as_dict()
