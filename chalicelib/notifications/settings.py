"""The merchant's notification policy and template overrides, validated before storing."""

from __future__ import annotations

import json
from typing import Any

from chalicelib.core import errors
from chalicelib.storage.repository import Repository


def _problems_422(exc: Any) -> errors.DomainError:
    return errors.validation_failed([errors.FieldProblem(p.field, p.message + (
        f" (at {p.position})" if p.position is not None else "")) for p in exc.problems])


def notification_settings(repo: Repository, merchant_id: str) -> dict[str, Any]:
    """The merchant's notification policy (every kind's channels, quiet hours, freshness) and template overrides."""
    from chalicelib.notifications.dispatch import load_settings

    merchant = repo.get_merchant(merchant_id)
    from chalicelib.notifications.dispatch import load_preferences

    stored = merchant.notifications if merchant else None
    policy, templates = load_settings(stored)
    return {"policy": policy.to_dict(), "templates": templates.to_dict(),
            "preferences": load_preferences(stored).to_dict()}


def replace_notification_settings(repo: Repository, merchant_id: str, body: Any) -> dict[str, Any]:
    """Validate everything before storing anything: a template with a syntax error or an unknown placeholder
    is refused here, naming the template and the position, never at send time."""
    from chalicelib.core.problems import ProblemsError
    from chalicelib.notifications.preferences import PreferenceSettings
    from chalicelib.notifications.rules import NotificationPolicy
    from chalicelib.notifications.templates import TemplateSet

    if not isinstance(body, dict) or set(body) - {"policy", "templates", "preferences"}:
        raise errors.validation_failed([errors.FieldProblem("body", "an object with policy, templates and/or "
                                                                    "preferences")])
    odd = [name for name in ("policy", "templates", "preferences") if not isinstance(body.get(name), dict | None)]
    if odd:
        raise errors.validation_failed([errors.FieldProblem(name, "must be an object") for name in odd])
    try:
        policy = NotificationPolicy.from_dict(body.get("policy") or {}, "policy")
        templates = TemplateSet.from_dict(body.get("templates") or {}, "templates")
        preferences = PreferenceSettings.from_dict(body.get("preferences") or {}, "preferences")
    except ProblemsError as exc:
        raise _problems_422(exc) from None
    stored = {"policy": policy.to_dict(), "templates": templates.to_dict(), "preferences": preferences.to_dict()}
    repo.put_notification_settings(merchant_id, json.dumps(stored))
    return stored
