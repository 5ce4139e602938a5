"""The local stack: DynamoDB Local + moto server + `chalice local`, seeded with a demo merchant.

`make run` calls `python -m infra.local.stack --port 8000 --moto-port 5001 --dynamodb-port 5002`.
Tests use `LocalStack(port=0, moto_port=0)` (free ports) and `seed_demo`.

Why it looks the way it does:

- Each child runs in its own session (process group) so that `stop()` can
  signal the whole group and nothing is left behind, and so that a Ctrl-C in
  the terminal reaches only this process, which then stops the children in
  order instead of racing them.
- DynamoDB runs on DynamoDB Local, the engine AWS ships for local development
  (infra/local/dynamodb_local.py), not on moto: its transactions, conditions and
  stream behave as on AWS. moto keeps S3, SNS, SES and KMS.
- `chalice local` overwrites os.environ with the stage's environment
  variables, but the AWS endpoints are not part of the stage config: the
  children get them, plus fake credentials, through their environment:
  AWS_ENDPOINT_URL (moto) for every service, DOORSTEP_DYNAMODB_ENDPOINT_URL
  (read by chalicelib.config) and botocore's own AWS_ENDPOINT_URL_DYNAMODB /
  AWS_ENDPOINT_URL_DYNAMODB_STREAMS (read by any plain boto3 client) for DynamoDB.
- The local stage does not name DOORSTEP_PUBLIC_BASE_URL: the stack passes the
  real base URL (its port may be chosen at run time), so tracking links are right.
- Both emulators keep everything in memory, so every start is a fresh, empty world.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import math
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Any
from zoneinfo import ZoneInfo

from infra.local.demo_plan import (
    STATION_ZONES,
    area_of,
    default_trace,
    distance_m,
    parse_gpx,
    planned_start,
    promised_window,
    stops_along_trace,
)

PROJECT_DIR = Path(__file__).resolve().parents[2]
LOCAL_DIR = PROJECT_DIR / ".local"
DEFAULT_DEMO_PATH = LOCAL_DIR / "demo.json"
DEFAULT_LOG_DIR = LOCAL_DIR / "logs"
BUILTIN_ROUTE = PROJECT_DIR / "events" / "demo_route.json"
HOST = "127.0.0.1"
STAGE = "local"
DEMO_KEYS = ("base_url", "merchant_api_key", "driver_id", "driver_token", "route_id", "shipment_ids",
             "tracking_urls")

# Fake credentials: the local stack must never reach a real AWS account.
FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_ACCOUNT_ID_ENDPOINT_MODE": "disabled",
    # A developer's ~/.aws config (profiles, per-service endpoints) must not leak in.
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}

# Station codes of the ALMRRC data start with "D" + a metro code.
STATION_CITIES = {"CH": "Chicago", "LA": "Los Angeles", "SE": "Seattle", "BO": "Boston", "AU": "Austin"}


class StackError(RuntimeError):
    """The local stack could not start (busy port, a child died, a timeout)."""


class PortBusyError(StackError):
    """A port the stack needs is already taken."""


class SeedError(RuntimeError):
    """An API call of the demo seeding failed."""


# --- small HTTP client (stdlib only; shared by seeding, simulate and the e2e tests) ----------


@dataclass(frozen=True)
class HttpResult:
    status: int
    headers: dict[str, str]
    body: Any

    def ok(self) -> bool:
        return 200 <= self.status < 300


# The stack is on 127.0.0.1: an http_proxy from the environment must never be used for it.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_json(method: str, url: str, body: Any = None, *, token: str | None = None,
              headers: Mapping[str, str] | None = None, timeout: float = 10.0) -> HttpResult:
    """One JSON request; HTTP errors come back as results, connection errors raise URLError."""
    data = json.dumps(body).encode() if body is not None else None
    sent = {"Accept": "application/json"}
    if data is not None:
        sent["Content-Type"] = "application/json"
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    sent.update(headers or {})
    request = urllib.request.Request(url, data=data, method=method, headers=sent)
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            return _result(response.status, response.headers, response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return _result(exc.code, exc.headers, exc.read())


def _result(status: int, headers: Any, raw: bytes) -> HttpResult:
    try:
        body: Any = json.loads(raw) if raw else None
    except ValueError:
        body = raw.decode("utf-8", "replace")
    return HttpResult(status, {k.lower(): v for k, v in headers.items()}, body)


# --- configuration ------------------------------------------------------------------------


def stage_environment(project_dir: Path = PROJECT_DIR, stage: str = STAGE) -> dict[str, str]:
    """The environment `chalice local --stage <stage>` gives the app (global, then stage values)."""
    with (project_dir / ".chalice" / "config.json").open(encoding="utf-8") as fh:
        config: dict[str, Any] = json.load(fh)
    if stage not in config.get("stages", {}):
        raise StackError(f"stage {stage!r} is not defined in .chalice/config.json")
    env = {k: str(v) for k, v in config.get("environment_variables", {}).items()}
    env.update({k: str(v) for k, v in config["stages"][stage].get("environment_variables", {}).items()})
    return env


def app_environment(moto_url: str, project_dir: Path = PROJECT_DIR, stage: str = STAGE,
                    base_url: str | None = None, tile_url: str | None = None,
                    dynamodb_url: str | None = None) -> dict[str, str]:
    """What the app sees when it runs against the local stack: stage settings + endpoints + fake creds.

    `dynamodb_url` is DynamoDB Local's; without it DynamoDB goes to moto like everything else.

    The local stage leaves DOORSTEP_PUBLIC_BASE_URL out of .chalice/config.json on purpose: the
    stack knows the real port, and `chalice local` only overwrites variables the stage names.
    Likewise DOORSTEP_TILE_URL: none by default (the tracking map shows its markers on a plain
    background, and nothing outside this machine is contacted), `--tile-url` to try real tiles.
    """
    env = {**stage_environment(project_dir, stage), **FAKE_AWS, "AWS_ENDPOINT_URL": moto_url}
    if dynamodb_url:
        env.update({"DOORSTEP_DYNAMODB_ENDPOINT_URL": dynamodb_url, "AWS_ENDPOINT_URL_DYNAMODB": dynamodb_url,
                    "AWS_ENDPOINT_URL_DYNAMODB_STREAMS": dynamodb_url})
    env["DOORSTEP_PUBLIC_BASE_URL"] = base_url or env.get("DOORSTEP_PUBLIC_BASE_URL", f"http://{HOST}:8000")
    if tile_url:
        env["DOORSTEP_TILE_URL"] = tile_url
    return env


def child_environment(app_env: Mapping[str, str]) -> dict[str, str]:
    """A child's environment: ours, minus anything AWS/Doorstep that could point elsewhere."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_", "DOORSTEP_"))}
    env.update(app_env)
    env["PYTHONUNBUFFERED"] = "1"  # logs reach the file as they happen, also when a child crashes
    for name in ("NO_PROXY", "no_proxy"):
        env[name] = ",".join(filter(None, [env.get(name, ""), "127.0.0.1", "localhost"]))
    return env


