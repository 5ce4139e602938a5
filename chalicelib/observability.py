"""Logger and metrics (powertools). Logs carry ids and counts, never personal data."""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

logger = Logger(service="doorstep")
metrics = Metrics(namespace="Doorstep", service="doorstep")

__all__ = ["MetricUnit", "flush_metrics", "logger", "metrics"]


def flush_metrics() -> None:
    """Emit collected metrics (EMF) at the end of an invocation, if there are any."""
    if metrics.metric_set:
        metrics.flush_metrics()
