"""Query models shared by every listing route."""

from __future__ import annotations

from typing import Annotated

from pydantic import ConfigDict, Field

from chalicelib.core.types import Model_, QueryInt


class Paging(Model_):
    model_config = ConfigDict(extra="forbid")
    limit: Annotated[QueryInt, Field(ge=1, le=100)] = 50
    cursor: Annotated[str, Field(max_length=2000)] | None = None
