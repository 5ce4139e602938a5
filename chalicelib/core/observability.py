"""Logger and metrics (powertools). Logs carry ids and counts, never personal data."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

logger = Logger(service="doorstep")
metrics = Metrics(namespace="Doorstep", service="doorstep")

__all__ = ["MetricUnit", "flush_metrics", "flushes_metrics", "logger", "metrics"]

P = ParamSpec("P")
R = TypeVar("R")


def flush_metrics() -> None:
    """Emit collected metrics (EMF) at the end of an invocation, if there are any."""
    if metrics.metric_set:
        metrics.flush_metrics()


def flushes_metrics(handler: Callable[P, R]) -> Callable[P, R]:
    """A Lambda handler that emits its metrics when it returns or raises (one EMF line per invocation)."""
    @functools.wraps(handler)
    def wrapped(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return handler(*args, **kwargs)
        finally:
            flush_metrics()
    return wrapped
