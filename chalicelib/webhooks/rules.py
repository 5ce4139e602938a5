"""Merchant webhooks: signatures, the retry schedule, pausing a failing endpoint, and URL safety.

Signature
---------
Every POST carries `Doorstep-Timestamp: <unix seconds>` and
`Doorstep-Signature: v1=<hex>`, where hex is HMAC-SHA256 with the endpoint's
secret over the bytes `<timestamp>.<body>` (the raw request body, exactly as
sent). During a secret rotation the header carries one `v1=` entry per active
secret, comma-separated. A receiver verifies like this (Python):

    import hashlib, hmac, time

    def verify(secret: str, headers, body: bytes, tolerance: int = 300) -> bool:
        ts = headers["Doorstep-Timestamp"]
        if not ts.isdigit() or abs(time.time() - int(ts)) > tolerance:
            return False                                  # too old (or too new): a replay
        mac = hmac.new(secret.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
        return any(hmac.compare_digest(f"v1={mac}", part.strip())
                   for part in headers["Doorstep-Signature"].split(","))

and de-duplicates on `Doorstep-Event-Id`, since a retry or a replay sends the same event again.

Retries and pausing
-------------------
A delivery that does not get a 2xx answer (non-2xx, timeout, refused
connection, redirect: redirects are not followed) is retried after 30 s, 1, 2,
4 ... minutes, doubling up to 6 hours between attempts, each wait shortened by
up to 20 % at random; once the next attempt would fall more than 24 hours
after the first one, the delivery is marked failed (it stays in the log and
can be replayed). After `PAUSE_AFTER_FAILURES` consecutive failed attempts
spanning at least `PAUSE_MIN_FAILING` the endpoint is paused: new events are
logged as held, the merchant is emailed, and resuming replays what was held.

URL safety
----------
`check_webhook_url` runs when the merchant saves the URL; `resolve_and_check`
runs before every send, on the addresses DNS returns at that moment, and the
sender connects to one of the checked addresses (with the URL's host name for
TLS and the Host header), so a name that resolves to a public address when
saved and to 169.254.169.254 later (DNS rebinding) is still refused.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import random
import re
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from chalicelib.core.problems import Problem
from chalicelib.notifications.rules import backoff_delay

SIGNATURE_HEADER = "Doorstep-Signature"
TIMESTAMP_HEADER = "Doorstep-Timestamp"
EVENT_ID_HEADER = "Doorstep-Event-Id"
SIGNATURE_VERSION = "v1"
DEFAULT_TOLERANCE_S = 300
SECRET_PREFIX = "whsec_"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_MAX_SIGNATURES = 8


# --- signing ----------------------------------------------------------------------


def new_webhook_secret() -> str:
    """A new endpoint secret (256 random bits), shown to the merchant once."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def _bytes(value: str | bytes) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else value


def _timestamp_text(timestamp: int | str) -> str:
    text = str(timestamp)
    if isinstance(timestamp, bool) or not text.isascii() or not text.isdigit() or len(text) > 12:
        raise ValueError("timestamp must be whole unix seconds")
    return str(int(text))


def sign(secret: str | bytes, timestamp: int | str, body: str | bytes) -> str:
    """`v1=<hex HMAC-SHA256 of f"{timestamp}.{body}">`; str bodies are signed as their UTF-8 bytes."""
    ts = _timestamp_text(timestamp)
    mac = hmac.new(_bytes(secret), ts.encode("ascii") + b"." + _bytes(body), hashlib.sha256).hexdigest()
    return f"{SIGNATURE_VERSION}={mac}"


def check_signature(secret: str | bytes | Sequence[str | bytes], header: str | None, timestamp: str | int | None,
                    body: str | bytes, now: float, tolerance: float = DEFAULT_TOLERANCE_S) -> str | None:
    """Why a signed request is refused, or None when it verifies.

    `secret` may be several secrets (a rotation). Every candidate signature is
    compared in constant time against every secret's expected value.
    """
    if timestamp is None or header is None:
        return "missing_header"
    try:
        ts = int(_timestamp_text(timestamp))
    except ValueError:
        return "timestamp_invalid"
    if abs(now - ts) > tolerance:
        return "timestamp_outside_tolerance"
    candidates = [part.strip().encode("utf-8", "replace") for part in header.split(",")[:_MAX_SIGNATURES]]
    candidates = [c for c in candidates if c.startswith(b"v1=")]
    if not candidates:
        return "no_v1_signature"
    keys = [secret] if isinstance(secret, str | bytes) else list(secret)
    matched = False
    for key in keys:
        expected = sign(key, ts, body).encode("ascii")
        for candidate in candidates:
            matched |= hmac.compare_digest(expected, candidate)
    return None if matched else "signature_mismatch"


