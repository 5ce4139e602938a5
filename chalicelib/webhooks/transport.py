"""The webhook HTTP adapter: one signed POST to a merchant's endpoint, with the address checked at send time.

Standard library only (http.client). The host is resolved now and every answer is checked
(`resolve_and_check`); the connection goes to a checked IP address, never to the name again, so DNS
rebinding cannot swap in an internal address between the check and the connect. TLS still verifies the
certificate against the URL's host name (SNI and hostname check), and the Host header is the URL's.
Redirects are not followed (a 3xx is a failed attempt), no proxy from the environment is used, and at
most `MAX_BODY_BYTES` of the answer are read.

Tests replace the transport (`Transport` protocol) to inject timeouts and 5xx answers, or give
`HttpTransport` a resolver that returns internal addresses.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

from chalicelib.webhooks.rules import CheckedTarget, resolve_and_check

SEND_TIMEOUT_S = 5.0  # per socket operation; a batch of slow endpoints must fit the function's timeout
MAX_BODY_BYTES = 1024  # enough for the delivery log's snippet; the rest of the answer is never read
USER_AGENT = "Doorstep-Webhooks/1"


@dataclass(frozen=True)
class Answer:
    """What one POST got: an HTTP status, or None with the reason there was none."""

    status: int | None
    latency_ms: int
    error: str | None = None
    body: bytes = b""


class Transport(Protocol):
    def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Answer: ...


def system_resolver(host: str) -> Iterable[str]:
    """Every address the system resolver gives for `host` (IPv4 and IPv6)."""
    return [str(info[4][0]) for info in socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)]


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """HTTP to a fixed, already checked address; the Host header still names the URL's host."""

    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to a fixed, already checked address, verifying the certificate for the URL's host name."""

    def __init__(self, host: str, port: int, address: str, timeout: float, context: ssl.SSLContext) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self._address = address
        self._tls = context

    def connect(self) -> None:
        raw = socket.create_connection((self._address, self.port), self.timeout)
        try:
            self.sock = self._tls.wrap_socket(raw, server_hostname=self.host)
        except BaseException:
            raw.close()
            raise


class HttpTransport:
    def __init__(self, *, allow_local: bool = False, resolver: Callable[[str], Iterable[str]] = system_resolver,
                 timeout: float = SEND_TIMEOUT_S, tls: ssl.SSLContext | None = None) -> None:
        self.allow_local = allow_local
        self.resolver = resolver
        self.timeout = timeout
        self.tls = tls or ssl.create_default_context()  # CERT_REQUIRED and hostname checks

    def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Answer:
        started = time.perf_counter()

        def took() -> int:
            return int((time.perf_counter() - started) * 1000)

        parts = urlsplit(url)
        host = parts.hostname or ""
        target = resolve_and_check(host, self.resolver, allow_local=self.allow_local)
        if not isinstance(target, CheckedTarget):
            return Answer(None, took(), f"refused: {target.message}")
        https = parts.scheme.lower() == "https"
        port = parts.port or (443 if https else 80)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        last_error = "no address"
        for address in target.addresses:  # every one was checked; try the next only if a connect fails
            connection: http.client.HTTPConnection = (
                _PinnedHTTPSConnection(host, port, address, self.timeout, self.tls) if https
                else _PinnedHTTPConnection(host, port, address, self.timeout))
            try:
                try:
                    connection.connect()
                except OSError as exc:
                    if isinstance(exc, ssl.SSLError):  # the address answered: the TLS failure is the answer
                        raise
                    last_error = _describe(exc)
                    continue
                connection.request("POST", path, body=body, headers={**headers, "User-Agent": USER_AGENT,
                                                                     "Connection": "close"})
                response = connection.getresponse()
                snippet = response.read(MAX_BODY_BYTES)
                return Answer(response.status, took(), None, snippet)
            except (OSError, http.client.HTTPException) as exc:
                return Answer(None, took(), _describe(exc))
            finally:
                connection.close()
        return Answer(None, took(), last_error)


def _describe(exc: BaseException) -> str:
    """A short, stable reason for the delivery log (never the body or headers that were sent)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate refused: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc.__class__.__name__}"
    if isinstance(exc, socket.timeout | TimeoutError):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    if isinstance(exc, http.client.HTTPException):
        return f"invalid HTTP answer ({exc.__class__.__name__})"
    return f"network error ({exc.__class__.__name__})"
