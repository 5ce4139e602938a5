"""The fault suite: what the API acknowledged is stored, whatever the storage does meanwhile.

Against a real emulator process behind the fault proxy (tests/faults/emulator.py picks DynamoDB Local when it
is there, else the moto server) and `chalice local` with the stage's own timeouts. Clients behave as the
project's clients do: a phone resends a refused batch after `Retry-After`, a back office retries a create with
the same Idempotency-Key. Each test then reads the table directly and counts:

- storage pause: acknowledged pings and shipments all stored; every request during the pause answers 503 with
  Retry-After within the API's time (measured);
- slow commit: writes applied whose answers were lost answer what they did (201, 200), not 500 or 409;
- cancelled transactions (capacity, throttling, conflict): 503, retried, stored once;
- concurrent idempotent replays of one ping batch and one shipment create: one stored copy, no ack lost.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from chalicelib.storage.fix_chunks import decode_fix_times
from tests.faults.conftest import Answer, Stack, call
from tests.faults.emulator import stage_environment
from tests.faults.proxy import FaultProxy, Rule

TABLE = stage_environment()["DOORSTEP_TABLE_NAME"]
READ_TIMEOUT_S = float(stage_environment()["DOORSTEP_DDB_READ_TIMEOUT_S"])
MAX_ATTEMPTS = int(stage_environment()["DOORSTEP_DDB_MAX_ATTEMPTS"])
API_TIME_LIMIT_S = 25.0  # the functions' timeout (API Gateway's own is 29 s)
MEASURED: dict[str, Any] = {}


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def now_ms() -> int:
    return int(time.time() * 1000)


def retrying(send: Callable[[], Answer], deadline_s: float = 90.0) -> tuple[Answer, list[Answer]]:
    """Send until the answer is not a 503 (sleeping its Retry-After), as a phone or a back office would."""
    answers: list[Answer] = []
    stop = time.monotonic() + deadline_s
    while True:
        try:
            answer = send()
        except OSError:  # the API itself did not answer in time
            answer = Answer(0, {}, None, 0.0)
        answers.append(answer)
        if answer.status not in (0, 503) or time.monotonic() > stop:
            return answer, answers
        time.sleep(min(float(answer.headers.get("retry-after", 1)), 3.0))


def stored_fix_times(stack: Stack, driver_id: str) -> set[int]:
    client, found, start = stack.storage(), set(), None
    while True:
        kwargs: dict[str, Any] = {"TableName": TABLE, "KeyConditionExpression": "PK = :pk AND begins_with(SK, :p)",
                                  "ExpressionAttributeValues": {":pk": {"S": f"DRIVER#{driver_id}"},
                                                                ":p": {"S": "POINTS#"}},
                                  "ConsistentRead": True}
        if start:
            kwargs["ExclusiveStartKey"] = start
        page = client.query(**kwargs)
        for item in page.get("Items", []):  # one chunk per accepted request (storage/fix_chunks.py)
            found.update(decode_fix_times(item["f"]["S"]))
        start = page.get("LastEvaluatedKey")
        if not start:
            return found


def stored_shipments(stack: Stack, merchant_id: str) -> dict[str, str]:
    """shipment id -> external_ref, of every shipment stored for the merchant."""
    client, found, start = stack.storage(), {}, None
    while True:
        kwargs: dict[str, Any] = {"TableName": TABLE, "KeyConditionExpression": "PK = :pk AND begins_with(SK, :p)",
                                  "ExpressionAttributeValues": {":pk": {"S": f"MERCHANT#{merchant_id}"},
                                                                ":p": {"S": "SHIPMENT#"}},
                                  "ConsistentRead": True}
        if start:
            kwargs["ExclusiveStartKey"] = start
        page = client.query(**kwargs)
        for item in page.get("Items", []):
            found[item["shipment_id"]["S"]] = item.get("external_ref", {}).get("S", "")
        start = page.get("LastEvaluatedKey")
        if not start:
            return found


def shipment_body(ref: str) -> dict[str, Any]:
    return {"recipient": {"name": "Fault Suite", "phone": "+14155550100"},
            "address": {"line1": "1 Main St", "city": "Seattle", "country": "US"},
            "location": {"lat": 47.61, "lng": -122.33}, "delivery_date": "2026-11-21", "external_ref": ref}


class Ledger:
    """What the API acknowledged, from any number of client threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pings: dict[str, set[int]] = {}
        self.shipments: dict[str, set[str]] = {}  # external ref (= idempotency key) -> ids answered
        self.statuses: Counter[int] = Counter()
        self.unavailable_s: list[float] = []

    def answers(self, answers: list[Answer]) -> None:
        with self.lock:
            for a in answers:
                self.statuses[a.status] += 1
                if a.status == 503:
                    self.unavailable_s.append(a.seconds)
                    assert a.headers.get("retry-after"), a
                    assert a.body["error"]["code"] == "service_unavailable", a.body

    def pinged(self, driver_id: str, fixes: list[int], answer: Answer) -> None:
        if answer.status != 200:
            return
        with self.lock:
            acknowledged = self.pings.setdefault(driver_id, set())
            for item in answer.body["items"]:
                if item["status"] in ("accepted", "duplicate"):
                    acknowledged.add(fixes[item["index"]])

    def created(self, ref: str, answer: Answer) -> None:
        if answer.status in (200, 201):
            with self.lock:
                self.shipments.setdefault(ref, set()).add(answer.body["id"])


