"""Webhook signatures, retries, pausing and URL / address safety: no network, no AWS."""

from __future__ import annotations

import hashlib
import hmac
import json
import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chalicelib.webhooks.rules import (
    EVENT_ID_HEADER,
    GIVE_UP_AFTER,
    PAUSE_AFTER_FAILURES,
    RETRY_CAP_S,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    CheckedTarget,
    DeliveryState,
    EndpointHealth,
    address_class,
    after_attempt,
    attempt_succeeded,
    check_signature,
    check_webhook_url,
    encode_event,
    hold,
    is_public_address,
    new_delivery,
    new_webhook_secret,
    nominal_schedule,
    record_attempt,
    replay,
    resolve_and_check,
    resume,
    retry_delay,
    sign,
    signed_headers,
    verify,
)

SECRET = "whsec_test_0123456789"
BODY = b'{"id":"evt_1","type":"shipment.delivered"}'
TS = 1_763_600_000
T0 = datetime(2025, 11, 20, 9, 0, tzinfo=UTC)


# --- signatures ---------------------------------------------------------------------------


def test_sign_is_hmac_sha256_over_timestamp_dot_body():
    expected = hmac.new(SECRET.encode(), f"{TS}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert sign(SECRET, TS, BODY) == f"v1={expected}"
    assert sign(SECRET, str(TS), BODY.decode()) == sign(SECRET.encode(), TS, BODY)
    # A fixed vector, so a receiver's implementation can be checked against it.
    assert sign("whsec_example", 1700000000, b"{}") == (
        "v1=" + hmac.new(b"whsec_example", b"1700000000.{}", hashlib.sha256).hexdigest())


def test_verify_round_trip_and_tolerance():
    header = sign(SECRET, TS, BODY)
    assert verify(SECRET, header, str(TS), BODY, now=TS)
    assert verify(SECRET, header, str(TS), BODY, now=TS + 300)
    assert verify(SECRET, header, str(TS), BODY, now=TS - 300)  # a receiver clock a little behind
    assert check_signature(SECRET, header, str(TS), BODY, now=TS + 301) == "timestamp_outside_tolerance"
    assert check_signature(SECRET, header, str(TS), BODY, now=TS - 301) == "timestamp_outside_tolerance"
    assert verify(SECRET, header, str(TS), BODY, now=TS + 3000, tolerance=3600)


@pytest.mark.parametrize(("header", "timestamp", "reason"), [
    (None, str(TS), "missing_header"),
    ("v1=00", None, "missing_header"),
    ("v1=00", "abc", "timestamp_invalid"),
    ("v1=00", "-5", "timestamp_invalid"),
    ("v1=00", "1e9", "timestamp_invalid"),
    ("v1=00", "\u0661\u0662", "timestamp_invalid"),  # Arabic-Indic digits are not unix seconds
    ("v0=abc, sha1=def", str(TS), "no_v1_signature"),
    ("v1=" + "0" * 64, str(TS), "signature_mismatch"),
    ("v1=ünïcödé", str(TS), "signature_mismatch"),
])
def test_verify_refusals(header, timestamp, reason):
    assert check_signature(SECRET, header, timestamp, BODY, now=TS) == reason


def test_wrong_secret_and_rotation():
    header = sign("whsec_old", TS, BODY)
    assert not verify(SECRET, header, TS, BODY, now=TS)
    assert verify([SECRET, "whsec_old"], header, TS, BODY, now=TS)
    both = signed_headers(["whsec_new", "whsec_old"], BODY, now=TS, event_id="evt_1")[SIGNATURE_HEADER]
    assert verify("whsec_new", both, TS, BODY, now=TS) and verify("whsec_old", both, TS, BODY, now=TS)


def test_signed_headers():
    headers = signed_headers(SECRET, BODY, now=TS + 0.9, event_id="evt_1")
    assert headers[TIMESTAMP_HEADER] == str(TS) and headers[EVENT_ID_HEADER] == "evt_1"
    assert headers["Content-Type"] == "application/json"
    assert verify(SECRET, headers[SIGNATURE_HEADER], headers[TIMESTAMP_HEADER], BODY, now=TS)
    with pytest.raises(ValueError):
        signed_headers([], BODY, now=TS, event_id="evt_1")


@given(body=st.binary(min_size=1, max_size=300), data=st.data())
def test_property_any_single_byte_change_fails(body, data):
    header = sign(SECRET, TS, body)
    assert verify(SECRET, header, TS, body, now=TS)
    i = data.draw(st.integers(0, len(body) - 1))
    flip = data.draw(st.integers(1, 255))
    tampered = body[:i] + bytes([body[i] ^ flip]) + body[i + 1:]
    assert not verify(SECRET, header, TS, tampered, now=TS)
    # Moving a byte between the timestamp and the body changes the signed text too.
    assert not verify(SECRET, header, TS + 1, body, now=TS)
    j = data.draw(st.integers(3, len(header) - 1))
    new_char = data.draw(st.sampled_from("0123456789abcdef").filter(lambda c: c != header[j]))
    assert not verify(SECRET, header[:j] + new_char + header[j + 1:], TS, body, now=TS)


def test_encode_event_is_stable_json():
    at = datetime(2025, 11, 20, 10, 0, tzinfo=UTC)
    body = encode_event("evt_1", "shipment.delivered", at, {"shipment_id": "shp_1", "name": "Zoë"}, "mer_1")
    assert body == encode_event("evt_1", "shipment.delivered", at, {"name": "Zoë", "shipment_id": "shp_1"}, "mer_1")
    assert json.loads(body) == {"id": "evt_1", "type": "shipment.delivered", "occurred_at": "2025-11-20T10:00:00Z",
                                "merchant_id": "mer_1", "data": {"shipment_id": "shp_1", "name": "Zoë"}}
    with pytest.raises(ValueError):
        encode_event("evt_1", "x", datetime(2025, 1, 1), {})


def test_secrets_are_random_and_prefixed():
    a, b = new_webhook_secret(), new_webhook_secret()
    assert a != b and a.startswith("whsec_") and len(a) >= 6 + 43


# --- retries --------------------------------------------------------------------------------


def test_nominal_schedule_30s_doubling_to_6h_within_24h():
    waits = nominal_schedule()
    assert waits[:4] == [30, 60, 120, 240]
    assert max(waits) == RETRY_CAP_S == 6 * 3600
    assert sum(waits) <= GIVE_UP_AFTER.total_seconds() < sum(waits) + RETRY_CAP_S
    assert len(waits) + 1 == 13  # attempts in all


@given(attempts=st.integers(1, 1000), seed=st.integers(0, 2**32))
def test_property_retry_delay_bounds(attempts, seed):
    delay = retry_delay(attempts, random.Random(seed))
    nominal = min(RETRY_CAP_S, 30 * 2.0 ** min(attempts - 1, 64))
    assert 0.8 * nominal <= delay <= nominal


def test_a_delivery_that_always_fails_gives_up_after_about_a_day():
    rng = random.Random(3)
    d = new_delivery("evt_1", "end_1", T0)
    assert d.state is DeliveryState.PENDING and d.next_attempt_at == T0
    now = T0
    while d.state is DeliveryState.PENDING:
        assert d.next_attempt_at is not None
        now = d.next_attempt_at
        d = after_attempt(d, now, 500, rng=rng)
    assert d.state is DeliveryState.FAILED and d.last_error == "HTTP 500"
    assert 12 <= d.attempts <= 16
    assert now - T0 <= GIVE_UP_AFTER
    again = replay(d, now + timedelta(days=2))
    assert again.state is DeliveryState.PENDING and again.attempts == 0 and again.first_attempt_at is None


def test_delivery_success_timeout_and_redirect():
    d = new_delivery("evt_1", "end_1", T0)
    d = after_attempt(d, T0, None, "timeout after 10 s", rng=random.Random(1))
    assert d.state is DeliveryState.PENDING and d.last_error == "timeout after 10 s" and d.attempts == 1
    assert d.next_attempt_at is not None and 24 <= (d.next_attempt_at - T0).total_seconds() <= 30
    d = after_attempt(d, d.next_attempt_at, 302)
    assert d.state is DeliveryState.PENDING  # redirects are not followed
    done = after_attempt(d, T0 + timedelta(minutes=5), 204)
    assert done.state is DeliveryState.DELIVERED and done.attempts == 3 and done.delivered_at is not None
    assert [attempt_succeeded(s) for s in (200, 299, 300, 199, None, 410)] == [True, True, False, False, False, False]


def test_paused_endpoint_holds_new_deliveries():
    held = new_delivery("evt_2", "end_1", T0, endpoint_paused=True)
    assert held.state is DeliveryState.HELD and held.next_attempt_at is None
    assert hold(new_delivery("evt_3", "end_1", T0)).state is DeliveryState.HELD
    assert replay(held, T0).state is DeliveryState.PENDING


def test_endpoint_pauses_after_n_failures_over_at_least_an_hour():
    health = EndpointHealth()
    paused_now = []
    # A burst of failures within a minute does not pause it.
    for i in range(PAUSE_AFTER_FAILURES * 2):
        health, paused = record_attempt(health, False, T0 + timedelta(seconds=i))
        paused_now.append(paused)
    assert not any(paused_now) and not health.paused
    # A success resets the streak.
    health, _ = record_attempt(health, True, T0 + timedelta(minutes=2))
    assert health == EndpointHealth()
    # Failing for over an hour with N failures pauses it, once.
    for i in range(PAUSE_AFTER_FAILURES - 1):
        health, paused = record_attempt(health, False, T0 + timedelta(minutes=5 * i))
        assert not paused
    health, paused = record_attempt(health, False, T0 + timedelta(hours=2))
    assert paused and health.paused and health.consecutive_failures == PAUSE_AFTER_FAILURES
    health, paused = record_attempt(health, False, T0 + timedelta(hours=3))
    assert not paused and health.paused  # the merchant is emailed once, not per failure
    assert resume(health) == EndpointHealth()


# --- addresses --------------------------------------------------------------------------------


@pytest.mark.parametrize(("address", "expected"), [
    ("8.8.8.8", "public"),
    ("1.1.1.1", "public"),
    ("52.95.110.1", "public"),
    ("0.0.0.0", "unspecified"),
    ("0.1.2.3", "this-network"),
    ("10.1.2.3", "private"),
    ("172.16.0.1", "private"),
    ("172.31.255.255", "private"),
    ("172.32.0.1", "public"),
    ("192.168.1.1", "private"),
    ("100.64.0.1", "cgnat"),
    ("100.100.100.200", "cgnat"),  # a cloud metadata address
    ("100.128.0.1", "public"),
    ("127.0.0.1", "loopback"),
    ("127.255.255.254", "loopback"),
    ("169.254.169.254", "link-local"),  # EC2 instance metadata
    ("169.254.170.2", "link-local"),  # ECS task metadata
    ("192.0.0.192", "ietf-protocol"),
    ("192.0.2.1", "documentation"),
    ("198.51.100.1", "documentation"),
    ("203.0.113.1", "documentation"),
    ("192.88.99.1", "6to4-relay"),
    ("198.18.0.1", "benchmarking"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "broadcast"),
    ("2606:4700:4700::1111", "public"),
    ("2a00:1450:4001:80b::200e", "public"),
    ("::", "unspecified"),
    ("::1", "loopback"),
    ("fe80::1", "link-local"),
    ("fe80::1%eth0", "scoped"),
    ("fc00::1", "unique-local"),
    ("fd00:ec2::254", "unique-local"),  # EC2 instance metadata over IPv6
    ("fec0::1", "site-local"),
    ("ff02::1", "multicast"),
    ("ff0e::1", "multicast"),
    ("2001:db8::1", "documentation"),
    ("3fff::1", "documentation"),
    ("2001::1", "teredo"),
    ("2001:2::1", "ietf-protocol"),
    ("100::1", "discard"),
    ("64:ff9b:1::1", "nat64-local"),
    ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped
    ("::ffff:169.254.169.254", "link-local"),
    ("::ffff:10.0.0.1", "private"),
    ("::ffff:8.8.8.8", "public"),
    ("64:ff9b::a9fe:a9fe", "link-local"),  # NAT64 of 169.254.169.254
    ("64:ff9b::808:808", "public"),  # NAT64 of 8.8.8.8
    ("2002:7f00:1::1", "loopback"),  # 6to4 of 127.0.0.1
    ("2002:c0a8:101::1", "private"),  # 6to4 of 192.168.1.1
    ("2002:808:808::1", "public"),
    ("::127.0.0.1", "reserved"),  # deprecated IPv4-compatible
    ("5f00::1", "reserved"),
    ("localhost", "invalid"),
    ("127.1", "invalid"),
    ("2130706433", "invalid"),
])
def test_address_classes(address, expected):
    assert address_class(address) == expected
    assert is_public_address(address) is (expected == "public")


# --- URLs --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("url", "code"), [
    ("https://hooks.example.com/doorstep", None),
    ("https://hooks.example.com:8443/doorstep?tenant=1", None),
    ("https://hooks.example.com:443/", None),
    ("https://hooks.example.com./x", None),
    ("https://8.8.8.8/hook", None),
    ("https://[2606:4700:4700::1111]/hook", None),
    ("https://xn--bcher-kva.example/hook", None),
    ("http://hooks.example.com/", "scheme"),
    ("ftp://hooks.example.com/", "scheme"),
    ("hooks.example.com/x", "scheme"),
    ("https://user:pw@hooks.example.com/", "userinfo"),
    ("https://hooks.example.com@169.254.169.254/", "userinfo"),
    ("https://hooks.example.com/#frag", "fragment"),
    ("https://hooks.example.com:22/", "port"),
    ("https://hooks.example.com:80/", "port"),
    ("https://hooks.example.com:0/", "port"),
    ("https://hooks.example.com:99999/", "invalid"),
    ("https://hooks.example.com:abc/", "invalid"),
    ("https://[::1/", "invalid"),
    ("https:///path", "host"),
    ("https://localhost/", "host"),
    ("https://intranet/", "host"),
    ("https://api.localhost/", "host"),
    ("https://printer.local/", "host"),
    ("https://metadata.google.internal/", "host"),
    ("https://router.home.arpa/", "host"),
    ("https://bad_label-.example.com/", "host"),
    ("https://127.0.0.1/", "address_not_allowed"),
    ("https://169.254.169.254/latest/meta-data/", "address_not_allowed"),
    ("https://10.0.0.5/", "address_not_allowed"),
    ("https://100.64.1.1/", "address_not_allowed"),
    ("https://0.0.0.0/", "address_not_allowed"),
    ("https://[::1]/", "address_not_allowed"),
    ("https://[::ffff:127.0.0.1]/", "address_not_allowed"),
    ("https://[::ffff:7f00:1]/", "address_not_allowed"),
    ("https://[fd00:ec2::254]/", "address_not_allowed"),
    ("https://[fe80::1%25eth0]/", "host"),
    ("https://2130706433/", "host"),  # decimal 127.0.0.1
    ("https://0x7f000001/", "host"),
    ("https://0177.0.0.1/", "host"),  # octal
    ("https://127.1/", "host"),
    ("https://hooks.example.com/a b", "invalid"),
    ("https://hooks.example.com/\x00", "invalid"),
    ("https://bücher.example/", "invalid"),
    ("https://hooks.example.com\\@evil.example/", "invalid"),
    ("https://hooks.example.com/" + "a" * 2048, "too_long"),
    ("", "required"),
])
def test_check_webhook_url_production(url, code):
    problem = check_webhook_url(url, field="webhook.url")
    assert (problem.code if problem else None) == code
    if problem:
        assert problem.field == "webhook.url" and problem.message