def verify(secret: str | bytes | Sequence[str | bytes], header: str | None, timestamp: str | int | None,
           body: str | bytes, now: float, tolerance: float = DEFAULT_TOLERANCE_S) -> bool:
    """True when `header` holds a valid v1 signature of `body` at `timestamp`, within `tolerance` s of `now`."""
    return check_signature(secret, header, timestamp, body, now, tolerance) is None


def encode_event(event_id: str, event_type: str, occurred_at: datetime, data: Mapping[str, Any],
                 merchant_id: str | None = None) -> bytes:
    """The JSON body of one webhook: compact, keys sorted, so a replay sends byte-identical content."""
    if occurred_at.tzinfo is None:
        raise ValueError("occurred_at must be timezone-aware")
    payload: dict[str, Any] = {"id": event_id, "type": event_type,
                               "occurred_at": occurred_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
                               "data": dict(data)}
    if merchant_id is not None:
        payload["merchant_id"] = merchant_id
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def signed_headers(secrets_: str | bytes | Sequence[str | bytes], body: bytes, now: float,
                   event_id: str) -> dict[str, str]:
    """The headers of one POST: content type, event id, timestamp and one signature per active secret."""
    keys = [secrets_] if isinstance(secrets_, str | bytes) else list(secrets_)
    if not keys:
        raise ValueError("at least one secret")
    ts = str(int(now))
    return {"Content-Type": "application/json", "User-Agent": "Doorstep-Webhooks/1", EVENT_ID_HEADER: event_id,
            TIMESTAMP_HEADER: ts, SIGNATURE_HEADER: ", ".join(sign(k, ts, body) for k in keys)}


# --- delivery retries ---------------------------------------------------------------

RETRY_BASE_S = 30.0
RETRY_CAP_S = 6 * 3600.0
RETRY_JITTER = 0.2
GIVE_UP_AFTER = timedelta(hours=24)
REQUEST_TIMEOUT_S = 10.0


def attempt_succeeded(status: int | None) -> bool:
    """Only a 2xx answer delivers; redirects are not followed, so 3xx fails like 4xx, 5xx or no answer."""
    return status is not None and 200 <= status < 300


def retry_delay(attempts: int, rng: random.Random | None = None) -> float:
    """Seconds before the next attempt after `attempts` failed ones: 30 s doubling to 6 h, minus up to 20 %."""
    return backoff_delay(attempts, base=RETRY_BASE_S, cap=RETRY_CAP_S, jitter=RETRY_JITTER, rng=rng)


def next_attempt_at(attempts: int, first_attempt_at: datetime, now: datetime,
                    rng: random.Random | None = None) -> datetime | None:
    """When to try again after `attempts` failed attempts, or None to give up (past 24 h after the first)."""
    at = now + timedelta(seconds=retry_delay(attempts, rng))
    return None if at - first_attempt_at > GIVE_UP_AFTER else at


def nominal_schedule() -> list[float]:
    """The waits, in seconds, between attempts of a delivery that always fails, without jitter."""
    waits: list[float] = []
    elapsed = 0.0
    while True:
        wait = min(RETRY_CAP_S, RETRY_BASE_S * 2.0 ** len(waits))
        if elapsed + wait > GIVE_UP_AFTER.total_seconds():
            return waits
        waits.append(wait)
        elapsed += wait


class DeliveryState(StrEnum):
    PENDING = "pending"  # to be attempted at next_attempt_at
    DELIVERED = "delivered"
    FAILED = "failed"  # gave up after 24 h; replayable
    HELD = "held"  # the endpoint is paused; sent when it resumes


@dataclass(frozen=True)
class WebhookDelivery:
    """One event to one endpoint, as the delivery log shows it."""

    event_id: str
    endpoint_id: str
    state: DeliveryState
    created_at: datetime
    attempts: int = 0
    first_attempt_at: datetime | None = None
    next_attempt_at: datetime | None = None
    last_status: int | None = None
    last_error: str | None = None
    delivered_at: datetime | None = None


def new_delivery(event_id: str, endpoint_id: str, now: datetime, *, endpoint_paused: bool = False) -> WebhookDelivery:
    state = DeliveryState.HELD if endpoint_paused else DeliveryState.PENDING
    return WebhookDelivery(event_id, endpoint_id, state, now, next_attempt_at=None if endpoint_paused else now)