def new_driver(stack: Stack, key: str) -> dict[str, Any]:
    answer, _ = retrying(lambda: call("POST", f"{stack.base_url}/v1/drivers", {"name": "Fault Driver"}, token=key))
    assert answer.status == 201, answer
    driver: dict[str, Any] = answer.body
    return driver


def post_batch(stack: Stack, driver: dict[str, Any], fixes: list[int], lat: float = 47.61) -> Answer:
    body = {"pings": [{"lat": lat, "lng": -122.33, "fix_time": iso(ms), "accuracy": 5} for ms in fixes]}
    return call("POST", f"{stack.base_url}/v1/driver/pings", body, token=driver["token"])


def send_batch(stack: Stack, ledger: Ledger, driver: dict[str, Any], fixes: list[int], lat: float = 47.61) -> None:
    """A phone's batch, resent until answered; what was acknowledged goes to the ledger."""
    answer, answers = retrying(lambda: post_batch(stack, driver, fixes, lat))
    ledger.answers(answers)
    ledger.pinged(driver["id"], fixes, answer)


def send_create(stack: Stack, ledger: Ledger, key: str, ref: str) -> Answer:
    """A shipment create with Idempotency-Key `ref`, retried with the same key until answered."""
    answer, answers = retrying(lambda: call("POST", f"{stack.base_url}/v1/shipments", shipment_body(ref),
                                            token=key, headers={"Idempotency-Key": ref}))
    ledger.answers(answers)
    ledger.created(ref, answer)
    return answer


def check(stack: Stack, merchant_id: str, ledger: Ledger) -> dict[str, int]:
    """Counts: acknowledged writes, those missing from the table, and idempotency keys that answered or stored
    more than one shipment. A 500 is never acceptable."""
    acknowledged = missing = doubled = 0
    for driver_id, fixes in ledger.pings.items():
        stored = stored_fix_times(stack, driver_id)
        acknowledged += len(fixes)
        missing += len(fixes - stored)
    shipments = stored_shipments(stack, merchant_id)
    by_ref = Counter(shipments.values())
    for ref, ids in ledger.shipments.items():
        acknowledged += 1
        missing += 0 if ids <= set(shipments) else 1
        doubled += 1 if len(ids) > 1 or by_ref[ref] > 1 else 0
    assert ledger.statuses[500] == 0, ledger.statuses
    return {"acknowledged": acknowledged, "missing": missing, "doubled_keys": doubled}


def assert_nothing_lost(stack: Stack, counts: dict[str, int]) -> None:
    """0 acknowledged writes missing, one shipment per key; on moto an expected failure, named as such."""
    if (counts["missing"] or counts["doubled_keys"]) and stack.endpoint.engine == "moto":
        pytest.xfail(f"moto lost {counts['missing']} of {counts['acknowledged']} acknowledged writes and stored "
                     f"{counts['doubled_keys']} idempotency keys twice: its transactions are neither isolated from "
                     "concurrent requests nor safe for them (a cancelled one restores a table snapshot, discarding "
                     "concurrent writes; issue 12). Run the suite against DynamoDB Local "
                     "(DOORSTEP_FAULT_DYNAMODB_URL, or its jar: see tests/faults/emulator.py).")
    assert counts["missing"] == 0 and counts["doubled_keys"] == 0, counts


