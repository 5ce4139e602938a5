"""Merchant webhooks against in-process moto: the config API, exactly-once delivery from the stream, retries
with backoff, pausing with one email, resume, replay, the delivery log, and SSRF refusals at send time.

The stream records are real (read from moto's stream by the local runner) and go to the `webhook_sender`
Lambda through `client.lambda_.invoke`; `webhook_retries` is invoked the same way with a scheduled event.
The HTTP transport is a fake that scripts answers (timeouts, 500s) except where a test says otherwise;
the clock is the deliverer's, so a test moves time forward instead of waiting.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest

from chalicelib.webhooks.rules import EVENT_ID_HEADER, PAUSE_AFTER_FAILURES, SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from chalicelib.webhooks.transport import Answer
from infra.local.streams import StreamRunner
from tests.integration.conftest import Merchant, new_merchant
from tests.integration.helpers import make_shipment, make_started_route
from tests.integration.streams import webhook_runner

PROJECT_DIR = Path(__file__).resolve().parents[2]
SENDER = "platform@doorstep.example"


# --- fixtures ---------------------------------------------------------------------------------


@dataclass
class Posted:
    url: str
    body: bytes
    headers: dict[str, str]


class FakeTransport:
    """Records every POST; answers what the test scripted for the URL (the last answer repeats), else 200."""

    def __init__(self) -> None:
        self.calls: list[Posted] = []
        self.script: dict[str, list[Answer | Callable[[], Answer]]] = {}
        self.lock = threading.Lock()

    def post(self, url: str, body: bytes, headers: Any) -> Answer:
        with self.lock:
            self.calls.append(Posted(url, body, dict(headers)))
            answers = self.script.get(url) or [Answer(200, 4, None, b"ok")]
            answer = answers.pop(0) if len(answers) > 1 else answers[0]
        return answer() if callable(answer) else answer

    def to(self, url: str) -> list[Posted]:
        return [c for c in self.calls if c.url == url]


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture()
def clock() -> Clock:
    return Clock()


_ENDPOINT_OWNERS: list[str] = []


@pytest.fixture(scope="module", autouse=True)
def delete_endpoints_afterwards() -> Iterator[None]:
    """The session's table outlives this module: without their endpoints, deliveries left pending here give
    up when next due instead of being sent to the hosts these tests named, should a later test run retries."""
    yield
    if _ENDPOINT_OWNERS:
        from chalicelib.storage import get_repository
        from chalicelib.webhooks.store import WebhookStore

        store = WebhookStore(get_repository().client)
        for merchant_id in _ENDPOINT_OWNERS:
            store.delete_endpoint(merchant_id)


@pytest.fixture()
def fake() -> FakeTransport:
    return FakeTransport()


def make_deliverer(transport: Any, clock: Clock) -> Any:
    from chalicelib.notifications.senders import Notifier
    from chalicelib.storage import get_repository
    from chalicelib.webhooks import delivery as webhook_delivery
    from chalicelib.webhooks.store import WebhookStore

    deliverer = webhook_delivery.Deliverer(WebhookStore(get_repository().client), get_repository(), transport,
                                           Notifier(), clock=clock)
    webhook_delivery.use(deliverer)
    return deliverer


@pytest.fixture()
def deliverer(chalice_app: Any, fake: FakeTransport, clock: Clock) -> Iterator[Any]:
    from chalicelib.webhooks import delivery as webhook_delivery

    yield make_deliverer(fake, clock)
    webhook_delivery.use(None)


@pytest.fixture()
def stream(client: Any, chalice_app: Any, tmp_path: Path) -> StreamRunner:
    """The table's stream from now on, delivered to the webhook_sender Lambda; `runner.batches` keeps them."""
    return webhook_runner(client, tmp_path)


def drain(runner: StreamRunner) -> None:
    while runner.poll_once():
        pass


def scheduled_event() -> dict[str, Any]:
    return {"version": "0", "id": str(uuid.uuid4()), "detail-type": "Scheduled Event", "source": "aws.events",
            "account": "123456789012", "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "region": "us-east-1", "resources": ["arn:aws:events:us-east-1:123456789012:rule/webhook-retries"],
            "detail": {}}


def run_retries(client: Any) -> dict[str, int]:
    result: dict[str, int] = client.lambda_.invoke("webhook_retries", scheduled_event()).payload
    return result


def hook_url(merchant: Merchant) -> str:
    """A URL per merchant: the session's table is shared, so each test looks only at its own POSTs."""
    return f"https://hooks.example.com/doorstep/{merchant.id}"


