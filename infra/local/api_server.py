"""`chalice local` that hands every HTTP method to the app, as API Gateway hands it to Lambda.

`python -m infra.local.api_server local --port 8000 ...` takes the same arguments as `chalice local`.

Chalice's local request handler is Python's `http.server`, which knows only the methods it has a `do_<METHOD>`
for (GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS): any other (TRACE, CONNECT, PROPFIND, ...) was answered by
`http.server` itself with a 501 HTML page the app never saw. With `accept_every_method`, such a request goes
through chalice's local gateway to the app like any other, so a known path answers the app's JSON 405 in the
one error shape (with `Allow`).

With `answer_unknown_paths`, a path no route matches answers the JSON 404 of `chalicelib.http.errors` instead of
chalice's imitation of API Gateway's 403 "Missing Authentication Token": the deployed API answers the same 404
through its MISSING_AUTHENTICATION_TOKEN gateway response (infra/package.py). The test client
(`chalice.test.Client`) builds the same `LocalGateway`, so the integration tests see it too.
"""

from __future__ import annotations

import sys
from typing import Any

_METHOD_TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


def accept_every_method(handler_cls: Any = None) -> Any:
    """Make chalice's local request handler pass any method token (RFC 9110) to the app; returns the class."""
    if handler_cls is None:
        from chalice.local import ChaliceRequestHandler

        handler_cls = ChaliceRequestHandler
    if getattr(handler_cls, "_doorstep_every_method", False):
        return handler_cls

    def __getattr__(self: Any, name: str) -> Any:  # http.server looks up do_<METHOD>
        method = name[3:]
        if name.startswith("do_") and method and set(method) <= _METHOD_TOKEN:
            return self._generic_handle
        raise AttributeError(name)

    handler_cls.__getattr__ = __getattr__
    handler_cls._doorstep_every_method = True
    return handler_cls


def answer_unknown_paths(gateway_cls: Any = None) -> Any:
    """Make chalice's `LocalGateway` answer a path no route matches with the JSON 404; returns the class."""
    if gateway_cls is None:
        from chalice.local import LocalGateway

        gateway_cls = LocalGateway
    if getattr(gateway_cls, "_doorstep_unknown_paths", False):
        return gateway_cls
    original = gateway_cls.handle_request

    def handle_request(self: Any, method: str, path: str, headers: Any, body: Any) -> Any:
        try:
            self.event_converter._route_matcher.match_route(path)
        except ValueError:  # what LocalGateway turns into its 403, with or without an Authorization header
            from chalicelib.http.errors import unknown_path_response

            return unknown_path_response().to_dict()
        return original(self, method, path, headers, body)

    gateway_cls.handle_request = handle_request
    gateway_cls._doorstep_unknown_paths = True
    return gateway_cls


def deeper_listen_queue(server_cls: Any = None, size: int = 128) -> Any:
    """socketserver listens with a backlog of 5: a fleet's phones connecting at once (20 drivers, a benchmark)
    overflow it and are reset. API Gateway queues them; so does the local API with a deeper backlog."""
    if server_cls is None:
        from chalice.local import ThreadedHTTPServer

        server_cls = ThreadedHTTPServer
    server_cls.request_queue_size = max(size, getattr(server_cls, "request_queue_size", 5))
    return server_cls


def main(argv: list[str] | None = None) -> int:
    from chalice.cli import main as chalice_main

    accept_every_method()
    answer_unknown_paths()
    deeper_listen_queue()
    sys.argv = ["chalice", *(sys.argv[1:] if argv is None else argv)]
    return int(chalice_main() or 0)


if __name__ == "__main__":
    raise SystemExit(main())