@pytest.mark.parametrize(("url", "ok"), [
    ("http://localhost:8080/hook", True),
    ("http://127.0.0.1:9000/hook", True),
    ("http://[::1]:9000/hook", True),
    ("http://192.168.1.20/hook", True),
    ("http://host.docker.internal:8080/hook", True),
    ("http://receiver/hook", True),
    ("http://169.254.169.254/latest/meta-data/", False),  # never the metadata service
    ("http://[fe80::1]/", False),
    ("http://100.64.0.1/", False),
    ("http://0.0.0.0:8080/", False),
    ("http://user:pw@localhost/", False),
    ("gopher://localhost/", False),
])
def test_check_webhook_url_local_stack(url, ok):
    assert (check_webhook_url(url, allow_http_local=True) is None) is ok


def resolver_of(*answers: str):
    def resolve(host: str) -> list[str]:
        return list(answers)
    return resolve


def test_resolve_and_check_accepts_public_answers_and_dedupes():
    target = resolve_and_check("hooks.example.com", resolver_of("93.184.216.34", "2606:2800:220:1::", "93.184.216.34"))
    assert target == CheckedTarget("hooks.example.com", ("93.184.216.34", "2606:2800:220:1::"))


@pytest.mark.parametrize("answers", [
    ("169.254.169.254",), ("127.0.0.1",), ("10.0.0.7",), ("::1",), ("::ffff:127.0.0.1",), ("fd00:ec2::254",),
    ("64:ff9b::a9fe:a9fe",), ("93.184.216.34", "10.0.0.7"),  # one bad answer among good ones is enough
    ("0.0.0.0",),
])
def test_resolve_and_check_refuses_rebinding_to_internal_addresses(answers):
    problem = resolve_and_check("hooks.example.com", resolver_of(*answers))
    assert not isinstance(problem, CheckedTarget) and problem.code == "address_not_allowed"


