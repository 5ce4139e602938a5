"""The single-table kernel: item models and key builders (`tables`), the repository of access patterns
(`repository`), and S3 blobs (`blobs`). Nothing here imports a feature."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from chalicelib.storage.repository import Repository


_replacement: Repository | None = None


def get_repository() -> Repository:
    """The process-wide repository; pynamodb and botocore load on the first call, not at import (cold start)."""
    return _replacement if _replacement is not None else _default_repository()


@cache
def _default_repository() -> Repository:
    from chalicelib.storage.repository import Repository

    return Repository()


def use_repository(replacement: Repository | None) -> None:
    """Serve `replacement` from get_repository() (benchmarks, tests); None returns to the real one."""
    global _replacement
    _replacement = replacement