def default_data_dir(project_dir: Path = PROJECT_DIR) -> Path:
    """Real test material lives beside the project (../shared/data), never inside it."""
    configured = os.environ.get("DOORSTEP_SHARED_DATA")
    return Path(configured) if configured else project_dir.parent / "shared" / "data"


def _check_port_free(port: int, what: str) -> None:
    # SO_REUSEADDR like the servers themselves, so a socket in TIME_WAIT from the previous run
    # does not count as busy while a listening one does.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            raise PortBusyError(
                f"port {port} on {HOST} is already in use (needed for {what}). Stop whatever listens there "
                f"(an earlier `make run`?) or choose another port: make run PORT=... MOTO_PORT=... DYNAMODB_PORT=..."
            ) from None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


# --- children -----------------------------------------------------------------------------


@dataclass
class _Child:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    pump: threading.Thread | None = None
    log_file: IO[bytes] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid


def _pump_redacted(source: IO[bytes], sink: IO[bytes]) -> None:
    """Copy a child's output to its log, masking the secrets in request targets (infra/local/redact.py:
    tracking and driver app tokens, tracker query strings such as /osmand?id=..., any id=/token= parameter)."""
    from infra.local.redact import redact_line

    with contextlib.suppress(ValueError, OSError):
        for line in iter(source.readline, b""):
            sink.write(redact_line(line.decode("utf-8", "replace")).encode())
            sink.flush()


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    return "\n".join("    " + line for line in text)