def test_resolve_and_check_dns_failures_and_literals():
    def broken(host: str) -> list[str]:
        raise OSError("Name or service not known")

    for resolver, code in ((broken, "dns_failed"), (resolver_of(), "dns_failed"),
                           (resolver_of("not-an-ip"), "dns_failed")):
        result = resolve_and_check("hooks.example.com", resolver)
        assert not isinstance(result, CheckedTarget) and result.code == code
    # IP literals are checked without asking DNS.
    assert resolve_and_check("8.8.8.8", broken) == CheckedTarget("8.8.8.8", ("8.8.8.8",))
    refused = resolve_and_check("[::1]", broken)
    assert not isinstance(refused, CheckedTarget) and refused.code == "address_not_allowed"
    # Names refused by the static check never reach the resolver.
    refused = resolve_and_check("localhost", resolver_of("127.0.0.1"))
    assert not isinstance(refused, CheckedTarget) and refused.code == "host"


def test_resolve_and_check_local_stack():
    assert resolve_and_check("localhost", resolver_of("127.0.0.1", "::1"), allow_local=True) == CheckedTarget(
        "localhost", ("127.0.0.1", "::1"))
    refused = resolve_and_check("evil.example", resolver_of("169.254.169.254"), allow_local=True)
    assert not isinstance(refused, CheckedTarget) and refused.code == "address_not_allowed"
