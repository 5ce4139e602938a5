"""Edge models of the notification settings. The policy and templates are validated by the domain's own
parsers (`rules.NotificationPolicy`, `templates.TemplateSet`), which name the template and the position of an
error; these models document their shape in OpenAPI."""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, Field

from chalicelib.core.types import Model_


class NotificationSettingsDoc(Model_):
    model_config = ConfigDict(extra="forbid")
    policy: dict[str, Any] = Field(default_factory=dict, description="channels per event kind, quiet hours, "
                                   "max_age_minutes; see the README's notification settings")
    templates: dict[str, Any] = Field(default_factory=dict, description="per kind and locale: sms, email_subject, "
                                      "email_body overrides with {placeholders}")
