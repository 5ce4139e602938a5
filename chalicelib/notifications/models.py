"""Edge models of the notification settings. The policy and templates are validated by the domain's own
parsers (`rules.NotificationPolicy`, `templates.TemplateSet`), which name the template and the position of an
error; these models document their shape in OpenAPI."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field

from chalicelib.core.types import Model_, QueryInt


class NotificationSettingsDoc(Model_):
    model_config = ConfigDict(extra="forbid")
    policy: dict[str, Any] = Field(default_factory=dict, description="channels per event kind, quiet hours, "
                                   "max_age_minutes; see the README's notification settings")
    templates: dict[str, Any] = Field(default_factory=dict, description="per kind and locale: sms, email_subject, "
                                      "email_body overrides with {placeholders}")
    preferences: dict[str, Any] = Field(default_factory=dict, description="recipient preferences: critical_kinds "
                                        "(kinds a recipient's opt-out does not stop), sms_opt_out_hint (true)")


class OptOutOut(Model_):
    channel: str = Field(description="sms or email")
    contact: str = Field(description="the E.164 phone or lower-case email")
    scope: Literal["merchant", "delivery"] = Field(description="all your deliveries, or one")
    shipment_id: str | None = Field(default=None, description="the delivery, for scope delivery")
    source: str = Field(description="recipient (preferences page, unsubscribe) or provider (unreachable)")
    created_at: str | None = None


class OptOutPage(Model_):
    items: list[OptOutOut]
    next_cursor: str | None = None


class OptOutQuery(Model_):
    model_config = ConfigDict(extra="forbid")
    limit: Annotated[QueryInt, Field(ge=1, le=1000)] = 100
    cursor: Annotated[str, Field(max_length=2000)] | None = None
    format: Literal["json", "csv"] = Field(default="json", description="csv: every opt-out as one CSV document")