class LocalStack:
    """DynamoDB Local + moto server + `chalice local` on 127.0.0.1, with the table and bucket created.

    Use as a context manager, or call start() and stop(). Port 0 picks a free port.
    """

    def __init__(self, port: int = 8000, moto_port: int = 5001, *, dynamodb_port: int = 0,
                 project_dir: Path = PROJECT_DIR, log_dir: Path | None = None, stage: str = STAGE,
                 startup_timeout: float = 30.0, tile_url: str | None = None, stream_runner: bool = True) -> None:
        self.project_dir = project_dir
        # False: the caller runs the stream functions itself (a benchmark that watches the runner's progress).
        self.stream_runner = stream_runner
        self.tile_url = tile_url
        self.log_dir = log_dir if log_dir is not None else project_dir / ".local" / "logs"
        self.stage = stage
        self.startup_timeout = startup_timeout
        self._requested = (port, moto_port, dynamodb_port)
        self.port = port
        self.moto_port = moto_port
        self.dynamodb_port = dynamodb_port
        self.webhook_port = 0  # the bundled webhook receiver's, chosen at start
        self._children: list[_Child] = []
        self._stopping = False

    # --- addresses and environment -----------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def moto_url(self) -> str:
        return f"http://{HOST}:{self.moto_port}"

    @property
    def dynamodb_url(self) -> str:
        return f"http://{HOST}:{self.dynamodb_port}"

    @property
    def app_env(self) -> dict[str, str]:
        """The app's environment against this stack's emulators (for seed_demo and create_merchant)."""
        return app_environment(self.moto_url, self.project_dir, self.stage, self.base_url, self.tile_url,
                               self.dynamodb_url)

    def emulator_pids(self) -> dict[str, int]:
        """The local AWS processes (moto, DynamoDB Local) by name, e.g. to measure their memory."""
        return {c.name: c.pid for c in self._children if c.name in ("moto", "dynamodb")}

    @property
    def data_dir(self) -> Path:
        """Where the stack keeps run state beside its logs (.local for `make run`)."""
        return self.log_dir.parent

    @property
    def webhook_receiver_url(self) -> str:
        return f"http://{HOST}:{self.webhook_port}"

    @property
    def webhook_endpoint_url(self) -> str:
        """The URL the demo merchant's webhook endpoint points at (the bundled receiver)."""
        from infra.local.webhook_receiver import HOOK_PATH

        return self.webhook_receiver_url + HOOK_PATH

    @property
    def webhook_secret_file(self) -> Path:
        return self.data_dir / "webhook-secret"

    @property
    def webhook_events_file(self) -> Path:
        return self.data_dir / "webhook-received.jsonl"

    @property
    def pids(self) -> list[int]:
        return [child.pid for child in self._children]

    @property
    def log_paths(self) -> dict[str, Path]:
        return {child.name: child.log_path for child in self._children}

    # --- lifecycle ---------------------------------------------------------------------

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> LocalStack:
        if self._children:
            raise StackError("the stack is already started")
        port, moto_port, dynamodb_port = self._requested
        fixed = [p for p in (port, moto_port, dynamodb_port) if p]
        if len(fixed) != len(set(fixed)):
            raise PortBusyError(f"the API, moto and DynamoDB Local need three different ports, not {fixed}")
        # Check the ports before starting anything, so a busy port fails fast and leaves nothing behind.
        if port:
            _check_port_free(port, "the API (chalice local)")
        if moto_port:
            _check_port_free(moto_port, "the AWS emulator (moto server)")
        if dynamodb_port:
            _check_port_free(dynamodb_port, "DynamoDB Local")
        chosen: set[int] = set(fixed)

        def pick(requested: int) -> int:
            if requested:
                return requested
            picked = _free_port()
            while picked in chosen:
                picked = _free_port()
            chosen.add(picked)
            return picked

        self.moto_port, self.port, self.dynamodb_port = pick(moto_port), pick(port), pick(dynamodb_port)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        atexit.register(self.stop)  # an exception in the caller must not orphan the servers
        self._stopping = False
        try:
            env = child_environment(self.app_env)
            bin_dir = self.project_dir / ".venv" / "bin"
            dynamodb = self._spawn_dynamodb_local(env)
            # The venv's moto_server, by path: an older system one may come first on PATH.
            moto = self._spawn("moto", [str(bin_dir / "moto_server"), "-H", HOST, "-p", str(self.moto_port)], env)
            # chalice does not talk to AWS until a request arrives, so it starts while moto warms up.
            # `chalice local`, passing every HTTP method to the app (TRACE answers its JSON 405, not a 501 page).
            chalice = self._spawn("chalice", [str(bin_dir / "python"), "-m", "infra.local.api_server", "local",
                                              "--no-autoreload", "--stage", self.stage, "--host", HOST,
                                              "--port", str(self.port)], env, redact=True)
            deadline = time.monotonic() + self.startup_timeout
            self._wait_until(moto, f"{self.moto_url}/moto-api/", deadline, any_status=True)
            self._wait_until(dynamodb, self.dynamodb_url, deadline, any_status=True)
            self._create_resources()
            # The stream runner feeds the app's stream function, as Lambda's event source mapping would.
            if self.stream_runner:
                self._spawn("streams", [str(bin_dir / "python"), "-m", "infra.local.streams"], env)
            # EventBridge's part: the app's scheduled functions (deferred messages, reminders).
            self._spawn("scheduler", [str(bin_dir / "python"), "-m", "infra.local.scheduler"], env)
            # The demo merchant's webhook endpoint: verifies each POST's signature and records it.
            self.webhook_port = _free_port()
            for stale in (self.webhook_secret_file, self.webhook_events_file):  # moto starts empty: so does it
                stale.unlink(missing_ok=True)
            receiver = self._spawn("webhooks", [str(bin_dir / "python"), "-m", "infra.local.webhook_receiver",
                                                "--port", str(self.webhook_port), "--secret-file",
                                                str(self.webhook_secret_file), "--out",
                                                str(self.webhook_events_file)], env)
            self._wait_until(chalice, f"{self.base_url}/health", deadline, any_status=False)
            self._wait_until(receiver, f"{self.webhook_receiver_url}/health", deadline, any_status=False)
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn_dynamodb_local(self, env: Mapping[str, str]) -> _Child:
        from infra.local import dynamodb_local

        java = dynamodb_local.java_executable()
        if java is None:
            raise StackError("Java 17 is needed to run DynamoDB Local "
                             "(Debian: apt-get install openjdk-17-jre-headless)")
        try:
            jar = dynamodb_local.ensure_installed()
        except dynamodb_local.DynamoDBLocalError as exc:
            raise StackError(f"{exc} (or run `make dynamodb-local`)") from None
        # It reads no AWS settings; the environment only gives it PATH and friends.
        return self._spawn("dynamodb", dynamodb_local.command(self.dynamodb_port, java), env, cwd=jar.parent)

    def _spawn(self, name: str, argv: Sequence[str], env: Mapping[str, str], redact: bool = False,
               cwd: Path | None = None) -> _Child:
        if not Path(argv[0]).exists():
            raise StackError(f"{argv[0]} not found: run `make venv` first")
        log_path = self.log_dir / f"{name}.log"
        log_file = log_path.open("wb")
        process = subprocess.Popen(
            list(argv), cwd=cwd or self.project_dir, env=dict(env), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if redact else log_file, stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: stop() signals the group, Ctrl-C does not
        )
        child = _Child(name, process, log_path, log_file=log_file)
        if redact:
            assert process.stdout is not None
            child.pump = threading.Thread(target=_pump_redacted, args=(process.stdout, log_file),
                                          name=f"{name}-log", daemon=True)
            child.pump.start()
        self._children.append(child)
        return child

    def _wait_until(self, child: _Child, url: str, deadline: float, *, any_status: bool) -> None:
        last_error = "no answer"
        while time.monotonic() < deadline:
            code = child.process.poll()
            if code is not None:
                raise StackError(f"{child.name} exited with code {code} during startup; "
                                 f"log {child.log_path}:\n{_log_tail(child.log_path)}")
            try:
                result = http_json("GET", url, timeout=1.0)
                if any_status or result.status == 200:
                    return
                last_error = f"HTTP {result.status}"
            except (urllib.error.URLError, OSError) as exc:
                last_error = str(exc)
            time.sleep(0.1)
        raise StackError(f"{child.name} did not answer {url} within {self.startup_timeout:.0f} s ({last_error}); "
                         f"log {child.log_path}:\n{_log_tail(child.log_path)}")

    def _create_resources(self) -> None:
        import boto3

        from infra.local.resources import create_bucket, create_table

        env = self.app_env
        # Explicit endpoint and credentials: whatever this process's environment says does not matter.
        session = boto3.session.Session(aws_access_key_id=FAKE_AWS["AWS_ACCESS_KEY_ID"],
                                        aws_secret_access_key=FAKE_AWS["AWS_SECRET_ACCESS_KEY"],
                                        region_name=FAKE_AWS["AWS_DEFAULT_REGION"])
        create_table(session.client("dynamodb", endpoint_url=self.dynamodb_url), env["DOORSTEP_TABLE_NAME"])
        # The driver web app (served by the API) uploads proof photos straight to the bucket: CORS for its origin.
        create_bucket(session.client("s3", endpoint_url=self.moto_url), env["DOORSTEP_BUCKET_NAME"],
                      cors_origins=[self.base_url])
        if env.get("DOORSTEP_EMAIL_SENDER"):  # SES (and moto) refuse unverified senders
            session.client("ses", endpoint_url=self.moto_url).verify_email_identity(
                EmailAddress=env["DOORSTEP_EMAIL_SENDER"])

    def dead_children(self) -> list[tuple[str, int, Path]]:
        """Children that exited on their own: (name, exit code, log path)."""
        return [(c.name, code, c.log_path) for c in self._children
                if (code := c.process.poll()) is not None]

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM each child's process group, SIGKILL what is left after `timeout`; idempotent."""
        if self._stopping:
            return
        self._stopping = True
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)
        # The API first, so no request is in flight against a vanished emulator.
        for child in reversed(self._children):
            self._terminate(child, timeout)
        for child in self._children:
            if child.pump is not None:
                child.pump.join(timeout=2)
            if child.log_file is not None:
                child.log_file.close()
        self._children = []

    @staticmethod
    def _terminate(child: _Child, timeout: float) -> None:
        pgid = child.pid  # start_new_session made the child the leader of its own group
        if child.process.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.process.wait(timeout=timeout)
        # Whatever the leader left in its group (none today; a future reloader or worker would).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.process.wait(timeout=timeout)


# --- merchants (in process, against moto) ------------------------------------------------


def create_merchant(env: Mapping[str, str], name: str, *, isolated: bool = False) -> tuple[str, str]:
    """Create a merchant with chalicelib.services against the stack's moto; returns (id, API key).

    There is no HTTP endpoint for merchants (they are provisioned by an operator), so this calls
    the service directly. `isolated=True` does it in a fresh interpreter: use that from a process
    that already imported chalicelib with other settings (a pytest session), because chalicelib
    binds its table name and endpoint at import time.
    """
    if not isolated:
        return _create_merchant_here(env, name)
    merchant_id, api_key = _run_isolated(env, "_create_merchant_here", name)
    return str(merchant_id), str(api_key)


