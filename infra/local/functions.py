"""The app's Lambda functions by name, as Chalice registered them (blueprints included): the local stream runner,
scheduler and replay tool call exactly the handler that `chalice package` deploys."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def handler_of(chalice_app: Any, name: str) -> Callable[..., Any]:
    """The function behind a pure Lambda function or an event source (schedule) named `name`."""
    for function in [*getattr(chalice_app, "pure_lambda_functions", []), *getattr(chalice_app, "event_sources", [])]:
        if function.name == name:
            return handler_at(function.handler_string)
    raise KeyError(f"the app declares no Lambda function named {name!r}")


def handler_at(handler_string: str) -> Callable[..., Any]:
    module_name, _, attribute = handler_string.rpartition(".")
    handler: Callable[..., Any] = getattr(importlib.import_module(module_name), attribute)
    return handler