def create_endpoint(merchant: Merchant, **body: Any) -> dict[str, Any]:
    _ENDPOINT_OWNERS.append(merchant.id)
    r = merchant.call("PUT", "/v1/webhook", {"url": hook_url(merchant), **body})
    assert r.status_code == 201, r.body
    endpoint: dict[str, Any] = r.json_body
    return endpoint


def deliveries(merchant: Merchant, query: str = "") -> list[dict[str, Any]]:
    r = merchant.call("GET", f"/v1/webhook/deliveries{query}")
    assert r.status_code == 200, r.body
    items: list[dict[str, Any]] = r.json_body["items"]
    return items


def signed_ok(secret: str, call: Posted, now: float) -> bool:
    return verify(secret, call.headers[SIGNATURE_HEADER], call.headers[TIMESTAMP_HEADER], call.body, now)


def add_events(merchant: Merchant, shipment_id: str, count: int, kind: str = "instructions_updated") -> list[str]:
    """Timeline events written straight to the table (they reach the stream like any other)."""
    from chalicelib.storage import get_repository
    from chalicelib.storage.tables import event_item

    ids = []
    for _ in range(count):
        event_id = f"evt_test_{uuid.uuid4().hex[:12]}"
        now = datetime.now(UTC)
        assert get_repository().put_event_once(event_item(merchant.id, shipment_id, event_id, kind, "recipient",
                                                           now, now))
        ids.append(event_id)
    return ids


# --- the endpoint API -----------------------------------------------------------------------------


def test_endpoint_config_validates_the_url_and_shows_the_secret_once(merchant: Merchant, client: Any) -> None:
    assert merchant.call("GET", "/v1/webhook").status_code == 404
    refused = {
        "http://hooks.example.com/x": "https",  # http only on the local stage
        "https://10.0.0.5/hook": "private",
        "https://169.254.169.254/latest/meta-data": "link-local",
        "https://printer.local/hook": "internal",
        "https://localhost/hook": "fully qualified",
        "https://hooks.example.com:22/x": "port",
    }
    for url, reason in refused.items():
        r = merchant.call("PUT", "/v1/webhook", {"url": url})
        assert r.status_code == 422, (url, r.body)
        details = r.json_body["error"]["details"]
        assert [d["field"] for d in details] == ["url"] and reason in details[0]["reason"], (url, details)
    r = merchant.call("PUT", "/v1/webhook", {"url": hook_url(merchant), "events": ["delivered", "teleported"]})
    assert r.status_code == 422 and r.json_body["error"]["details"][0]["field"] == "events.1"
    assert merchant.call("GET", "/v1/webhook").status_code == 404  # nothing stored by refused requests

    created = create_endpoint(merchant, events=["delivered", "failed", "delivered"])
    secret = created["secret"]
    assert secret.startswith("whsec_") and len(secret) > 40
    assert created["secret_prefix"] == secret[:12] and created["events"] == ["delivered", "failed"]
    assert created["paused"] is False and created["alerts_to"] is None
    shown = merchant.call("GET", "/v1/webhook").json_body
    assert shown["secret"] is None and secret not in json.dumps(shown) and shown["secret_prefix"] == secret[:12]

    settings = merchant.call("GET", "/v1/settings").json_body
    settings["branding"]["support_email"] = "help@shop.example"
    assert merchant.call("PUT", "/v1/settings", settings).status_code == 200
    replaced = merchant.call("PUT", "/v1/webhook", {"url": hook_url(merchant) + "/v2"})
    assert replaced.status_code == 200, replaced.body
    body = replaced.json_body
    assert body["secret"] is None and body["id"] == created["id"] and body["events"] is None
    assert body["alerts_to"] == "help@shop.example" and body["secret_prefix"] == secret[:12]

    rotated = merchant.call("POST", "/v1/webhook/secret").json_body
    assert rotated["secret"].startswith("whsec_") and rotated["secret"] != secret
    expires = datetime.fromisoformat(rotated["previous_secret_expires_at"])
    assert timedelta(hours=23, minutes=59) < expires - datetime.now(UTC) <= timedelta(hours=24)
    assert merchant.call("GET", "/v1/webhook").json_body["secret"] is None

    other = new_merchant(client)
    assert other.call("GET", "/v1/webhook").status_code == 404
    assert other.call("DELETE", "/v1/webhook").status_code == 404
    assert merchant.call("DELETE", "/v1/webhook").status_code == 204
    assert merchant.call("GET", "/v1/webhook").status_code == 404
    paths = client.http.get("/openapi.json").json_body["paths"]
    assert {"/v1/webhook", "/v1/webhook/deliveries", "/v1/webhook/deliveries/{delivery_id}/replay",
            "/v1/webhook/replay", "/v1/webhook/resume", "/v1/webhook/secret"} <= set(paths)