def test_a_storage_pause_answers_503_in_time_and_loses_no_acknowledged_write(stack: Stack,
                                                                            clean_proxy: FaultProxy) -> None:
    merchant = stack.merchant()
    key = merchant["api_key"]
    drivers = [new_driver(stack, key) for _ in range(3)]
    ledger, stop = Ledger(), threading.Event()
    paused_at: list[float] = []

    def phone(driver: dict[str, Any], offset: int) -> None:
        base, n = now_ms() - 3_600_000 + offset, 0
        while not stop.is_set():
            send_batch(stack, ledger, driver, [base + (n + i) * 1000 for i in range(5)])
            n += 5

    def back_office() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            send_create(stack, ledger, key, f"pause-{n}")

    workers = [threading.Thread(target=phone, args=(d, i * 100)) for i, d in enumerate(drivers)]
    workers.append(threading.Thread(target=back_office))
    for worker in workers:
        worker.start()
    time.sleep(2.0)
    pause_s = MAX_ATTEMPTS * READ_TIMEOUT_S + 4
    clean_proxy.pause()
    paused_at.append(time.monotonic())
    probe = call("GET", f"{stack.base_url}/v1/drivers", token=key)  # a read while paused: how long to the 503?
    time.sleep(max(0.0, pause_s - (time.monotonic() - paused_at[0])))
    clean_proxy.resume()
    time.sleep(3.0)
    stop.set()
    for worker in workers:
        worker.join(timeout=120)
    assert probe.status == 503 and probe.headers.get("retry-after"), probe
    counts = check(stack, merchant["merchant_id"], ledger)
    MEASURED["pause"] = {"engine": stack.endpoint.engine, "seconds_to_503_read": round(probe.seconds, 2),
                         "seconds_to_503_max": round(max(ledger.unavailable_s, default=0.0), 2),
                         "answers": dict(ledger.statuses), **counts}
    print("storage pause:", MEASURED["pause"])
    assert ledger.statuses[503] >= 1, ledger.statuses
    assert probe.seconds < API_TIME_LIMIT_S and max(ledger.unavailable_s) < API_TIME_LIMIT_S, MEASURED["pause"]
    assert_nothing_lost(stack, counts)


def test_slow_commits_answer_what_the_first_attempt_did(stack: Stack, clean_proxy: FaultProxy) -> None:
    merchant = stack.merchant()
    key, base = merchant["api_key"], stack.base_url
    slow = READ_TIMEOUT_S + 1.5

    def slowly(operations: set[str]) -> None:
        clean_proxy.clear()
        clean_proxy.add(Rule("slow", frozenset(operations), times=1, delay_s=slow))

    slowly({"TransactWriteItems"})
    r = call("POST", f"{base}/v1/drivers", {"name": "Slow Driver"}, token=key)
    assert r.status == 201, r
    driver = r.body
    slowly({"TransactWriteItems"})
    r = call("POST", f"{base}/v1/shipments", shipment_body("slow-1"), token=key)
    assert r.status == 201, r
    first = r.body
    slowly({"TransactWriteItems"})
    r = call("POST", f"{base}/v1/shipments", shipment_body("slow-2"), token=key, headers={"Idempotency-Key": "slow-2"})
    assert r.status == 201, r
    second = r.body
    clean_proxy.clear()
    r = call("POST", f"{base}/v1/routes", {"driver_id": driver["id"], "day": "2026-11-21",
                                           "planned_start": "2026-11-21T15:00:00Z",
                                           "shipment_ids": [first["id"], second["id"]]}, token=key)
    assert r.status == 201, r
    route = r.body
    slowly({"UpdateItem"})  # the route's planned -> active
    r = call("POST", f"{base}/v1/routes/{route['id']}/start", token=key)
    assert r.status == 200 and r.body["status"] == "active", r
    slowly({"TransactWriteItems"})
    r = call("POST", f"{base}/v1/shipments/{first['id']}/tracking-link/revoke", token=key)
    assert r.status == 200, r  # not 409 "revoked meanwhile" for its own earlier attempt
    slowly({"BatchWriteItem"})
    r = post_batch(stack, driver, [now_ms() - 10_000])
    assert r.status == 200 and r.body["accepted"] == 1, r
    clean_proxy.clear()
    assert set(stored_shipments(stack, merchant["merchant_id"])) == {first["id"], second["id"]}
    for sid in (first["id"], second["id"]):
        shipment = call("GET", f"{base}/v1/shipments/{sid}", token=key).body
        assert shipment["status"] == "out_for_delivery", shipment
    assert len(stored_fix_times(stack, driver["id"])) == 1
    MEASURED["slow_commit"] = {"engine": stack.endpoint.engine, "injected": dict(clean_proxy.injected)}
    print("slow commit:", MEASURED["slow_commit"])


