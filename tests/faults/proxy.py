"""A fault-injecting HTTP proxy on 127.0.0.1 in front of a DynamoDB endpoint (moto server, DynamoDB Local, ...).

The app under test points `AWS_ENDPOINT_URL` at the proxy. By default every request is forwarded as is; a test
can then:

- `pause()` the storage: requests are held (the client times out) and, on `resume()`, forwarded late, as a
  stopped emulator process (SIGSTOP) works through its backlog when continued: writes the client gave up on
  still commit;
- add `Rule`s for some operations: answer an error without forwarding (throttling, 5xx, a cancelled
  transaction), "slow": forward, then delay the answer past the client's read timeout (a commit whose answer is
  lost), or "drop": close the connection unanswered.

It speaks HTTP/1.1 with keep-alive (botocore pools connections) and forwards with one upstream connection per
handler thread.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit


@dataclass
class Rule:
    """Applies to the next `times` requests of `operations` (None: all); kind = error | slow | drop."""

    kind: str
    operations: frozenset[str] | None = None
    times: int = 1
    status: int = 400
    code: str = ""
    reasons: tuple[str, ...] = ()
    delay_s: float = 0.0

    def matches(self, operation: str) -> bool:
        return self.times > 0 and (self.operations is None or operation in self.operations)


class FaultProxy:
    def __init__(self, upstream: str, host: str = "127.0.0.1", port: int = 0) -> None:
        self.upstream = urlsplit(upstream)
        self._lock = threading.Lock()
        self._rules: list[Rule] = []
        self._running = threading.Event()
        self._running.set()  # set = not paused
        self.forwarded: Counter[str] = Counter()
        self.injected: Counter[str] = Counter()
        proxy = self

        class Handler(_Handler):
            owner = proxy

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fault-proxy", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.resume()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *_: Any) -> None:
        self.stop()

    # --- faults ------------------------------------------------------------------------------------

    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    def add(self, rule: Rule) -> None:
        with self._lock:
            self._rules.append(rule)

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def _take_rule(self, operation: str) -> Rule | None:
        with self._lock:
            for rule in self._rules:
                if rule.matches(operation):
                    rule.times -= 1
                    self.injected[f"{rule.kind}:{operation}"] += 1
                    return rule
        return None

    def _wait_while_paused(self) -> None:
        self._running.wait()


class _Handler(BaseHTTPRequestHandler):
    owner: FaultProxy
    protocol_version = "HTTP/1.1"
    _local = threading.local()

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        operation = (self.headers.get("X-Amz-Target") or "").rpartition(".")[2]
        proxy = self.owner
        proxy._wait_while_paused()
        rule = proxy._take_rule(operation)
        if rule is not None and rule.kind == "drop":
            self.close_connection = True
            return
        if rule is not None and rule.kind == "error":
            payload: dict[str, Any] = {"__type": f"com.amazonaws.dynamodb.v20120810#{rule.code}",
                                       "message": f"injected by the fault proxy: {rule.code}"}
            if rule.reasons:
                payload["CancellationReasons"] = [{"Code": r, "Message": r} for r in rule.reasons]
            self._answer(rule.status, {"Content-Type": "application/x-amz-json-1.0"}, json.dumps(payload).encode())
            return
        try:
            status, headers, answer = self._forward(body)
        except OSError:
            self.close_connection = True
            return
        proxy.forwarded[operation] += 1
        if rule is not None and rule.kind == "slow":
            time.sleep(rule.delay_s)  # the client has given up by now; what it gets is a closed connection
        self._answer(status, headers, answer)

    def _forward(self, body: bytes) -> tuple[int, dict[str, str], bytes]:
        upstream = self.owner.upstream
        for attempt in (1, 2):
            conn = getattr(self._local, "conn", None)
            if conn is None:
                conn = http.client.HTTPConnection(upstream.hostname or "127.0.0.1", upstream.port or 80, timeout=60)
                self._local.conn = conn
            try:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                conn.request("POST", upstream.path or "/", body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
                kept = {k: v for k, v in response.getheaders()
                        if k.lower() not in ("content-length", "connection", "transfer-encoding")}
                return response.status, kept, data
            except (OSError, http.client.HTTPException):
                conn.close()
                self._local.conn = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _answer(self, status: int, headers: dict[str, str], body: bytes) -> None:
        with contextlib.suppress(OSError, socket.timeout):
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
