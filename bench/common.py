"""Shared by every benchmark: the app's environment, realistic pings, the in-memory repository, the printer.

Nothing from chalicelib is imported at module level: `bench.rss` measures the
peak memory of a process that imports this module, and the cold-start
benchmark's parent process should not pay for the app either.
"""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from infra.local.stack import FAKE_AWS, stage_environment

if TYPE_CHECKING:
    from chalicelib.ingest.rules import LastFix, Ping

PROJECT_ROOT = Path(__file__).resolve().parent.parent

MERCHANT_ID = "mer_bench"
DRIVER_ID = "drv_bench"
DRIVER_TOKEN = "dtk_bench-token-not-a-secret"

# Dummy credentials and region, so botocore never goes looking for real ones (IMDS, ~/.aws):
# the same set the local stack gives its children.
_AWS_ENV = FAKE_AWS
# Inherited values that would point the app somewhere else than intended.
_DROP_ENV = ("AWS_ENDPOINT_URL", "AWS_PROFILE", "DOORSTEP_DYNAMODB_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB",
             "AWS_ENDPOINT_URL_DYNAMODB_STREAMS")


# --- output ------------------------------------------------------------------------


@dataclass
class Result:
    """One figure. A target is an upper bound (`met` is value <= target) unless higher_is_better."""

    name: str
    value: float | None
    unit: str
    target: float | None
    baseline: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    higher_is_better: bool = False

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "value": self.value, "unit": self.unit, "target": self.target}
        if self.baseline is not None:
            out["baseline"] = self.baseline
        met = None
        if self.target is not None and self.value is not None:
            met = self.value >= self.target if self.higher_is_better else self.value <= self.target
        out["met"] = met
        out.update(self.extra)
        return out


def emit(result: Result) -> None:
    """The only writer to stdout: one JSON object per line, flushed so a pipe sees it at once."""
    print(json.dumps(result.as_json()), flush=True)


def log(message: str) -> None:
    """Progress goes to stderr so stdout stays machine-readable."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def p95(values: Sequence[float]) -> float:
    """The nearest-rank 95th percentile."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]


@contextmanager
def local_stack_api(merchant_name: str) -> Iterator[tuple[Any, Callable[..., Any]]]:
    """A fresh local stack (DynamoDB Local, moto server, chalice local, stream runner) on free ports and a
    merchant's API: yields (stack, call), where call(method, path, body=None, token=<merchant key>,
    headers=None) raises on a non-2xx."""
    import tempfile

    from infra.local.stack import LocalStack, create_merchant, http_json

    with tempfile.TemporaryDirectory(prefix="doorstep-bench-") as log_dir, \
            LocalStack(port=0, moto_port=0, log_dir=Path(log_dir)) as stack:
        _merchant_id, key = create_merchant(stack.app_env, merchant_name, isolated=True)

        def call(method: str, path: str, body: Any = None, token: str = key,
                 headers: dict[str, str] | None = None) -> Any:
            result = http_json(method, f"{stack.base_url}{path}", body, token=token, headers=headers, timeout=60)
            if result.status >= 300:
                raise AssertionError(f"{method} {path}: {result.status} {result.body}")
            return result.body

        yield stack, call


# --- environment -------------------------------------------------------------------


def venv_python() -> str:
    """The project's venv interpreter (what `make` uses), else whatever runs us."""
    candidate = PROJECT_ROOT / ".venv" / "bin" / "python"
    return str(candidate) if candidate.exists() else sys.executable