def test_local_receivers_are_allowed_only_where_the_stage_allows_them(merchant: Merchant,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from chalicelib.core.config import SettingsError, get_settings, load_settings

    assert merchant.call("PUT", "/v1/webhook", {"url": "http://127.0.0.1:9999/hook"}).status_code == 422
    monkeypatch.setattr(get_settings(), "webhook_allow_local", True)
    _ENDPOINT_OWNERS.append(merchant.id)
    assert merchant.call("PUT", "/v1/webhook", {"url": "http://127.0.0.1:9999/hook"}).status_code == 201
    link_local = merchant.call("PUT", "/v1/webhook", {"url": "http://169.254.169.254/x"})
    assert link_local.status_code == 422  # the metadata service stays refused, even locally
    env = {"DOORSTEP_STAGE": "prod", "DOORSTEP_TABLE_NAME": "t-1", "DOORSTEP_BUCKET_NAME": "b-1",
           "DOORSTEP_PUBLIC_BASE_URL": "https://track.example.com", "DOORSTEP_TOKEN_SECRET": "x" * 40,
           "DOORSTEP_WEBHOOK_ALLOW_LOCAL": "true"}
    with pytest.raises(SettingsError, match="DOORSTEP_WEBHOOK_ALLOW_LOCAL"):
        load_settings(env)
    assert load_settings({**env, "DOORSTEP_STAGE": "local"}).webhook_allow_local is True


# --- delivery from the stream ------------------------------------------------------------------


def test_lifecycle_events_are_delivered_once_each_with_a_valid_signature(
        merchant: Merchant, client: Any, deliverer: Any, fake: FakeTransport, stream: StreamRunner) -> None:
    secret = create_endpoint(merchant)["secret"]
    _, ships, _ = make_started_route(merchant, 1)
    drain(stream)
    posts = fake.to(hook_url(merchant))
    timeline = merchant.call("GET", f"/v1/shipments/{ships[0]['id']}/timeline").json_body["items"]
    posts.sort(key=lambda p: [e["id"] for e in timeline].index(p.headers[EVENT_ID_HEADER]))  # sent in parallel
    assert [p.headers[EVENT_ID_HEADER] for p in posts] == [e["id"] for e in timeline]
    assert [json.loads(p.body)["type"] for p in posts] == ["created", "assigned", "out_for_delivery"]
    for post, event in zip(posts, timeline, strict=True):
        assert signed_ok(secret, post, time.time())
        assert not signed_ok("whsec_wrong", post, time.time())
        body = json.loads(post.body)
        assert body["id"] == event["id"] and body["merchant_id"] == merchant.id
        assert body["occurred_at"].endswith("Z")
        assert body["data"]["shipment_id"] == ships[0]["id"]
        assert body["data"]["external_ref"] == ships[0]["external_ref"]
        assert (body["data"]["from_status"], body["data"]["to_status"]) == (event.get("from_status"),
                                                                           event.get("to_status"))
        assert post.headers["Content-Type"] == "application/json"

    # Lambda delivers the same batches again (a retry, a second poller): nothing is sent twice.
    for batch in stream.batches:  # type: ignore[attr-defined]
        assert client.lambda_.invoke("webhook_sender", batch).payload == {"batchItemFailures": []}
    assert len(fake.to(hook_url(merchant))) == 3

    log = deliveries(merchant)
    assert [d["event_type"] for d in log] == ["out_for_delivery", "assigned", "created"]  # newest first
    assert {(d["state"], d["attempts"], d["last_status_code"]) for d in log} == {("delivered", 1, 200)}
    detail = merchant.call("GET", f"/v1/webhook/deliveries/{log[0]['id']}").json_body
    assert detail["payload"] == json.loads(posts[2].body) and detail["payload"]["type"] == "out_for_delivery"
    assert [(a["status_code"], a["error"]) for a in detail["attempt_log"]] == [(200, None)]
    assert new_merchant(client).call("GET", f"/v1/webhook/deliveries/{log[0]['id']}").status_code == 404


def test_event_filter_and_merchants_without_an_endpoint(merchant: Merchant, client: Any, deliverer: Any,
                                                        fake: FakeTransport, stream: StreamRunner) -> None:
    create_endpoint(merchant, events=["cancelled"])
    quiet = new_merchant(client)
    shipment = make_shipment(merchant, 1)
    make_shipment(quiet, 1)
    assert merchant.call("POST", f"/v1/shipments/{shipment['id']}/cancel").status_code == 200
    drain(stream)
    posts = fake.to(hook_url(merchant))
    assert [json.loads(p.body)["type"] for p in posts] == ["cancelled"]
    assert [d["event_type"] for d in deliveries(merchant)] == ["cancelled"]
    assert quiet.call("GET", "/v1/webhook/deliveries").json_body["items"] == []


def test_timeouts_and_500s_are_retried_with_backoff_until_delivered_once(
        merchant: Merchant, client: Any, deliverer: Any, fake: FakeTransport, clock: Clock,
        stream: StreamRunner) -> None:
    url = hook_url(merchant)
    secret = create_endpoint(merchant, events=["created"])["secret"]
    fake.script[url] = [Answer(None, 5000, "timeout"), Answer(500, 12, None, b"upstream down"),
                        Answer(200, 8, None, b"ok")]
    make_shipment(merchant, 1)
    drain(stream)
    (first,) = deliveries(merchant)
    assert (first["state"], first["attempts"], first["last_status_code"], first["last_error"]) == (
        "pending", 1, None, "timeout")
    wait_1 = datetime.fromisoformat(first["next_attempt_at"]) - clock.now
    assert timedelta(seconds=23) <= wait_1 <= timedelta(seconds=30)  # 30 s minus up to 20 % jitter

    run_retries(client)  # not due yet
    assert len(fake.to(url)) == 1
    clock.advance(31)
    assert run_retries(client)["attempted"] >= 1
    (second,) = deliveries(merchant)
    assert (second["state"], second["attempts"], second["last_status_code"]) == ("pending", 2, 500)
    assert second["last_error"] == "HTTP 500: upstream down"
    wait_2 = datetime.fromisoformat(second["next_attempt_at"]) - clock.now
    assert timedelta(seconds=47) <= wait_2 <= timedelta(seconds=60) and wait_2 > wait_1  # doubling

    clock.advance(61)
    run_retries(client)
    clock.advance(3600)
    run_retries(client)  # nothing left to send
    posts = fake.to(url)
    assert len(posts) == 3 and len({p.headers[EVENT_ID_HEADER] for p in posts}) == 1
    assert len({p.headers[TIMESTAMP_HEADER] for p in posts}) == 3  # each attempt signed afresh
    assert all(p.body == posts[0].body for p in posts)
    assert signed_ok(secret, posts[2], clock.now.timestamp() - 3600)
    (done,) = deliveries(merchant)
    assert (done["state"], done["attempts"], done["next_attempt_at"]) == ("delivered", 3, None)
    detail = merchant.call("GET", f"/v1/webhook/deliveries/{done['id']}").json_body
    assert [a["status_code"] for a in detail["attempt_log"]] == [None, 500, 200]
    assert merchant.call("GET", "/v1/webhook").json_body["consecutive_failures"] == 0


def test_a_delivery_is_given_up_after_24_hours_and_stays_replayable(
        merchant: Merchant, client: Any, deliverer: Any, fake: FakeTransport, clock: Clock,
        stream: StreamRunner) -> None:
    url = hook_url(merchant)
    create_endpoint(merchant, events=["created"])
    fake.script[url] = [Answer(503, 5)]
    make_shipment(merchant, 1)
    drain(stream)
    for _ in range(40):  # jump from due time to due time
        (item,) = deliveries(merchant)
        if item["state"] != "pending":
            break
        clock.now = datetime.fromisoformat(item["next_attempt_at"]) + timedelta(seconds=1)
        run_retries(client)
    (item,) = deliveries(merchant)
    assert item["state"] == "failed" and item["next_attempt_at"] is None
    assert 10 <= item["attempts"] <= 16  # 30 s doubling to 6 h within a day
    assert len(fake.to(url)) == item["attempts"]
    clock.advance(7 * 24 * 3600)
    run_retries(client)
    assert len(fake.to(url)) == item["attempts"]  # a failed delivery is never retried on its own


def test_overlapping_retry_runs_send_one_attempt_once(merchant: Merchant, client: Any, deliverer: Any,
                                                      fake: FakeTransport, clock: Clock, stream: StreamRunner,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from chalicelib.core.config import get_settings

    if not get_settings().ddb_endpoint_url:
        # moto checks a condition and writes the item in two steps without a lock, so three threads can all
        # pass the claim's condition: that is moto, not the claim. The real engine runs this test in
        # tests/integration/on_dynamodb_local/test_webhooks.py.
        pytest.skip("needs atomic conditional writes across threads: runs on DynamoDB Local")
    url = hook_url(merchant)
    create_endpoint(merchant, events=["created"])

    def slow_ok() -> Answer:
        time.sleep(0.3)
        return Answer(200, 300)

    fake.script[url] = [Answer(500, 3), slow_ok]
    make_shipment(merchant, 1)
    drain(stream)
    (pending,) = deliveries(merchant)
    clock.advance(40)
    # Three runs (EventBridge may invoke twice; a slow run overlaps the next) all read the delivery as due
    # before any of them claims it: the claim's condition is what keeps it to one POST.
    together = threading.Barrier(3, timeout=5)
    claim = deliverer.store.claim

    def claim_together(record: Any, *args: Any) -> Any:
        if record.delivery_id == pending["id"]:
            together.wait()
        return claim(record, *args)

    monkeypatch.setattr(deliverer.store, "claim", claim_together)
    runs = [threading.Thread(target=deliverer.run_retries) for _ in range(3)]
    for run in runs:
        run.start()
    for run in runs:
        run.join()
    assert len(fake.to(url)) == 2  # the first attempt, then one retry however many runs found it due
    (done,) = deliveries(merchant)
    assert (done["state"], done["attempts"]) == ("delivered", 2)


# --- pause, resume -------------------------------------------------------------------------------


def _emails_to(address: str) -> list[Any]:
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.ses.models import ses_backends

    return [m for m in ses_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].sent_messages
            if address in _to_addresses(m)]


def test_failures_pause_the_endpoint_email_once_hold_new_events_and_resume_sends_them(
        merchant: Merchant, client: Any, deliverer: Any, fake: FakeTransport, clock: Clock, stream: StreamRunner,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from chalicelib.core.config import get_settings

    boto3.client("ses").verify_email_identity(EmailAddress=SENDER)
    monkeypatch.setattr(get_settings(), "email_sender", SENDER)
    alert = f"ops-{merchant.id}@shop.example"
    url = hook_url(merchant)
    secret = create_endpoint(merchant, alert_email=alert, events=["instructions_updated"])["secret"]
    fake.script[url] = [Answer(500, 3)]
    shipment = make_shipment(merchant, 1)
    add_events(merchant, shipment["id"], 1)
    drain(stream)  # failing since now
    clock.advance(3700)  # ... for over an hour: the next failures may pause it
    add_events(merchant, shipment["id"], PAUSE_AFTER_FAILURES + 4)
    drain(stream)
    endpoint = merchant.call("GET", "/v1/webhook").json_body
    assert endpoint["paused"] is True and endpoint["consecutive_failures"] >= PAUSE_AFTER_FAILURES
    (email,) = _emails_to(alert)
    assert "paused" in email.subject and "hooks.example.com" in email.body and merchant.id not in email.body
    assert email.source.endswith(f"<{SENDER}>")
    attempted = len(fake.to(url))
    assert PAUSE_AFTER_FAILURES <= attempted <= PAUSE_AFTER_FAILURES + 5

    new = add_events(merchant, shipment["id"], 3)  # while paused: held, not attempted, not lost
    drain(stream)
    clock.advance(6 * 3600)
    report = run_retries(client)  # the failed ones come due: held too, not attempted
    assert report["held"] >= 1
    assert len(fake.to(url)) == attempted
    held = deliveries(merchant, "?state=held&limit=100")
    assert {d["event_id"] for d in held} >= set(new)
    assert len(_emails_to(alert)) == 1  # once, however many deliveries were held
    assert merchant.call("POST", "/v1/webhook/replay",
                         {"from": "2020-01-01T00:00:00Z", "to": "2020-01-02T00:00:00Z"}).status_code == 409

    fake.script[url] = [Answer(200, 3)]
    resumed = merchant.call("POST", "/v1/webhook/resume")
    assert resumed.status_code == 200, resumed.body
    assert resumed.json_body["endpoint"]["paused"] is False and resumed.json_body["more_held"] is False
    assert resumed.json_body["requeued"] == len(held)
    assert deliveries(merchant, "?state=held") == []
    clock.now = datetime.now(UTC) + timedelta(seconds=1)
    run_retries(client)
    sent_after = fake.to(url)[attempted:]
    assert sorted(p.headers[EVENT_ID_HEADER] for p in sent_after) == sorted(d["event_id"] for d in held)
    assert all(signed_ok(secret, p, clock.now.timestamp()) for p in sent_after)
    run_retries(client)
    assert len(fake.to(url)) == attempted + len(held)  # each held one once
    assert merchant.call("GET", "/v1/webhook").json_body["paused"] is False
    assert len(_emails_to(alert)) == 1


# --- replay and the log -----------------------------------------------------------------------


def test_replay_one_delivery_and_a_time_range(merchant: Merchant, client: Any, deliverer: Any,
                                              fake: FakeTransport, clock: Clock, stream: StreamRunner,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from chalicelib.webhooks import service as webhooks

    url = hook_url(merchant)
    secret = create_endpoint(merchant)["secret"]
    make_started_route(merchant, 2)  # 2 created, 2 assigned, 2 out for delivery
    drain(stream)
    log = deliveries(merchant)
    assert len(log) == 6 and len(fake.to(url)) == 6
    one = log[-1]
    before = {p.headers[EVENT_ID_HEADER]: p for p in fake.to(url)}[one["event_id"]]

    replayed = merchant.call("POST", f"/v1/webhook/deliveries/{one['id']}/replay")
    assert replayed.status_code == 202, replayed.body
    assert (replayed.json_body["state"], replayed.json_body["replays"]) == ("pending", 1)
    clock.now = datetime.now(UTC) + timedelta(seconds=5)
    run_retries(client)
    again = fake.to(url)[6:]
    assert len(again) == 1 and again[0].headers[EVENT_ID_HEADER] == one["event_id"]
    assert again[0].body == before.body and again[0].headers[TIMESTAMP_HEADER] != before.headers[TIMESTAMP_HEADER]
    assert signed_ok(secret, again[0], clock.now.timestamp())

    assert merchant.call("POST", "/v1/webhook/deliveries/whd_0000000000000_00000000000000000000/replay"
                         ).status_code == 404
    assert new_merchant(client).call("POST", f"/v1/webhook/deliveries/{one['id']}/replay").status_code == 404
    week = merchant.call("POST", "/v1/webhook/replay", {"from": "2026-01-01T00:00:00Z", "to": "2026-01-09T00:00:00Z"})
    assert week.status_code == 422 and week.json_body["error"]["details"][0]["field"] == "to"
    window = {"from": (datetime.fromisoformat(log[-1]["created_at"]) - timedelta(seconds=1)).isoformat(),
              "to": (datetime.fromisoformat(log[0]["created_at"]) + timedelta(seconds=1)).isoformat()}
    monkeypatch.setattr(webhooks, "MAX_REPLAY_DELIVERIES", 5)
    too_many = merchant.call("POST", "/v1/webhook/replay", window)
    assert too_many.status_code == 422 and too_many.json_body["error"]["details"][0]["field"] == "to"
    monkeypatch.setattr(webhooks, "MAX_REPLAY_DELIVERIES", 1000)
    ranged = merchant.call("POST", "/v1/webhook/replay", window)
    assert ranged.status_code == 202 and ranged.json_body == {"replayed": 6}
    clock.advance(5)
    run_retries(client)
    assert sorted(p.headers[EVENT_ID_HEADER] for p in fake.to(url)[7:]) == sorted(d["event_id"] for d in log)
    assert {d["replays"] for d in deliveries(merchant)} == {1, 2}


def test_the_delivery_log_pages_and_filters_by_time_and_state(merchant: Merchant, client: Any, deliverer: Any,
                                                              fake: FakeTransport, stream: StreamRunner) -> None:
    url = hook_url(merchant)
    create_endpoint(merchant, events=["instructions_updated"])
    shipment = make_shipment(merchant, 1)
    fake.script[url] = [Answer(200, 1), Answer(200, 1), Answer(500, 1)]
    add_events(merchant, shipment["id"], 5)
    drain(stream)
    everything = deliveries(merchant)
    assert len(everything) == 5 and everything == sorted(everything, key=lambda d: d["id"], reverse=True)
    pages, cursor = [], ""
    while True:
        r = merchant.call("GET", f"/v1/webhook/deliveries?limit=2{cursor}")
        pages.append([d["id"] for d in r.json_body["items"]])
        if not r.json_body["next_cursor"]:
            break
        cursor = f"&cursor={r.json_body['next_cursor']}"
    assert [i for page in pages for i in page] == [d["id"] for d in everything] and len(pages) == 3
    failed_or_pending = deliveries(merchant, "?state=pending")
    assert len(failed_or_pending) == 3 and all(d["last_status_code"] == 500 for d in failed_or_pending)
    r = merchant.call("GET", "/v1/webhook/deliveries?state=delivered&limit=1")
    assert len(r.json_body["items"]) == 1 and r.json_body["items"][0]["state"] == "delivered"
    assert r.json_body["next_cursor"]
    page2 = merchant.call("GET", f"/v1/webhook/deliveries?state=delivered&limit=1&cursor={r.json_body['next_cursor']}")
    assert [d["state"] for d in page2.json_body["items"]] == ["delivered"]
    assert page2.json_body["items"][0]["id"] != r.json_body["items"][0]["id"]
    wrong_listing = merchant.call("GET", f"/v1/webhook/deliveries?cursor={r.json_body['next_cursor']}")
    assert wrong_listing.status_code == 400 and wrong_listing.json_body["error"]["details"][0]["field"] == "cursor"
    middle = everything[2]["created_at"]
    newer = deliveries(merchant, f"?from={middle.replace('+00:00', 'Z')}")
    assert {d["id"] for d in newer} >= {d["id"] for d in everything[:3]}
    assert merchant.call("GET", "/v1/webhook/deliveries?from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z"
                         ).status_code == 422
    assert merchant.call("GET", "/v1/webhook/deliveries?state=lost").status_code == 422
    assert merchant.call("GET", "/v1/webhook/deliveries?from=yesterday").status_code == 422


# --- addresses checked at send time -------------------------------------------------------------


@pytest.mark.parametrize(("answer", "kind"), [("127.0.0.1", "loopback"), ("169.254.169.254", "link-local"),
                                             ("10.20.30.40", "private"), ("::ffff:127.0.0.1", "loopback")])
def test_a_host_resolving_to_an_internal_address_is_refused_at_send_time(
        merchant: Merchant, client: Any, clock: Clock, stream: StreamRunner, monkeypatch: pytest.MonkeyPatch,
        answer: str, kind: str) -> None:
    from chalicelib.webhooks import delivery as webhook_delivery
    from chalicelib.webhooks import transport as webhook_transport

    connects: list[Any] = []

    def no_connect(self: Any) -> None:
        connects.append(self)
        raise AssertionError("must not connect")

    monkeypatch.setattr(webhook_transport._PinnedHTTPSConnection, "connect", no_connect)
    # The name was public when the merchant saved it; now DNS answers an internal address (rebinding).
    make_deliverer(webhook_transport.HttpTransport(resolver=lambda host: [answer]), clock)
    try:
        create_endpoint(merchant, events=["created"])
        make_shipment(merchant, 1)
        drain(stream)
    finally:
        webhook_delivery.use(None)
    (item,) = deliveries(merchant)
    assert (item["state"], item["last_status_code"]) == ("pending", None)
    assert item["last_error"].startswith("refused:") and kind in item["last_error"], item["last_error"]
    assert connects == []


# --- against real HTTP servers -------------------------------------------------------------------


class _Scripted(BaseHTTPRequestHandler):
    """Answers per request from the server's script: ("sleep", s) first stalls, (status, headers) answers."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        server: Any = self.server
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with server.lock:
            server.received.append((self.path, dict(self.headers), body))
            step = server.script.pop(0) if len(server.script) > 1 else server.script[0]
        if step[0] == "sleep":
            time.sleep(step[1])
            step = (200, {})
        status, headers = step
        reply = b'{"ok": true}'
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)


@pytest.fixture()
def server() -> Iterator[Any]:
    httpd: Any = ThreadingHTTPServer(("127.0.0.1", 0), _Scripted)
    httpd.daemon_threads = True
    httpd.received, httpd.script, httpd.lock = [], [(200, {})], threading.Lock()
    httpd.handle_error = lambda *args: None  # the stalled answer's client is gone by the time it writes
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def test_a_real_endpoint_that_times_out_then_fails_then_answers_gets_the_event_once_delivered(
        merchant: Merchant, client: Any, clock: Clock, stream: StreamRunner, server: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from chalicelib.core.config import get_settings
    from chalicelib.webhooks import delivery as webhook_delivery
    from chalicelib.webhooks.transport import HttpTransport

    monkeypatch.setattr(get_settings(), "webhook_allow_local", True)  # what the local stage allows
    port = server.server_address[1]
    _ENDPOINT_OWNERS.append(merchant.id)
    r = merchant.call("PUT", "/v1/webhook", {"url": f"http://127.0.0.1:{port}/hooks?tenant=7", "events": ["created"]})
    assert r.status_code == 201, r.body
    secret = r.json_body["secret"]
    server.script = [("sleep", 1.5), (500, {}), (200, {})]
    make_deliverer(HttpTransport(allow_local=True, timeout=0.5), clock)
    try:
        make_shipment(merchant, 1)
        drain(stream)
        for _ in range(2):
            (item,) = deliveries(merchant)
            clock.now = datetime.fromisoformat(item["next_attempt_at"]) + timedelta(seconds=1)
            run_retries(client)
    finally:
        webhook_delivery.use(None)
    (item,) = deliveries(merchant)
    assert (item["state"], item["attempts"], item["last_status_code"]) == ("delivered", 3, 200)
    detail = merchant.call("GET", f"/v1/webhook/deliveries/{item['id']}").json_body
    assert [(a["status_code"], a["error"]) for a in detail["attempt_log"]] == [
        (None, "timeout"), (500, 'HTTP 500: {"ok": true}'), (200, None)]
    assert len(server.received) == 3 and {p for p, _, _ in server.received} == {"/hooks?tenant=7"}
    assert len({h[EVENT_ID_HEADER] for _, h, _ in server.received}) == 1
    _, headers, body = server.received[-1]
    assert verify(secret, headers[SIGNATURE_HEADER], headers[TIMESTAMP_HEADER], body, clock.now.timestamp())
    assert headers["Host"] == f"127.0.0.1:{port}"


def test_the_transport_connects_to_the_checked_address_and_follows_no_redirect(server: Any) -> None:
    from chalicelib.webhooks.transport import HttpTransport

    port = server.server_address[1]
    asked: list[str] = []

    def resolver(host: str) -> list[str]:
        asked.append(host)
        return ["127.0.0.1"]

    server.script = [(302, {"Location": f"http://127.0.0.1:{port}/elsewhere"})]
    transport = HttpTransport(allow_local=True, resolver=resolver, timeout=2)
    # A name no DNS server knows: the POST reaches the server only through the resolver's checked answer.
    answer = transport.post(f"http://hooks.doorstep-test.example:{port}/in", b"{}", {"Content-Type": "a/b"})
    assert answer.status == 302 and asked == ["hooks.doorstep-test.example"]
    assert [p for p, _, _ in server.received] == ["/in"]  # the redirect was not followed
    assert server.received[0][1]["Host"] == f"hooks.doorstep-test.example:{port}"
    refused = HttpTransport(resolver=resolver).post(f"http://hooks.doorstep-test.example:{port}/in", b"{}", {})
    assert refused.status is None and "loopback" in str(refused.error) and len(server.received) == 1
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead_port = closed.getsockname()[1]
    assert HttpTransport(allow_local=True).post(f"http://127.0.0.1:{dead_port}/", b"{}", {}).error == (
        "connection refused")


# --- the deployed wiring --------------------------------------------------------------------------


@pytest.mark.parametrize(("event_name", "sk", "delivered"), [
    ("INSERT", "EVENT#2026-01-01T00:00:00.000Z#evt_1", True),
    ("MODIFY", "EVENT#2026-01-01T00:00:00.000Z#evt_1", False),
    ("REMOVE", "EVENT#2026-01-01T00:00:00.000Z#evt_1", False),
    ("INSERT", "PING#1714000000000", False),
    ("INSERT", "POINTS#1714000000000#0a1b2c3d", False),
    ("INSERT", "DELIVERY#whd_1", False),  # the sender's own log items
    ("MODIFY", "ENDPOINT", False),
])
def test_the_webhook_stream_filter_passes_new_timeline_events_only(event_name: str, sk: str,
                                                                     delivered: bool) -> None:
    from tests.integration.test_infra import _filter_matches

    resources = json.loads((PROJECT_DIR / "infra" / "resources.json").read_text())["Resources"]
    mapping = resources["WebhookSenderEventSourceMapping"]["Properties"]
    assert mapping["FunctionName"] == {"Ref": "WebhookSender"}
    assert "ReportBatchItemFailures" in mapping["FunctionResponseTypes"]
    assert mapping["DestinationConfig"]["OnFailure"]["Destination"] == {
        "Fn::GetAtt": ["WebhookDeadLetterQueue", "Arn"]}
    record = {"eventName": event_name, "dynamodb": {"Keys": {"PK": {"S": "SHIPMENT#s1"}, "SK": {"S": sk}}}}
    filters = [json.loads(f["Pattern"]) for f in mapping["FilterCriteria"]["Filters"]]
    assert any(_filter_matches(f, record) for f in filters) is delivered


def test_the_local_stream_runner_feeds_both_stream_functions() -> None:
    import app as app_module
    from infra.local.functions import handler_of
    from infra.local.streams import CONSUMERS

    names = [c[0] for c in CONSUMERS]
    assert names == ["stream_pipeline", "webhook_sender"]
    assert len({c[1] for c in CONSUMERS}) == len(CONSUMERS)  # each its own checkpoint
    for name in names:
        assert callable(handler_of(app_module.app, name))


def _to_addresses(message: Any) -> list[str]:
    """SendEmail records {"ToAddresses": [...]}, SendRawEmail (recipient emails) a plain list."""
    destinations = getattr(message, "destinations", None) or {}
    return list(destinations) if isinstance(destinations, list) else list(destinations.get("ToAddresses", []))