def after_attempt(delivery: WebhookDelivery, now: datetime, status: int | None, error: str | None = None,
                  rng: random.Random | None = None) -> WebhookDelivery:
    """The delivery after one attempt that got HTTP `status` (None: no answer, `error` says why)."""
    first = delivery.first_attempt_at or now
    attempts = delivery.attempts + 1
    if attempt_succeeded(status):
        return replace(delivery, state=DeliveryState.DELIVERED, attempts=attempts, first_attempt_at=first,
                       next_attempt_at=None, last_status=status, last_error=None, delivered_at=now)
    at = next_attempt_at(attempts, first, now, rng)
    return replace(delivery, state=DeliveryState.PENDING if at else DeliveryState.FAILED, attempts=attempts,
                   first_attempt_at=first, next_attempt_at=at, last_status=status,
                   last_error=error or (f"HTTP {status}" if status is not None else "no answer"))


def hold(delivery: WebhookDelivery) -> WebhookDelivery:
    """Park a pending delivery because its endpoint is paused."""
    return replace(delivery, state=DeliveryState.HELD, next_attempt_at=None)


def replay(delivery: WebhookDelivery, now: datetime) -> WebhookDelivery:
    """Send again now, with a fresh 24-hour retry budget (manual replay, or an endpoint resumed)."""
    return replace(delivery, state=DeliveryState.PENDING, attempts=0, first_attempt_at=None, next_attempt_at=now,
                   delivered_at=None)


PAUSE_AFTER_FAILURES = 20
PAUSE_MIN_FAILING = timedelta(hours=1)


@dataclass(frozen=True)
class EndpointHealth:
    consecutive_failures: int = 0
    failing_since: datetime | None = None
    paused_at: datetime | None = None

    @property
    def paused(self) -> bool:
        return self.paused_at is not None


def should_pause(consecutive_failures: int, failing_since: datetime | None, now: datetime, *,
                 pause_after: int = PAUSE_AFTER_FAILURES, min_failing: timedelta = PAUSE_MIN_FAILING) -> bool:
    """N consecutive failures *and* failing for a while: a burst of events during a two-minute outage
    does not pause an endpoint; a day of failures does."""
    return consecutive_failures >= pause_after and failing_since is not None and now - failing_since >= min_failing


def record_attempt(health: EndpointHealth, succeeded: bool, now: datetime, *,
                   pause_after: int = PAUSE_AFTER_FAILURES,
                   min_failing: timedelta = PAUSE_MIN_FAILING) -> tuple[EndpointHealth, bool]:
    """The endpoint's health after one attempt, and whether this attempt paused it (email the merchant then)."""
    if succeeded:
        return replace(health, consecutive_failures=0, failing_since=None), False
    failures = health.consecutive_failures + 1
    since = health.failing_since or now
    if health.paused:
        return replace(health, consecutive_failures=failures, failing_since=since), False
    pause = should_pause(failures, since, now, pause_after=pause_after, min_failing=min_failing)
    return EndpointHealth(failures, since, now if pause else None), pause


def resume(health: EndpointHealth) -> EndpointHealth:
    return EndpointHealth()


# --- addresses ----------------------------------------------------------------------

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_N4 = ipaddress.IPv4Network
_N6 = ipaddress.IPv6Network

