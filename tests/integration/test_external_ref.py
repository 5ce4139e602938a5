"""A merchant's external_ref is unique (409 naming the holder) and finds its shipment (issue 14)."""

from __future__ import annotations

import os
import threading
from urllib.parse import quote

import pytest

from tests.integration.conftest import new_merchant
from tests.integration.helpers import make_shipment, shipment_body
from tests.integration.test_errors import assert_error


def _find(merchant, ref: str, extra: str = ""):
    r = merchant.call("GET", f"/v1/shipments?external_ref={quote(ref, safe='')}{extra}")
    assert r.status_code == 200, r.body
    assert set(r.json_body) == {"items", "next_cursor"} and r.json_body["next_cursor"] is None
    return r.json_body["items"]


def test_a_duplicate_external_ref_is_a_409_naming_the_existing_shipment(merchant):
    first = make_shipment(merchant, external_ref="ORD-1001")
    r = merchant.call("POST", "/v1/shipments", shipment_body(2, external_ref="ORD-1001"))
    error = assert_error(r, 409, "external_ref_taken", "external_ref")
    assert error["details"] == [{"field": "external_ref", "reason": f"already used by shipment {first['id']}"}]
    assert first["id"] in error["message"]
    # nothing of the refused shipment was written
    listed = merchant.call("GET", "/v1/shipments?limit=100").json_body["items"]
    assert [s["id"] for s in listed] == [first["id"]]


def test_refs_are_exact_and_case_sensitive_and_shipments_without_one_never_conflict(merchant):
    make_shipment(merchant, external_ref="ord-7")
    assert make_shipment(merchant, external_ref="ORD-7")["external_ref"] == "ORD-7"
    body = shipment_body(3)
    del body["external_ref"]
    for _ in range(2):
        assert merchant.call("POST", "/v1/shipments", body).status_code == 201
    assert_error(merchant.call("POST", "/v1/shipments", shipment_body(4, external_ref="")), 422,
                 "validation_failed", "external_ref")


def test_another_merchant_may_use_the_same_ref_and_never_sees_ours(merchant, client):
    mine = make_shipment(merchant, external_ref="shared-ref")
    other = new_merchant(client)
    theirs = make_shipment(other, external_ref="shared-ref")
    assert [s["id"] for s in _find(merchant, "shared-ref")] == [mine["id"]]
    assert [s["id"] for s in _find(other, "shared-ref")] == [theirs["id"]]


def test_lookup_by_external_ref_returns_a_page_of_at_most_one(merchant):
    ref = "A/B ?&=#é"  # any text: the key is a hash of it
    ship = make_shipment(merchant, external_ref=ref)
    make_shipment(merchant)
    found = _find(merchant, ref)
    assert found == [merchant.call("GET", f"/v1/shipments/{ship['id']}").json_body | {"eta": None}] or \
        [s["id"] for s in found] == [ship["id"]]
    assert found[0]["external_ref"] == ref
    assert _find(merchant, "no-such-ref") == []
    # the other filters must match the one shipment too
    assert [s["id"] for s in _find(merchant, ref, "&status=created")] == [ship["id"]]
    assert _find(merchant, ref, "&status=delivered") == []
    assert _find(merchant, ref, "&date_from=2030-01-01") == []
    assert [s["id"] for s in _find(merchant, ref, "&date_from=2026-11-21&date_to=2026-11-21")] == [ship["id"]]


def test_a_too_long_lookup_ref_is_422_naming_it(merchant):
    assert_error(merchant.call("GET", "/v1/shipments?external_ref=" + "x" * 101), 422, "validation_failed",
                 "external_ref")


def test_a_cancelled_shipment_keeps_its_ref(merchant):
    ship = make_shipment(merchant, external_ref="cancel-me")
    assert merchant.call("POST", f"/v1/shipments/{ship['id']}/cancel").status_code == 200
    assert_error(merchant.call("POST", "/v1/shipments", shipment_body(2, external_ref="cancel-me")), 409,
                 "external_ref_taken")
    found = _find(merchant, "cancel-me")
    assert [(s["id"], s["status"]) for s in found] == [(ship["id"], "cancelled")]


def test_an_idempotent_replay_with_the_same_ref_is_the_first_answer_not_a_409(merchant):
    body = shipment_body(1, external_ref="idem-ref")
    first = merchant.call("POST", "/v1/shipments", body, **{"Idempotency-Key": "k-idem-ref"})
    again = merchant.call("POST", "/v1/shipments", body, **{"Idempotency-Key": "k-idem-ref"})
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json_body["id"] == first.json_body["id"]
    # a new key with the taken ref is a different shipment: refused
    r = merchant.call("POST", "/v1/shipments", body, **{"Idempotency-Key": "k-idem-ref-2"})
    assert_error(r, 409, "external_ref_taken", "external_ref")


def test_concurrent_creates_with_one_ref_store_exactly_one(merchant):
    """The claim is a conditional put in the creating transaction: of racing creates exactly one wins."""
    from chalicelib.core.config import get_settings

    if not get_settings().ddb_endpoint_url:
        # moto's transactions copy the table unlocked (threads break it); the real engine runs this test in
        # tests/integration/on_dynamodb_local/test_external_ref.py.
        pytest.skip("needs transactions that are atomic across threads: runs on DynamoDB Local")
    answers: list[int] = []
    barrier = threading.Barrier(4)

    def create(n: int) -> None:
        barrier.wait(5)
        answers.append(merchant.call("POST", "/v1/shipments", shipment_body(n, external_ref="race-1")).status_code)

    # chalice's test client swaps os.environ to the stage's variables for each call and back after it;
    # calls from threads interleave those swaps and can leave the dev stage's values behind for later tests.
    saved = dict(os.environ)
    threads = [threading.Thread(target=create, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    os.environ.clear()
    os.environ.update(saved)
    assert answers.count(201) == 1 and len(answers) == 4
    assert set(answers) <= {201, 409, 503}  # a transaction conflict under a race is a retryable 503
    listed = merchant.call("GET", "/v1/shipments?limit=100").json_body["items"]
    assert len([s for s in listed if s["external_ref"] == "race-1"]) == 1


@pytest.mark.parametrize("ref", ["x", "x" * 100])
def test_the_claim_item_is_keyed_by_merchant_and_a_hash_of_the_ref(merchant, ref):
    from chalicelib.storage.tables import EXTERNAL_REF_SK, ExternalRefItem, external_ref_pk

    ship = make_shipment(merchant, external_ref=ref)
    key = external_ref_pk(merchant.id, ref)
    assert key.startswith(f"EXTREF#{merchant.id}#") and len(key) == len(f"EXTREF#{merchant.id}#") + 64
    item = ExternalRefItem.get(key, EXTERNAL_REF_SK, consistent_read=True)
    assert (item.shipment_id, item.external_ref, item.merchant_id) == (ship["id"], ref, merchant.id)


def test_openapi_documents_the_lookup_and_the_409(client):
    document = client.http.get("/openapi.json").json_body
    listing = document["paths"]["/v1/shipments"]["get"]
    assert "external_ref" in [p["name"] for p in listing["parameters"]]
    assert "409" in document["paths"]["/v1/shipments"]["post"]["responses"]