def child_on_dynamodb_local(args: Sequence[str], mark: str, what: str, timeout_s: float = 1800) -> Any:
    """Run `python -m <args>` in a fresh process against a fresh DynamoDB Local (a free port of 127.0.0.1,
    stopped after) and answer the JSON of its last stdout line starting with `mark`."""
    from infra.local.dynamodb_local import DynamoDBLocal

    env = dict(os.environ)
    env["PYTHONPATH"] = str(PROJECT_ROOT)
    with DynamoDBLocal() as engine:
        # chalicelib reads the first; plain boto3 clients (stream runners, meters) follow the others.
        env.update({name: engine.url for name in ("DOORSTEP_DYNAMODB_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB",
                                                  "AWS_ENDPOINT_URL_DYNAMODB_STREAMS")})
        proc = subprocess.run([venv_python(), "-m", *args], cwd=PROJECT_ROOT, env=env, capture_output=True,
                              text=True, timeout=timeout_s, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{what} child failed: {proc.stderr[-2000:]}")
    lines = [line for line in proc.stdout.splitlines() if line.startswith(mark)]
    return json.loads(lines[-1][len(mark):])


class RawBody:
    """A canned HTTP body as botocore's parsers read it (benchmarks that answer requests in process)."""

    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, *_: Any, **__: Any) -> Any:
        yield self.body


def local_env() -> dict[str, str]:
    """The `local` stage's variables from .chalice/config.json (what `chalice local` sets), plus AWS dummies.

    Read from the config rather than copied so the benchmarks follow the app's settings as they change.
    """
    env = stage_environment(PROJECT_ROOT, "local")
    env.update(_AWS_ENV)
    # The local stack passes the real base URL; a benchmark serves no links, any valid one will do.
    env.setdefault("DOORSTEP_PUBLIC_BASE_URL", "http://127.0.0.1:8000")
    return env


def subprocess_env() -> dict[str, str]:
    """Our environment (PATH, HOME...) with the app's settings on top, for fresh interpreters."""
    env = {k: v for k, v in os.environ.items() if k not in _DROP_ENV}
    env.update(local_env())
    return env


@contextmanager
def cold_start_env() -> Iterator[dict[str, str]]:
    """subprocess_env() for the cold-start children, with the bytecode a deployed package ships (infra/package.py
    adds .pyc files to the zip): the unrecorded warm-up run writes it into a temporary folder
    (PYTHONPYCACHEPREFIX, removed afterwards, so nothing is left in the tree), whatever PYTHONDONTWRITEBYTECODE
    this environment sets; both sides of a ratio read theirs from there."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="doorstep-bench-pyc-") as prefix:
        env = subprocess_env()
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = prefix
        yield env


def apply_env() -> None:
    """Install the app's settings in this process, for good (child processes that import the app)."""
    for name in _DROP_ENV:
        os.environ.pop(name, None)
    os.environ.update(local_env())


@contextmanager
def app_env() -> Iterator[None]:
    """The app's settings for the duration of an in-process benchmark, then the caller's environment again.

    Restoring matters because later benchmarks start the local stack, which must not inherit them.
    """
    saved = dict(os.environ)
    apply_env()
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


# --- realistic pings ---------------------------------------------------------------


@dataclass(frozen=True)
class TracePoint:
    fix_ms: int
    lat: float
    lng: float
    raw: dict[str, Any]  # the JSON object a phone would send for this fix