_V4_CLASSES: tuple[tuple[ipaddress.IPv4Network, str], ...] = (
    (_N4("0.0.0.0/32"), "unspecified"),
    (_N4("0.0.0.0/8"), "this-network"),
    (_N4("10.0.0.0/8"), "private"),
    (_N4("100.64.0.0/10"), "cgnat"),
    (_N4("127.0.0.0/8"), "loopback"),
    (_N4("169.254.0.0/16"), "link-local"),  # includes 169.254.169.254, the instance metadata service
    (_N4("172.16.0.0/12"), "private"),
    (_N4("192.0.0.0/24"), "ietf-protocol"),
    (_N4("192.0.2.0/24"), "documentation"),
    (_N4("192.88.99.0/24"), "6to4-relay"),
    (_N4("192.168.0.0/16"), "private"),
    (_N4("198.18.0.0/15"), "benchmarking"),
    (_N4("198.51.100.0/24"), "documentation"),
    (_N4("203.0.113.0/24"), "documentation"),
    (_N4("224.0.0.0/4"), "multicast"),
    (_N4("255.255.255.255/32"), "broadcast"),
    (_N4("240.0.0.0/4"), "reserved"),
)
_NAT64 = _N6("64:ff9b::/96")
_V6_CLASSES: tuple[tuple[ipaddress.IPv6Network, str], ...] = (
    (_N6("::/128"), "unspecified"),
    (_N6("::1/128"), "loopback"),
    (_N6("64:ff9b:1::/48"), "nat64-local"),
    (_N6("100::/64"), "discard"),
    (_N6("2001::/32"), "teredo"),
    (_N6("2001:db8::/32"), "documentation"),
    (_N6("3fff::/20"), "documentation"),
    (_N6("2001::/23"), "ietf-protocol"),
    (_N6("fc00::/7"), "unique-local"),  # includes fd00:ec2::254, the metadata service over IPv6
    (_N6("fe80::/10"), "link-local"),
    (_N6("fec0::/10"), "site-local"),
    (_N6("ff00::/8"), "multicast"),
)
_GLOBAL_UNICAST = _N6("2000::/3")
# What a local stack may call when it allows a local test receiver: this machine and private networks.
LOCAL_TEST_CLASSES = frozenset({"loopback", "private", "unique-local"})


def parse_address(value: str | IPAddress) -> IPAddress | None:
    if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return value
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        return None


