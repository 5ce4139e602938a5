"""The console's merchant API models."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from chalicelib.core.types import Model_


class SignInLinkOut(Model_):
    url: str = Field(description="Opens the console signed in as this merchant; works once, then answers the "
                                 "sign-in form. Give it to one person only, like the key itself")
    expires_at: datetime = Field(description="Unused, the link stops working at this time (15 minutes)")