def recipient_message(env: Mapping[str, str], merchant_id: str, shipment_id: str, text: str, *,
                      isolated: bool = False) -> str:
    """A message from the shipment's recipient, as their tracking page sends it (the messaging service; the
    page's own form needs its CSRF token); returns its id. Once per shipment: a repeat stores nothing more."""
    if not isolated:
        return _recipient_message_here(env, merchant_id, shipment_id, text)
    return str(_run_isolated(env, "_recipient_message_here", merchant_id, shipment_id, text))


def _recipient_message_here(env: Mapping[str, str], merchant_id: str, shipment_id: str, text: str) -> str:
    _configure_here(env)
    from chalicelib.core.errors import DomainError
    from chalicelib.messaging import service as messaging
    from chalicelib.storage.repository import Repository

    repo = Repository()
    shipment = repo.get_shipment(merchant_id, shipment_id)
    if shipment is None:
        raise SeedError(f"no shipment {shipment_id} to message about")
    try:
        sent = messaging.recipient_send(repo, shipment, text, datetime.now(UTC), once_key=f"demo-{shipment_id}")
    except DomainError as exc:  # duplicate_message: this shipment's demo message is there already
        if exc.code != "duplicate_message":
            raise
        return ""
    return str(sent.id)


def _run_isolated(env: Mapping[str, str], function: str, *args: str) -> Any:
    """`infra.local.stack.<function>(env, *args)` in a fresh interpreter (see create_merchant); its JSON answer."""
    code = ("import json, os, sys\n"
            f"from infra.local.stack import {function}\n"
            f"print(json.dumps({function}(dict(os.environ), *sys.argv[1:])))\n")
    proc = subprocess.run([sys.executable, "-c", code, *args], cwd=PROJECT_DIR, env=child_environment(env),
                          capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode != 0:
        raise SeedError(f"{function} failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _configure_here(env: Mapping[str, str]) -> None:
    """Point this process's chalicelib at the stack (once; refused when it already serves another table)."""
    wanted_table = env["DOORSTEP_TABLE_NAME"]
    wanted_endpoint = env.get("DOORSTEP_DYNAMODB_ENDPOINT_URL") or env["AWS_ENDPOINT_URL"]
    if "chalicelib.storage.tables" in sys.modules:
        from chalicelib.core.config import get_settings

        current = get_settings()
        if (current.table_name, current.ddb_endpoint_url) != (wanted_table, wanted_endpoint):
            raise SeedError("chalicelib is already configured for another table/endpoint in this process; "
                            "use create_merchant(..., isolated=True)")
    else:
        for key in [k for k in os.environ if k.startswith("AWS_")]:
            del os.environ[key]  # e.g. an AWS_PROFILE that does not exist here would break boto3
        os.environ.update(env)
        if "chalicelib.core.config" in sys.modules:
            from chalicelib.core.config import get_settings

            get_settings.cache_clear()  # settings read before the environment was set


def _create_merchant_here(env: Mapping[str, str], name: str) -> tuple[str, str]:
    _configure_here(env)
    from chalicelib.fleet import service as fleet
    from chalicelib.storage.repository import Repository

    merchant_id, api_key = fleet.create_merchant(Repository(), name)
    return merchant_id, api_key


# --- demo data ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoStop:
    stop_id: str
    lat: float
    lng: float
    kind: str = "onward"  # "stay" / "pass-by": on the trace `make simulate` plays; "onward": after its end


@dataclass(frozen=True)
class DemoRoute:
    source: str
    city: str
    time_zone: str
    stops: list[DemoStop]
    trace: Path | None = None  # the trace its first stops lie along (None: an ALMRRC route chosen by --route)

    @property
    def visited(self) -> int:
        """How many of the first stops the trace reaches."""
        return sum(1 for s in self.stops if s.kind != "onward")


def _is_text(value: Any) -> bool:
    # The ALMRRC files write missing values as NaN (a float), present ones as strings.
    return isinstance(value, str) and bool(value.strip())


def _almrrc(data_dir: Path) -> tuple[dict[str, Any], dict[str, Any]] | None:
    folder = data_dir / "routes" / "almrrc2021"
    files = [folder / n for n in ("new_route_data.json", "new_actual_sequences.json")]
    if not all(f.is_file() for f in files):
        return None
    # json accepts the NaN literals these files contain.
    routes, sequences = (json.loads(f.read_text(encoding="utf-8")) for f in files)
    return routes, sequences


def _driven_order(routes: Mapping[str, Any], sequences: Mapping[str, Any], route_id: str) -> list[str]:
    order: dict[str, int] = sequences.get(route_id, {}).get("actual", {})
    stops = routes[route_id]["stops"]
    return [s for s in sorted(stops, key=lambda s: order.get(s, math.inf)) if stops[s].get("type") != "Station"]


def load_real_route(data_dir: Path, stops: int, choice: str) -> DemoRoute | None:
    """The ALMRRC route whose id or station code is `choice` (`make run` with --route): its first stops in the
    order actually driven, in its metro's time zone. None without the data."""
    loaded = _almrrc(data_dir)
    if loaded is None:
        return None
    routes, sequences = loaded
    matches = [rid for rid, r in routes.items() if choice in (rid, r.get("station_code"))]
    if not matches:
        raise SeedError(f"no route {choice!r} in {data_dir / 'routes' / 'almrrc2021'} "
                        "(give a route id or a station code such as DSE4)")
    route_id = matches[0]
    station = str(routes[route_id].get("station_code") or "")
    picked = [DemoStop(sid, float(routes[route_id]["stops"][sid]["lat"]), float(routes[route_id]["stops"][sid]["lng"]))
              for sid in _driven_order(routes, sequences, route_id)[:stops]]
    return DemoRoute(source=f"almrrc2021 {route_id} (station {station})",
                     city=STATION_CITIES.get(station[1:3], "Demo City"),
                     time_zone=STATION_ZONES.get(station[1:3], "UTC"), stops=picked)


ONWARD_MAX_KM = 5.0  # a real route's stops this close to the trace's end continue the demo's day
# Onward stops keep farther from the trace's stops than the merchant's default approach distance (500 m), so the
# simulated drive announces none of them.
ONWARD_MIN_GAP_M = 600.0


def _onward_stops(data_dir: Path, builtin_route: Path, after: DemoStop, avoid: Sequence[DemoStop],
                  count: int) -> tuple[list[DemoStop], str]:
    """`count` stops for the rest of the day after the trace's last stop: those of the real ALMRRC route
    passing nearest to it (within ONWARD_MAX_KM), chained nearest-first from the trace's end, then the
    bundled invented ones (events/demo_route.json) as needed; none within ONWARD_MIN_GAP_M of `avoid`
    (the stops on the trace)."""
    def clear(lat: float, lng: float) -> bool:
        return all(distance_m(lat, lng, s.lat, s.lng) >= ONWARD_MIN_GAP_M for s in avoid)

    candidates: list[DemoStop] = []
    sources = []
    loaded = _almrrc(data_dir) if count else None
    if loaded is not None:
        routes, sequences = loaded
        best: tuple[float, str] | None = None
        for route_id, route in routes.items():
            for sid in _driven_order(routes, sequences, route_id):
                gap = distance_m(after.lat, after.lng, float(route["stops"][sid]["lat"]),
                                 float(route["stops"][sid]["lng"]))
                if gap <= ONWARD_MAX_KM * 1000 and (best is None or gap < best[0]):
                    best = (gap, route_id)
        if best is not None:
            route_id = best[1]
            stops_of = routes[route_id]["stops"]
            candidates = [DemoStop(sid, float(stops_of[sid]["lat"]), float(stops_of[sid]["lng"]))
                          for sid in _driven_order(routes, sequences, route_id)]
            sources.append(f"almrrc2021 {route_id} (station {routes[route_id].get('station_code')})")
    picked: list[DemoStop] = []
    here = after
    pool = [c for c in candidates if clear(c.lat, c.lng)]
    while pool and len(picked) < count:  # a plausible drive: always the nearest stop not yet served
        here = min(pool, key=lambda c: distance_m(here.lat, here.lng, c.lat, c.lng))
        pool.remove(here)
        picked.append(here)
    if len(picked) < count:
        data: dict[str, Any] = json.loads(builtin_route.read_text(encoding="utf-8"))
        for stop in data["onward_stops"]:
            if len(picked) < count and clear(float(stop["lat"]), float(stop["lng"])):
                picked.append(DemoStop(str(stop["id"]), float(stop["lat"]), float(stop["lng"])))
        sources.append(f"built-in {builtin_route.name}")
    return picked, " + ".join(sources)


def trace_route(data_dir: Path, builtin_route: Path, stops: int, trace: Path) -> DemoRoute:
    """The demo route along `trace`: the places its driver reaches first (stays, and pass-by points when it
    has fewer than three), then stops for the rest of the day; in the trace's city and time zone."""
    fixes = parse_gpx(trace)
    if not fixes:
        raise SeedError(f"{trace} has no track points with a time")
    on_trace = stops_along_trace(fixes)[:stops]
    visited = [DemoStop(f"T{n}", s.lat, s.lng, s.kind) for n, s in enumerate(on_trace, start=1)]
    onward, onward_source = (_onward_stops(data_dir, builtin_route, visited[-1], visited, stops - len(visited))
                             if visited else ([], ""))
    city, zone = area_of(fixes[0].lat, fixes[0].lng) or ("Demo City", "UTC")
    source = f"{len(visited)} stops along {trace.name}" + (f", then {onward_source}" if onward else "")
    return DemoRoute(source=source, city=city, time_zone=zone, stops=visited + onward, trace=trace)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def tracking_json_url(tracking_url: str) -> str:
    """The JSON view of a tracking link: `<base>/track/<token>` (the recipient's page) -> `<base>/v1/track/<token>`."""
    base, _, token = tracking_url.rpartition("/track/")
    return f"{base}/v1/track/{token}"


def _rebase(url: str, configured_base: str, base_url: str) -> str:
    configured_base = configured_base.rstrip("/")
    return base_url + url[len(configured_base):] if url.startswith(configured_base + "/") else url


def _expect(result: HttpResult, what: str, *statuses: int) -> Any:
    if result.status not in statuses:
        raise SeedError(f"{what} answered HTTP {result.status}: {json.dumps(result.body)[:500]}")
    return result.body


DEMO_APPROACH_MAX_AGE_MIN = 60  # longer than the bundled ride-along traces
DEMO_DRIVER_VISIBLE_STOPS = 3


# A second driver for the dispatch console's exception queue: their one stop's promised window ended an hour
# ago, and their phone last reported LATE_DRIVER_SILENT_MIN ago (beyond the default 5 offline minutes), so the
# pipeline raises `late` at that fix and the offline schedule raises `driver_offline` within a minute.
LATE_DRIVER_SILENT_MIN = 8


def seed_console_exceptions(base_url: str, api_key: str, zone: ZoneInfo, near: tuple[float, float],
                            city: str, run: str, now: datetime) -> dict[str, Any] | None:
    """A late stop and a driver who goes offline, so the console's queue is not empty on `make run`. None just
    after the local midnight (no earlier window on the local day to have missed)."""
    local_now = now.astimezone(zone)
    midnight = local_now.replace(hour=0, minute=0, second=0, microsecond=0)
    closes = local_now - timedelta(hours=1)
    if closes - timedelta(minutes=30) < midnight:
        return None
    opens = max(midnight, closes - timedelta(hours=2))
    driver = _expect(http_json("POST", f"{base_url}/v1/drivers", {"name": "Sam Stalled", "phone": "+15555550199"},
                               token=api_key), "create the late driver", 201)
    stop = (near[0] + 0.02, near[1] + 0.01)  # a couple of kilometres from where the driver last reported
    shipment = _expect(http_json("POST", f"{base_url}/v1/shipments", {
        "recipient": {"name": "Demo Recipient Late", "phone": "+15555550198",
                      "email": "demo-recipient-late@example.com"},
        "address": {"line1": "Demo stop late", "city": city, "country": "US"},
        "location": {"lat": stop[0], "lng": stop[1]}, "delivery_date": local_now.date().isoformat(),
        "time_window": {"start": _iso(opens), "end": _iso(closes)}, "external_ref": f"demo-{run}-late"},
        token=api_key, headers={"Idempotency-Key": f"demo-{run}-late"}), "create the late shipment", 201, 200)
    route = _expect(http_json("POST", f"{base_url}/v1/routes", {
        "driver_id": driver["id"], "day": local_now.date().isoformat(), "planned_start": _iso(opens),
        "shipment_ids": [shipment["id"]]}, token=api_key), "create the late route", 201)
    _expect(http_json("POST", f"{base_url}/v1/routes/{route['id']}/start", token=api_key), "start the late route",
            200)
    last_fix = now - timedelta(minutes=LATE_DRIVER_SILENT_MIN)
    _expect(http_json("POST", f"{base_url}/v1/driver/pings", {"pings": [
        {"lat": near[0], "lng": near[1], "fix_time": _iso(last_fix - timedelta(seconds=10 * (2 - i))),
         "accuracy": 10, "speed": 0} for i in range(3)]}, token=driver["token"]), "the late driver's last pings", 200)
    return {"driver_id": driver["id"], "shipment_id": shipment["id"], "route_id": route["id"],
            "tracking_url": shipment["tracking_url"]}


DEMO_LOOKUP_SLUG = "demo"
# The demo's conversation, on the stop `make simulate` leaves next (the live driver on its page).
DEMO_RECIPIENT_MESSAGE = "Hi! If I'm not in, could you leave it with my neighbour at number 12?"
DEMO_DRIVER_REPLY = "Sure, no problem. See you soon!"


def seed_lookup_page(base_url: str, api_key: str, run: str) -> tuple[str, str]:
    """The merchant's lookup page, `/lookup/demo`: (slug, page URL). Slugs are unique across merchants, so a second
    seeding on the same stack (tests seed several merchants) takes `demo-<run>`."""
    for slug in (DEMO_LOOKUP_SLUG, f"{DEMO_LOOKUP_SLUG}-{run[:8]}"):
        result = http_json("PUT", f"{base_url}/v1/lookup/settings", {"slug": slug}, token=api_key)
        if result.status == 409:
            continue
        return slug, str(_expect(result, "lookup settings", 200)["page_url"])
    raise SeedError("both demo lookup slugs are taken")


def seed_conversation(base_url: str, env: Mapping[str, str], merchant_id: str, shipment_id: str,
                      driver_token: str, *, isolated: bool = False) -> dict[str, Any]:
    """A recipient's message on the shipment and the driver's reply (the driver app's API), so the tracking page,
    the driver app and the console show a conversation."""
    recipient_message(env, merchant_id, shipment_id, DEMO_RECIPIENT_MESSAGE, isolated=isolated)
    _expect(http_json("POST", f"{base_url}/v1/driver/shipments/{shipment_id}/messages",
                      {"text": DEMO_DRIVER_REPLY}, token=driver_token), "the driver's reply", 201)
    return {"shipment_id": shipment_id, "messages": 2}


def seed_demo(base_url: str, env: Mapping[str, str], *, data_dir: Path | None = None,
              demo_path: Path | None = DEFAULT_DEMO_PATH, stops: int = 10, isolated: bool = False,
              builtin_route: Path = BUILTIN_ROUTE, route_choice: str | None = None,
              extra: Mapping[str, Any] | None = None, webhook_receiver_url: str | None = None,
              webhook_secret_file: Path | None = None, trace: Path | None = None,
              now: datetime | None = None) -> dict[str, Any]:
    """Create a demo merchant, driver, shipments and a started route; write demo.json.

    The route lies along the trace `make simulate` plays (`trace`, default: the real ride-along trace of
    `data_dir` when present, else the bundled one; infra/local/demo_plan.py says how): its first stops are
    where that trace's driver stays, the rest continue the day after the trace's end. The merchant is in
    the trace's time zone; the route is planned to start before the trace's drive on today's local date,
    and every stop is promised a window on that date. `route_choice` (an ALMRRC route id or station code)
    seeds that real route instead, in its metro's time zone, with nothing on a trace.

    `env` is the app environment against the stack's moto (LocalStack.app_env). The merchant is
    created in process (see create_merchant); everything else goes through the HTTP API, as a
    merchant's back office would do it. With `webhook_receiver_url` (LocalStack's bundled receiver)
    the merchant's webhook endpoint points there, before anything happens, so the receiver gets every
    event; its signing secret goes to `webhook_secret_file` (0600), where the receiver reads it.
    """
    data_dir = data_dir if data_dir is not None else default_data_dir()
    route: DemoRoute | None = None
    if route_choice is not None:
        route = load_real_route(data_dir, stops, route_choice)
        if route is None:
            raise SeedError(f"--route {route_choice} needs the real routes in {data_dir / 'routes' / 'almrrc2021'}")
    else:
        route = trace_route(data_dir, builtin_route, stops, trace or default_trace(data_dir))
    zone = ZoneInfo(route.time_zone)
    moment = now or datetime.now(UTC)
    trace_length, trace_start = timedelta(0), None
    if route.trace is not None:
        fixes = parse_gpx(route.trace)
        trace_length = fixes[-1].time - fixes[0].time
        trace_start = {"lat": fixes[0].lat, "lng": fixes[0].lng}  # where the simulated driver sets off
    start = planned_start(moment, trace_length, zone)
    today = start.date()  # the local date: planned_start is in `zone`
    merchant_id, api_key = create_merchant(env, "Doorstep Demo Merchant", isolated=isolated)

    # The recipients' time zone: tracking pages, messages and the driver app's "today" read it. The live driver
    # is shown up to DEMO_DRIVER_VISIBLE_STOPS stops ahead (default: only to the next stop), so that after
    # `make simulate`, with the driver still at the last stop it reached, the next one sees the van coming.
    _expect(http_json("PATCH", f"{base_url}/v1/settings",
                      {"time_zone": route.time_zone, "driver_visible_stops": DEMO_DRIVER_VISIBLE_STOPS},
                      token=api_key), "merchant settings (time zone)", 200)
    # The demo shows its messages at any hour (`make outbox`): quiet hours off for this merchant only.
    # `make simulate` replays a trace at N x real time with its fix times up to the trace's length in the
    # past, so an "approaching" would be stale by the default 10 minutes; this merchant allows an hour.
    _expect(http_json("PUT", f"{base_url}/v1/notifications/settings",
                      {"policy": {"quiet_hours": None, "max_age_minutes": {"approaching": DEMO_APPROACH_MAX_AGE_MIN}}},
                      token=api_key), "notification settings", 200)
    webhook_url = None
    if webhook_receiver_url:
        from infra.local.webhook_receiver import HOOK_PATH

        webhook_url = webhook_receiver_url + HOOK_PATH
        endpoint = _expect(http_json("PUT", f"{base_url}/v1/webhook",
                                     {"url": webhook_url, "alert_email": "webhooks@demo.doorstep.local"},
                                     token=api_key), "webhook endpoint", 201, 200)
        if webhook_secret_file is not None and endpoint.get("secret"):
            _write_private_text(webhook_secret_file, endpoint["secret"] + "\n")
    driver = _expect(http_json("POST", f"{base_url}/v1/drivers", {"name": "Demo Driver", "phone": "+15555550100"},
                               token=api_key), "create driver", 201)
    run = uuid.uuid4().hex[:12]  # keys unique per seeding, so seeding twice never replays old shipments
    shipments: list[dict[str, Any]] = []
    for number, stop in enumerate(route.stops, start=1):
        opens, closes = promised_window(start, number - 1, zone)
        body: dict[str, Any] = {
            "recipient": {"name": f"Demo Recipient {number}", "phone": f"+1555555{number:04d}",
                          "email": f"demo-recipient-{number}@example.com"},
            "address": {"line1": f"Demo stop {stop.stop_id}", "city": route.city, "country": "US"},
            "location": {"lat": stop.lat, "lng": stop.lng},
            "delivery_date": today.isoformat(),
            "time_window": {"start": _iso(opens), "end": _iso(closes)},
            # Unique per seeding: external refs are unique per merchant, and a test may seed twice.
            "external_ref": f"demo-{run}-{stop.stop_id}",
        }
        result = http_json("POST", f"{base_url}/v1/shipments", body, token=api_key,
                           headers={"Idempotency-Key": f"demo-{run}-{number}"})
        shipments.append(_expect(result, f"create shipment {number}", 201, 200))
    shipment_ids = [s["id"] for s in shipments]
    created = _expect(http_json("POST", f"{base_url}/v1/routes",
                                {"driver_id": driver["id"], "day": today.isoformat(),
                                 "planned_start": _iso(start), "shipment_ids": shipment_ids},
                                token=api_key), "create route", 201)
    _expect(http_json("POST", f"{base_url}/v1/routes/{created['id']}/start", token=api_key), "start route", 200)
    app_link = _expect(http_json("POST", f"{base_url}/v1/drivers/{driver['id']}/app-link", {}, token=api_key),
                       "driver app link", 201)
    lookup_slug, lookup_url = seed_lookup_page(base_url, api_key, run)
    talk_at = min(route.visited, len(shipments) - 1)  # the next stop after `make simulate`: still on its way
    conversation = seed_conversation(base_url, env, merchant_id, shipments[talk_at]["id"], driver["token"],
                                     isolated=isolated)
    conversation["tracking_url"] = _rebase(shipments[talk_at]["tracking_url"],
                                           env.get("DOORSTEP_PUBLIC_BASE_URL", base_url), base_url)
    conversation["stop"] = talk_at + 1
    last_stop = route.stops[-1]
    exceptions_demo = seed_console_exceptions(base_url, api_key, zone, (last_stop.lat, last_stop.lng), route.city,
                                              run, datetime.now(UTC))

    configured_base = env.get("DOORSTEP_PUBLIC_BASE_URL", base_url)
    sign_in = _expect(http_json("POST", f"{base_url}/v1/console/sign-in-links", {}, token=api_key),
                      "console sign-in link", 201)
    demo: dict[str, Any] = {
        "base_url": base_url,
        "merchant_api_key": api_key,
        "driver_id": driver["id"],
        "driver_token": driver["token"],
        "route_id": created["id"],
        "shipment_ids": shipment_ids,
        "tracking_urls": [_rebase(s["tracking_url"], configured_base, base_url) for s in shipments],
        "driver_app_url": _rebase(app_link["url"], configured_base, base_url),
        "console_url": f"{base_url}/console",
        # Opens the console signed in as the demo merchant: once, within 15 minutes of `make run`.
        "console_sign_in_url": _rebase(sign_in["url"], configured_base, base_url),
        # The console queue's demo: a late stop and a driver who goes offline (None just after midnight).
        "exceptions_demo": exceptions_demo,
        # The lookup page (order number = a shipment's external_ref, and the recipient's phone ending).
        "lookup_url": _rebase(lookup_url, configured_base, base_url),
        "lookup_slug": lookup_slug,
        "lookup_example": {"order": f"demo-{run}-{route.stops[0].stop_id}", "phone_ending": "0001"},
        # A recipient's message and the driver's reply on one stop.
        "conversation_demo": conversation,
        "merchant_id": merchant_id,
        "moto_url": env.get("AWS_ENDPOINT_URL"),
        "dynamodb_url": env.get("DOORSTEP_DYNAMODB_ENDPOINT_URL"),
        "route_source": route.source,
        "city": route.city,
        "time_zone": route.time_zone,
        "day": today.isoformat(),
        # The trace `make simulate` plays over this route, and how many of the first stops it reaches.
        "trace": str(route.trace) if route.trace is not None else None,
        "visited_stops": route.visited,
        "trace_start": trace_start,
        "stops": [{"shipment_id": sid, "lat": s.lat, "lng": s.lng, "kind": s.kind}
                  for sid, s in zip(shipment_ids, route.stops, strict=True)],
        "created_at": _iso(datetime.now(UTC)),
        "webhook_url": webhook_url,
        "webhook_receiver_url": webhook_receiver_url,
        **(extra or {}),
    }
    if demo_path is not None:
        write_private_json(demo_path, demo)
    return demo


def _write_private_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)


def write_private_json(path: Path, data: Mapping[str, Any]) -> None:
    """Atomically write JSON readable only by the owner: it holds an API key and a driver token."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2)
        fh.write("\n")
    os.replace(temp, path)


# --- command line -------------------------------------------------------------------------


class _Shutdown(Exception):
    """Raised from the SIGINT/SIGTERM handler so `finally` blocks stop the children."""


def _on_signal(signum: int, frame: FrameType | None) -> None:
    # Ignore further signals: a second Ctrl-C must not interrupt the cleanup.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise _Shutdown(signal.Signals(signum).name)


def _env_port(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"error: {name}={raw!r} is not a port number") from None


def _relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _tracking_lines(demo: Mapping[str, Any], shown: int = 5) -> list[str]:
    """The first tracking links, each with what `make simulate` will make of it (the README says the same)."""
    visited = int(demo.get("visited_stops") or 0)
    shown = max(shown, visited + 1)  # always down to the stop the live driver heads for next
    roles = {0: "delivered, with a photo", 1: "nobody home: failed, can be rescheduled"} if visited >= 3 else \
        {0: "delivered, with a photo"}
    if visited:
        roles[visited - 1] = "the driver arrives and stays: at the door"
        roles[visited] = "next: the live driver and today's window"
    lines = []
    for index, url in enumerate(demo["tracking_urls"][:shown]):
        role = roles.get(index, "delivered, with a photo" if index < visited else "later today")
        label = "  Track        " if index == 0 else "               "
        lines.append(f"{label}stop {index + 1}: {url}" + (f"   (after make simulate: {role})" if visited else ""))
    if len(demo["tracking_urls"]) > shown:
        lines.append(f"               ... {len(demo['tracking_urls']) - shown} more in tracking_urls of demo.json")
    return lines


def _conversation_lines(demo: Mapping[str, Any]) -> list[str]:
    talk = demo.get("conversation_demo")
    if not talk:
        return []
    return [f"  Messages     stop {talk['stop']}: a recipient's message and the driver's reply, on its tracking page",
            f"               {talk['tracking_url']}, in the driver app and in the console"]


def _lookup_lines(demo: Mapping[str, Any]) -> list[str]:
    if not demo.get("lookup_url"):
        return []
    example = demo.get("lookup_example") or {}
    return [f"  Lookup page  {demo['lookup_url']}   (find a delivery: order {example.get('order')}, "
            f"phone ending {example.get('phone_ending')})"]


def _summary(demo: Mapping[str, Any], stack: LocalStack, demo_path: Path) -> str:
    # Where the demo's driver sets off (the trace's start, outside every stop), else the first stop.
    first = demo.get("trace_start") or (demo["stops"][0] if demo.get("stops") else {"lat": 0.0, "lng": 0.0})
    ping = json.dumps({"pings": [{"lat": first["lat"], "lng": first["lng"], "fix_time": "__NOW__"}]})
    ping = shlex.quote(ping).replace("__NOW__", "'\"$(date -u +%Y-%m-%dT%H:%M:%SZ)\"'")
    logs = ", ".join(_relative(p) for p in stack.log_paths.values())
    return "\n".join([
        "",
        "Doorstep local stack is up (the emulators are in memory: every run starts empty).",
        f"  API          {stack.base_url}   (OpenAPI: {stack.base_url}/openapi.json)",
        f"  DynamoDB     {stack.dynamodb_url}   (DynamoDB Local)",
        f"  AWS (moto)   {stack.moto_url}   (S3, SNS, SES, KMS)",
        f"  Demo data    {_relative(demo_path)}: merchant key, driver token, {len(demo['shipment_ids'])} shipments "
        f"out for delivery on route {demo['route_id']}",
        f"               stops: {demo.get('route_source', '?')}; merchant time zone {demo.get('time_zone', 'UTC')}",
        *_tracking_lines(demo),
        f"               JSON: curl -s {tracking_json_url(demo['tracking_urls'][0])}",
        f"  Driver app   {demo.get('driver_app_url', '-')}   (the demo driver's web app, valid 16 h)",
        f"  Console      {demo.get('console_sign_in_url') or demo.get('console_url') or stack.base_url + '/console'}",
        "               (the dispatch console, signed in as the demo merchant: the link works once, for 15 minutes;",
        f"               later, sign in at {demo.get('console_url') or stack.base_url + '/console'} with the merchant "
        "key below, never put in a URL)",
        *(["               its queue: a late stop now, and driver Sam Stalled offline within a minute"]
          if demo.get("exceptions_demo") else []),
        "               its Performance section: today's delivered and failed stops once make simulate has",
        "               delivered stop 1 and failed stop 2, with hours on duty so far (the shift is still open);",
        "               zeros until then",
        *_conversation_lines(demo),
        *_lookup_lines(demo),
        "  Post a ping  curl -s -X POST " + f"{stack.base_url}/v1/driver/pings "
        f"-H 'Authorization: Bearer {demo['driver_token']}' -H 'Content-Type: application/json' -d {ping}",
        f"  Merchant API curl -s -H 'Authorization: Bearer {demo['merchant_api_key']}' "
        f"'{stack.base_url}/v1/shipments?status=out_for_delivery'",
        "  Drive it     make simulate            (another terminal; SPEED=200 for a quick run)",
        f"  Webhooks     {demo.get('webhook_url') or '-'}   (the bundled receiver; received: "
        f"curl -s {stack.webhook_receiver_url}/events, or make outbox)",
        f"  Logs         {logs}",
        "Press Ctrl-C to stop.",
        "",
    ])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.local.stack",
                                     description="Run DynamoDB Local + moto + chalice local with a seeded demo "
                                                 "merchant.")
    parser.add_argument("--port", type=int, default=_env_port("PORT", 8000), help="API port (0 = any free port)")
    parser.add_argument("--moto-port", type=int, default=_env_port("MOTO_PORT", 5001),
                        help="moto server port (0 = any free port)")
    parser.add_argument("--dynamodb-port", type=int, default=_env_port("DYNAMODB_PORT", 5002),
                        help="DynamoDB Local port (0 = any free port)")
    parser.add_argument("--demo", type=Path, default=DEFAULT_DEMO_PATH, help="where to write demo.json")
    parser.add_argument("--log-dir", type=Path, default=DEFAULT_LOG_DIR, help="where child logs go")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="real data folder (default: $DOORSTEP_SHARED_DATA or ../shared/data)")
    parser.add_argument("--stops", type=int, default=10, help="shipments on the demo route (default 10)")
    parser.add_argument("--tile-url", default=os.environ.get("DOORSTEP_TILE_URL") or None,
                        help="map tile URL template for the tracking page, e.g. "
                             "'https://tile.openstreetmap.org/{z}/{x}/{y}.png' (default: none, markers only)")
    parser.add_argument("--route", default=None,
                        help="seed a real ALMRRC route (a route id or a station code such as DCH4) in its metro's "
                             "time zone (default: a route along the trace `make simulate` plays)")
    args = parser.parse_args(argv)
    for name in ("port", "moto_port", "dynamodb_port"):
        if not 0 <= getattr(args, name) <= 65535:
            parser.error(f"--{name.replace('_', '-')} must be 0..65535")
    if not 1 <= args.stops <= 300:
        parser.error("--stops must be 1..300")

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    stack = LocalStack(args.port, args.moto_port, dynamodb_port=args.dynamodb_port, log_dir=args.log_dir,
                       tile_url=args.tile_url)
    try:
        print(f"Starting DynamoDB Local, moto and chalice local (logs in {_relative(args.log_dir)}) ...", flush=True)
        stack.start()
        # Only now is an existing demo.json surely stale (its stack's ports were free). Removed before
        # seeding, so a failed seed leaves no file naming this run's merchant half-made. Not earlier:
        # a start refused for a busy port must not delete the demo.json of the stack holding it.
        with contextlib.suppress(FileNotFoundError):
            args.demo.unlink()
        demo = seed_demo(stack.base_url, stack.app_env, data_dir=args.data_dir, demo_path=args.demo,
                         stops=args.stops, route_choice=args.route, extra={"stack_pids": stack.pids},
                         webhook_receiver_url=stack.webhook_receiver_url,
                         webhook_secret_file=stack.webhook_secret_file)
        print(_summary(demo, stack, args.demo), flush=True)
        while True:
            dead = stack.dead_children()
            if dead:
                name, code, log = dead[0]
                print(f"error: {name} exited unexpectedly (code {code}); see {_relative(log)}", file=sys.stderr)
                return 1
            time.sleep(0.5)
    except _Shutdown:
        print("\nStopping the local stack ...", flush=True)
        return 0
    except (StackError, SeedError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        # Nothing may interrupt the cleanup, including a second Ctrl-C.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