def address_class(value: str | IPAddress) -> str:
    """"public", or the special-purpose range the address is in ("loopback", "private", "link-local",
    "cgnat", "multicast", "unique-local", "documentation", ...), or "invalid".

    IPv6 addresses that embed an IPv4 address (IPv4-mapped ::ffff:a.b.c.d, NAT64
    64:ff9b::/96, 6to4 2002::/16) take the class of the embedded address, so
    ::ffff:127.0.0.1 is loopback. Only global unicast (2000::/3) IPv6 is public;
    an address with a zone (fe80::1%eth0) is "scoped".
    """
    ip = parse_address(value)
    if ip is None:
        return "invalid"
    if isinstance(ip, ipaddress.IPv4Address):
        for net, name in _V4_CLASSES:
            if ip in net:
                return name
        return "public"
    if ip.scope_id:
        return "scoped"
    if ip.ipv4_mapped is not None:
        return address_class(ip.ipv4_mapped)
    if ip in _NAT64:
        return address_class(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    if ip.sixtofour is not None:
        return address_class(ip.sixtofour)
    for net6, name in _V6_CLASSES:
        if ip in net6:
            return name
    return "public" if ip in _GLOBAL_UNICAST else "reserved"


def is_public_address(value: str | IPAddress) -> bool:
    """True only for globally routable unicast addresses a webhook may be sent to."""
    return address_class(value) == "public"


def _address_allowed(value: str | IPAddress, allow_local: bool) -> tuple[bool, str]:
    cls = address_class(value)
    return cls == "public" or (allow_local and cls in LOCAL_TEST_CLASSES), cls


# --- URLs ---------------------------------------------------------------------------

MAX_URL_LENGTH = 2048
_HOST_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")
_IPV4_LIKE = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")
_INTERNAL_NAMES = ("localhost", "localdomain", "local", "internal", "intranet", "lan", "home", "corp", "private",
                   "home.arpa", "arpa", "test", "invalid", "onion")


def _problem(field: str, code: str, message: str) -> Problem:
    return Problem(field, code, message)


def check_webhook_url(url: object, *, allow_http_local: bool = False, field: str = "url") -> Problem | None:
    """Why `url` may not be a webhook endpoint, or None.

    Production (`allow_http_local=False`): https only; no user:password@; a host
    name with a public-looking suffix or a public IP literal; port 443 or an
    unprivileged port (>= 1024), so a webhook cannot be aimed at SSH, SMTP and
    the like; no #fragment; ASCII only (IDN hosts as punycode), at most 2048
    characters. Numeric host forms that resolvers read as IPv4 (2130706433,
    0x7f.1, 127.1) are refused unless written as a canonical dotted quad.

    The local stack (`allow_http_local=True`) also allows http, any port,
    `localhost`-style names and loopback or private addresses, for a local test
    receiver; link-local (the metadata service) stays refused.

    Every send must still call `resolve_and_check`.
    """
    if not isinstance(url, str) or not url:
        return _problem(field, "required", "must be a URL")
    if len(url) > MAX_URL_LENGTH:
        return _problem(field, "too_long", f"must be at most {MAX_URL_LENGTH} characters")
    if not url.isascii() or any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        return _problem(field, "invalid", "must be ASCII without spaces or control characters "
                                          "(percent-encode the path, write international host names as punycode)")
    if "\\" in url:
        return _problem(field, "invalid", "must not contain backslashes")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return _problem(field, "invalid", f"is not a valid URL: {exc}")
    scheme = parts.scheme.lower()
    if scheme != "https" and not (allow_http_local and scheme == "http"):
        return _problem(field, "scheme", "must start with https://")
    if "@" in parts.netloc:
        return _problem(field, "userinfo", "must not contain a user name or password (use the signing secret)")
    if parts.fragment or url.endswith("#"):
        return _problem(field, "fragment", "must not contain a #fragment")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        return _problem(field, "host", "needs a host name")
    if port is not None and not allow_http_local and port != 443 and port < 1024:
        return _problem(field, "port", "must use port 443 or a port from 1024 to 65535")
    if port == 0:
        return _problem(field, "port", "port 0 is not a port")
    return check_host(host, allow_local=allow_http_local, field=field)


def check_host(host: str, *, allow_local: bool = False, field: str = "url") -> Problem | None:
    """The host part of `check_webhook_url`: an allowed IP literal, or a plausible public DNS name."""
    host = host.lower().rstrip(".")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if ":" in host:
        if "%" in host:
            return _problem(field, "host", "must not use an IPv6 zone (%...)")
        return _ip_problem(host, allow_local, field)
    labels = host.split(".")
    if _IPV4_LIKE.match(labels[-1]):
        ip = parse_address(host)
        if ip is None or str(ip) != host:
            return _problem(field, "host", "looks like an IP address but is not a canonical dotted-quad IPv4 "
                                           "address (e.g. 203.0.113.7)")
        return _ip_problem(host, allow_local, field)
    if len(host) > 253 or not all(_HOST_LABEL.match(label) for label in labels):
        return _problem(field, "host", "is not a valid host name")
    if not allow_local:
        if len(labels) < 2:
            return _problem(field, "host", "must be a fully qualified public host name (e.g. hooks.example.com)")
        if any(host == name or host.endswith("." + name) for name in _INTERNAL_NAMES):
            return _problem(field, "host", "is an internal or reserved name, not a public host")
    return None


def _ip_problem(host: str, allow_local: bool, field: str) -> Problem | None:
    allowed, cls = _address_allowed(host, allow_local)
    if cls == "invalid":
        return _problem(field, "host", "is not a valid IP address")
    if not allowed:
        return _problem(field, "address_not_allowed",
                        f"points to a {cls} address; webhooks go only to public internet addresses")
    return None


Resolver = Callable[[str], Iterable[str]]


@dataclass(frozen=True)
class CheckedTarget:
    """A host and the addresses it resolved to, all checked: connect to one of these, not to the name."""

    host: str
    addresses: tuple[str, ...]


def resolve_and_check(host: str, resolver: Resolver, *, allow_local: bool = False,
                      field: str = "url") -> CheckedTarget | Problem:
    """Resolve `host` now and refuse it if *any* address is not allowed.

    `resolver(host)` returns IP address strings (e.g. from socket.getaddrinfo);
    it may raise OSError. Refusing on any bad address (not only the first)
    keeps an attacker from mixing a public and a private answer and betting on
    which one the HTTP client picks. An IP-literal host is checked without DNS.
    """
    problem = check_host(host, allow_local=allow_local, field=field)
    if problem is not None:
        return problem
    bare = host.lower().rstrip(".").strip("[]")
    literal = parse_address(bare)
    if literal is not None:
        return CheckedTarget(bare, (str(literal),))
    try:
        answers = list(resolver(bare))
    except (OSError, UnicodeError, ValueError) as exc:
        return _problem(field, "dns_failed", f"could not resolve {bare}: {exc.__class__.__name__}")
    if not answers:
        return _problem(field, "dns_failed", f"{bare} has no addresses")
    checked: list[str] = []
    for answer in answers:
        ip = parse_address(answer)
        if ip is None:
            return _problem(field, "dns_failed", f"{bare} resolved to something that is not an IP address")
        allowed, cls = _address_allowed(ip, allow_local)
        if not allowed:
            return _problem(field, "address_not_allowed", f"{bare} resolves to a {cls} address; webhooks go only to "
                                                          "public internet addresses")
        if str(ip) not in checked:
            checked.append(str(ip))
    return CheckedTarget(bare, tuple(checked))
