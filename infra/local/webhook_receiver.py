"""The local stack's webhook receiver: what a merchant's endpoint would be, for the demo merchant.

    python -m infra.local.webhook_receiver --port 0 --secret-file .local/webhook-secret \
        --out .local/webhook-received.jsonl

Every POST is verified with the demo endpoint's secret (re-read from `--secret-file` on each request,
so the stack can write it after seeding) using chalicelib.domain.webhooks.verify, and recorded as one
JSON line: when it arrived, the event id, type and shipment, whether the signature was valid (and why
not), and the body. It answers 200 to every POST (a receiver that refused bad signatures would make
Doorstep retry them; the record says what was wrong). `GET /events` lists what arrived, `GET /health`
answers ok. Standard library only, plus the pure domain module.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from chalicelib.webhooks.rules import EVENT_ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, check_signature

MAX_BODY = 1024 * 1024
EVENTS_PATH = "/events"
HOOK_PATH = "/webhooks/doorstep"  # where the demo merchant's endpoint points (any POST path is accepted)


def read_secrets(path: Path) -> list[str]:
    try:
        return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except OSError:
        return []


def read_events(path: Path) -> list[dict[str, Any]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    return [json.loads(line) for line in lines if line.strip()]


class Receiver(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], secret_file: Path, out: Path) -> None:
        super().__init__(address, _Handler)
        self.secret_file = secret_file
        self.out = out
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def record(self, entry: dict[str, Any]) -> None:
        with self.lock:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            with self.out.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(entry, sort_keys=True) + "\n")


class _Handler(BaseHTTPRequestHandler):
    server: Receiver
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        sys.stderr.write("webhook-receiver %s\n" % (format % args))

    def _answer(self, status: int, data: Any) -> None:
        body = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path.split("?")[0] == EVENTS_PATH:
            self._answer(200, {"events": read_events(self.server.out)})
        elif self.path == "/health":
            self._answer(200, {"status": "ok"})
        else:
            self._answer(404, {"error": "not found"})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self._answer(413, {"error": "too large"})
            return
        raw = self.rfile.read(length)
        now = time.time()
        problem = check_signature(read_secrets(self.server.secret_file) or ["(no secret yet)"],
                                  self.headers.get(SIGNATURE_HEADER), self.headers.get(TIMESTAMP_HEADER), raw, now)
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = raw.decode("utf-8", "replace")
        data = body.get("data", {}) if isinstance(body, dict) else {}
        self.server.record({
            "received_at": now, "path": self.path, "event_id": self.headers.get(EVENT_ID_HEADER),
            "type": body.get("type") if isinstance(body, dict) else None,
            "shipment_id": data.get("shipment_id") if isinstance(data, dict) else None,
            "signature_valid": problem is None, "signature_problem": problem,
            "timestamp": self.headers.get(TIMESTAMP_HEADER), "body": body})
        self._answer(200, {"received": True})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.local.webhook_receiver", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port (printed)")
    parser.add_argument("--secret-file", type=Path, required=True, help="the endpoint's signing secret(s), one a line")
    parser.add_argument("--out", type=Path, required=True, help="JSON lines file of received events")
    args = parser.parse_args(argv)
    server = Receiver((args.host, args.port), args.secret_file, args.out)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(f"webhook receiver listening on {server.url}{HOOK_PATH}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