def iso_ms(ms: int) -> str:
    """RFC 3339 with milliseconds and 'Z', the way Android and browsers format fix times."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def driver_trace(count: int, *, start_ms: int, interval_ms: int = 1000, seed: int = 7,
                 origin: tuple[float, float] = (52.520008, 13.404954)) -> list[TracePoint]:
    """A van driving from `origin` (Berlin by default) at 5-14 m/s, one fix per `interval_ms`, every optional field set.

    The speed stays far below the 70 m/s plausibility limit so every fix is accepted,
    and the values carry the decimals real phones send (pydantic parses digits, not just types).
    """
    rng = random.Random(seed)
    (lat, lng), heading, speed, battery = origin, 75.0, 9.0, 87.0
    points = []
    for i in range(count):
        fix_ms = start_ms + i * interval_ms
        dt = interval_ms / 1000
        heading = (heading + rng.gauss(0, 8)) % 360
        speed = min(14.0, max(5.0, speed + rng.gauss(0, 0.6)))
        lat += speed * dt * math.cos(math.radians(heading)) / 111_320
        lng += speed * dt * math.sin(math.radians(heading)) / (111_320 * math.cos(math.radians(lat)))
        battery = max(5.0, battery - 0.002)
        fix_lat, fix_lng = round(lat, 7), round(lng, 7)
        raw: dict[str, Any] = {
            "lat": fix_lat,
            "lng": fix_lng,
            "fix_time": iso_ms(fix_ms),
            "accuracy": round(rng.uniform(3, 18), 1),
            "speed": round(speed, 2),
            "heading": round(heading, 1),
            "altitude": round(34 + rng.gauss(0, 2), 1),
            "battery": round(battery, 1),
        }
        points.append(TracePoint(fix_ms, fix_lat, fix_lng, raw))
    return points


def batches_of(points: Sequence[TracePoint], size: int) -> list[list[TracePoint]]:
    return [list(points[i:i + size]) for i in range(0, len(points) - size + 1, size)]


def now_ms() -> int:
    return int(time.time() * 1000)


# --- in-memory storage -------------------------------------------------------------


class FakeRepository:
    """The Repository methods the ping route uses, kept in dicts instead of DynamoDB.

    `put_pings` still builds every wire item with the real `fix_chunk_items`, as the
    real method does before BatchWriteItem, so the CPU cost of the item building is
    measured; only the network calls are gone.
    """

    def __init__(self) -> None:
        from chalicelib.core.config import get_settings
        from chalicelib.core.security import hash_secret
        from chalicelib.ingest.rules import LastFix
        from chalicelib.storage.repository import fix_chunk_items

        self._get_settings = get_settings
        self._last_fix_type = LastFix
        self._wire_items = fix_chunk_items
        self.items: dict[tuple[str, str], dict[str, Any]] = {}
        self.fix_times: dict[str, set[int]] = {}
        self.positions: dict[str, tuple[LastFix, str]] = {}
        self.tokens = {hash_secret(DRIVER_TOKEN): (MERCHANT_ID, DRIVER_ID)}

    def reset(self, driver_id: str, last: LastFix | None) -> None:
        """Forget stored pings and start the driver from `last`, as if earlier batches were stored elsewhere."""
        self.items.clear()
        self.fix_times.pop(driver_id, None)
        self.positions.pop(driver_id, None)
        if last is not None:
            self.positions[driver_id] = (last, "")

    # --- what services.authenticate_driver calls ---

    def driver_for_token(self, token_hash: str) -> tuple[str, str] | None:
        return self.tokens.get(token_hash)

    # --- what services.ingest_pings calls ---

    def last_fix(self, driver_id: str) -> LastFix | None:
        found = self.positions.get(driver_id)
        return found[0] if found else None

    def ingest_reads(self, driver_id: str, fix_times: Iterable[int]) -> tuple[LastFix | None, set[int]]:
        # The real method makes one Query (the chunks in the batch's range and the position item).
        return self.last_fix(driver_id), self.stored_fix_times(driver_id, fix_times)

    def stored_fix_times(self, driver_id: str, fix_times: Iterable[int]) -> set[int]:
        # The real method runs one Query over the batch's span and decodes the fix times it finds.
        return set(fix_times) & self.fix_times.get(driver_id, set())

    def put_pings(self, pings: Sequence[Ping]) -> None:
        ttl_s = self._get_settings().ping_retention_days * 86400
        # Same request shape as Repository.put_pings builds for BatchWriteItem.
        requests = [{"PutRequest": {"Item": item}} for item in self._wire_items(pings, ttl_s)]
        for request in requests:
            item = request["PutRequest"]["Item"]
            self.items[(item["PK"]["S"], item["SK"]["S"])] = item
        for p in pings:
            self.fix_times.setdefault(p.driver_id, set()).add(p.fix_ms)

    def advance_position(self, ping: Ping, coarse: str) -> bool:
        current = self.positions.get(ping.driver_id)
        if current is not None and current[0].fix_ms >= ping.fix_ms:
            return False
        self.positions[ping.driver_id] = (self._last_fix_type(ping.fix_ms, ping.lat, ping.lng), coarse)
        return True
