"""Settings read from environment variables (`DOORSTEP_*`, plus the standard AWS ones), validated once per cold
start with pydantic.

The variables are looked up here (`DOORSTEP_<FIELD>`, or the field's alias; names case-insensitive; an empty value
counts as unset), the rules pydantic-settings applied: that package and what it imports (asyncio among them)
cost a tenth of a cold start's first ping for a dozen plain values.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from functools import lru_cache
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from pydantic.fields import FieldInfo

ENV_PREFIX = "DOORSTEP_"


class Settings(BaseModel):
    """Everything the app reads from its environment.

    Stage values live in `.chalice/config.json`; this model is the single place
    that turns them into typed, checked values.
    """

    # By field name (what load_settings passes; errors then name the field, and env_name the variable).
    model_config = ConfigDict(extra="ignore", validate_by_name=True, validate_by_alias=False, loc_by_alias=False)

    stage: Literal["local", "dev", "prod", "test"]
    table_name: str = Field(min_length=3)
    bucket_name: str = Field(min_length=3)
    public_base_url: str = Field(pattern=r"^https?://[^\s/]+(/[^\s]*)?$")
    # Signs tracking tokens and pagination cursors; 32+ characters of entropy.
    token_secret: str = Field(min_length=32)
    ping_retention_days: int = Field(default=30, ge=1, le=3650)
    max_ping_accuracy_m: float = Field(default=500.0, gt=0)
    max_speed_mps: float = Field(default=70.0, gt=0)
    # DynamoDB timeouts and attempts (first try included; botocore's standard retry mode). Together they bound
    # how long a request waits on a paused or unreachable storage before it answers 503: about
    # attempts x read timeout (3 x 3 s), well under API Gateway's 29 s and the functions' 25 s.
    ddb_connect_timeout_s: float = Field(default=1.0, gt=0, le=10)
    ddb_read_timeout_s: float = Field(default=3.0, gt=0, le=20)
    ddb_max_attempts: int = Field(default=3, ge=1, le=5)
    # Map tiles of the tracking page: a Leaflet URL template ({z}/{x}/{y}, `{s}.` allowed). None: no tiles,
    # the map still shows the driver and the destination. Its origin joins the page's CSP img-src.
    tile_url: str | None = Field(default=None, max_length=500, pattern=r"^https?://[^\s\"'<>\\`]+$")
    tile_attribution: str | None = Field(default=None, max_length=200)
    # How often an open tracking page polls its status JSON (seconds, while the tab is visible).
    tracking_poll_seconds: int = Field(default=15, ge=5, le=300)
    # The verified SES identity notification emails are sent from (the merchant's name is the display
    # name). None: email notifications are recorded as dropped, never attempted.
    email_sender: str | None = Field(default=None, max_length=254, pattern=r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")
    # How many of a stream batch's drivers the pipeline runs side by side (their DynamoDB round trips overlap).
    # 1 where the storage is not thread-safe: in-process moto, whose transactions copy the table unlocked.
    pipeline_workers: int = Field(default=8, ge=1, le=32)
    # Lets merchant webhooks go to http:// and loopback/private addresses (a local test receiver).
    # Refused on dev and prod, where webhooks go to public https endpoints only.
    webhook_allow_local: bool = False
    # Only set on the local stack / tests (moto server); None on AWS.
    aws_endpoint_url: str | None = Field(default=None, validation_alias="AWS_ENDPOINT_URL")
    # DynamoDB (and its stream) only, where it runs elsewhere than the other services: the local stack runs
    # DynamoDB Local beside moto. None: DynamoDB uses aws_endpoint_url like everything else.
    dynamodb_endpoint_url: str | None = Field(default=None, pattern=r"^https?://[^\s/]+/?$")
    aws_region: str = Field(default="us-east-1", validation_alias=AliasChoices("AWS_REGION", "AWS_DEFAULT_REGION"))

    @property
    def ddb_endpoint_url(self) -> str | None:
        """Where DynamoDB and DynamoDB Streams calls go (None on AWS: the regional endpoints)."""
        return self.dynamodb_endpoint_url or self.aws_endpoint_url

    @property
    def public_origin(self) -> str:
        """`scheme://host[:port]` of the tracking links: what a browser sends as Origin from the page."""
        parts = urlsplit(self.public_base_url)
        return f"{parts.scheme}://{parts.netloc}".lower()

    @property
    def public_path(self) -> str:
        """The path prefix of the tracking links ('' or e.g. '/api'): the page's own links start with it."""
        return urlsplit(self.public_base_url).path.rstrip("/")

    @field_validator("webhook_allow_local")
    @classmethod
    def _local_webhooks_only_locally(cls, value: bool, info: ValidationInfo) -> bool:
        if value and info.data.get("stage") in ("dev", "prod"):
            raise ValueError("may only be true on the local stage (webhooks on AWS go to public https URLs only)")
        return value

    @field_validator("tile_url")
    @classmethod
    def _tile_template(cls, value: str | None) -> str | None:
        if value is not None and not all(part in value for part in ("{z}", "{x}", "{y}")):
            raise ValueError("must be a tile URL template with {z}, {x} and {y}")
        return value


class SettingsError(RuntimeError):
    """Raised at cold start when the environment is incomplete or invalid."""


def env_name(field_name: str) -> str:
    """The environment variable a setting is read from."""
    return " or ".join(_env_names(field_name))


def _env_names(field_name: str) -> Iterator[str]:
    info: FieldInfo | None = Settings.model_fields.get(field_name)
    alias: Any = info.validation_alias if info is not None else None
    if isinstance(alias, str):
        yield alias
    elif isinstance(alias, AliasChoices):
        yield from (str(choice) for choice in alias.choices)
    else:
        yield f"{ENV_PREFIX}{field_name.upper()}"


def settings_values(environ: Mapping[str, str]) -> dict[str, str]:
    """The settings' raw values in `environ`, by field name: the first of a field's variables that is set and not
    empty (names compared case-insensitively)."""
    present = {name.lower(): value for name, value in environ.items() if value != ""}
    values: dict[str, str] = {}
    for field_name in Settings.model_fields:
        for name in _env_names(field_name):
            if name.lower() in present:
                values[field_name] = present[name.lower()]
                break
    return values


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Validate the settings from `environ` (default: the process environment); errors name the variables."""
    try:
        return Settings.model_validate(settings_values(os.environ if environ is None else environ))
    except ValidationError as exc:
        problems = "; ".join(f"{env_name(str(err['loc'][0]))}: {err['msg']}" for err in exc.errors())
        raise SettingsError(f"invalid environment: {problems}") from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, validated on first use (cold start)."""
    return load_settings()
