"""Settings read from environment variables, validated once per cold start."""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, ValidationError, ValidationInfo, field_validator


class Settings(BaseModel):
    """Everything the app reads from its environment.

    Stage values live in `.chalice/config.json`; this model is the single place
    that turns them into typed, checked values.
    """

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
    # Lets merchant webhooks go to http:// and loopback/private addresses (a local test receiver).
    # Refused on dev and prod, where webhooks go to public https endpoints only.
    webhook_allow_local: bool = False
    # Only set on the local stack / tests (moto server); None on AWS.
    aws_endpoint_url: str | None = None
    aws_region: str = "us-east-1"


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


_ENV_NAMES = {
    "stage": "DOORSTEP_STAGE",
    "table_name": "DOORSTEP_TABLE_NAME",
    "bucket_name": "DOORSTEP_BUCKET_NAME",
    "public_base_url": "DOORSTEP_PUBLIC_BASE_URL",
    "token_secret": "DOORSTEP_TOKEN_SECRET",
    "ping_retention_days": "DOORSTEP_PING_RETENTION_DAYS",
    "max_ping_accuracy_m": "DOORSTEP_MAX_PING_ACCURACY_M",
    "max_speed_mps": "DOORSTEP_MAX_SPEED_MPS",
    "ddb_connect_timeout_s": "DOORSTEP_DDB_CONNECT_TIMEOUT_S",
    "ddb_read_timeout_s": "DOORSTEP_DDB_READ_TIMEOUT_S",
    "ddb_max_attempts": "DOORSTEP_DDB_MAX_ATTEMPTS",
    "tile_url": "DOORSTEP_TILE_URL",
    "email_sender": "DOORSTEP_EMAIL_SENDER",
    "tile_attribution": "DOORSTEP_TILE_ATTRIBUTION",
    "tracking_poll_seconds": "DOORSTEP_TRACKING_POLL_SECONDS",
    "webhook_allow_local": "DOORSTEP_WEBHOOK_ALLOW_LOCAL",
    "aws_endpoint_url": "AWS_ENDPOINT_URL",
}


class SettingsError(RuntimeError):
    """Raised at cold start when the environment is incomplete or invalid."""


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    env = os.environ if environ is None else environ
    raw: dict[str, str] = {field: env[name] for field, name in _ENV_NAMES.items() if env.get(name)}
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    if region:
        raw["aws_region"] = region
    try:
        return Settings.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{_ENV_NAMES.get(str(err['loc'][0]), err['loc'][0])}: {err['msg']}" for err in exc.errors()
        )
        raise SettingsError(f"invalid environment: {problems}") from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, validated on first use (cold start)."""
    return load_settings()
