"""Notification settings (policy and templates) for merchants, and the scheduled notification functions.

Locally, infra/local/scheduler.py runs every schedule declared here, faster than deployed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chalice.app import Blueprint, Rate

from chalicelib.core.observability import flushes_metrics
from chalicelib.http.routes import Call, Routes
from chalicelib.storage import get_repository

if TYPE_CHECKING:  # the route models load on first use of a route (`Routes(models=...)`)
    from chalicelib.notifications.models import NotificationSettingsDoc

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