@pytest.mark.parametrize("reason", ["TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded"])
def test_cancelled_transactions_answer_503_and_are_stored_once_when_retried(stack: Stack, clean_proxy: FaultProxy,
                                                                            reason: str) -> None:
    merchant = stack.merchant()
    key = merchant["api_key"]
    ledger = Ledger()
    clean_proxy.add(Rule("error", frozenset({"TransactWriteItems"}), times=6, code="TransactionCanceledException",
                         reasons=("None", reason, "None", "None")))
    for n in range(4):
        answer = send_create(stack, ledger, key, f"cancel-{reason}-{n}")
        assert answer.status == 201, answer
    assert ledger.statuses[503] == 6, ledger.statuses
    counts = check(stack, merchant["merchant_id"], ledger)
    assert counts == {"acknowledged": 4, "missing": 0, "doubled_keys": 0}


def test_concurrent_idempotent_replays_store_one_copy_and_lose_nothing(stack: Stack, clean_proxy: FaultProxy) -> None:
    """The same ping batch and the same shipment create sent by several clients at once, while other writes go
    on (a replayed create is a cancelled transaction in the storage: it must not take concurrent writes with
    it)."""
    merchant = stack.merchant()
    key = merchant["api_key"]
    drivers = [new_driver(stack, key) for _ in range(2)]
    ledger = Ledger()
    rounds, copies = 6, 6

    def run(target: Callable[..., Any], *args: Any) -> threading.Thread:
        thread = threading.Thread(target=target, args=args)
        thread.start()
        return thread

    base = now_ms() - 3_000_000
    for r in range(rounds):
        fixes = [base + (r * 20 + i) * 1000 for i in range(20)]
        other = [base + 1_000_000 + (r * 20 + i) * 1000 for i in range(20)]
        threads = [run(send_batch, stack, ledger, drivers[0], fixes) for _ in range(copies)]
        threads += [run(send_create, stack, ledger, key, f"replay-{r}") for _ in range(copies)]
        threads.append(run(send_batch, stack, ledger, drivers[1], other, 47.62))
        for thread in threads:
            thread.join(timeout=120)
    counts = check(stack, merchant["merchant_id"], ledger)
    for driver in drivers:
        assert stored_fix_times(stack, driver["id"]) >= ledger.pings.get(driver["id"], set())
    MEASURED["replays"] = {"engine": stack.endpoint.engine, "answers": dict(ledger.statuses), **counts}
    print("concurrent replays:", MEASURED["replays"])
    assert len(ledger.shipments) == rounds
    assert_nothing_lost(stack, counts)


def test_the_engine_answers_a_retried_transaction_by_its_token(stack: Stack) -> None:
    """What the slow-commit answers rest on, asked of the engine directly: the same TransactWriteItems sent again
    with the same ClientRequestToken succeeds although its condition no longer holds (DynamoDB and DynamoDB
    Local; moto ignores tokens, where the repository's read-back answers instead)."""
    if stack.endpoint.engine == "moto":
        pytest.skip("moto ignores ClientRequestToken; the read-back path is tested in tests/integration")
    from chalicelib.storage.repository import transaction_token

    client = stack.storage()
    key = f"FAULTSUITE#{now_ms()}"
    items = [{"Put": {"TableName": TABLE, "Item": {"PK": {"S": key}, "SK": {"S": "X"}},
                      "ConditionExpression": "attribute_not_exists(PK)"}}]
    token = transaction_token(items)
    client.transact_write_items(TransactItems=items, ClientRequestToken=token)
    client.transact_write_items(TransactItems=items, ClientRequestToken=token)  # the retry: success, not cancelled
    with pytest.raises(client.exceptions.TransactionCanceledException):
        client.transact_write_items(TransactItems=items)  # without the token its condition fails
