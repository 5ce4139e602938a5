"""Pure custody rules: the hash chain, requirements, PINs, scans and the JWS pieces."""

from __future__ import annotations

import copy
from typing import Any

from chalicelib.custody import jws, rules


def _chain(n: int) -> list[dict[str, Any]]:
    events, prev = [], rules.GENESIS
    for seq in range(1, n + 1):
        body = rules.chain_body("shp_1", seq, prev, "scanned", f"2026-11-21T10:0{seq}:00Z", "driver:d",
                                {"n": seq, "ü": "é"})
        prev = rules.event_hash(body)
        events.append({"body": body, "hash": prev})
    return events


def test_canonical_json_is_key_order_independent_and_compact() -> None:
    assert rules.canonical_json({"b": 1, "a": [1, {"d": 2, "c": "é"}]}) == '{"a":[1,{"c":"é","d":2}],"b":1}'.encode()


def test_an_intact_chain_verifies_and_every_tampering_is_named() -> None:
    events = _chain(5)
    head = {"seq": 5, "hash": events[-1]["hash"]}
    assert rules.verify_chain("shp_1", events, head).ok
    altered = copy.deepcopy(events)
    altered[1]["body"]["data"]["n"] = 99
    assert "event 2: hash does not match its content" in rules.verify_chain("shp_1", altered, head).problems
    removed = events[:2] + events[3:]
    assert not rules.verify_chain("shp_1", removed, head).ok
    inserted = [*events[:2], events[2], *events[2:]]
    assert not rules.verify_chain("shp_1", inserted, head).ok
    assert not rules.verify_chain("shp_1", events[:4], head).ok  # the head names a fifth event
    assert not rules.verify_chain("shp_2", events, head).ok  # another shipment's chain


def test_requirements_merge_and_name_what_is_missing() -> None:
    req = rules.merged_requirements({"photo": True, "pin": True}, {"pin": False, "min_age": 18})
    assert req.names() == ["photo", "age_verified"]
    done = rules.Completion(frozenset({"signature"}), None, False, frozenset({"A", "B"}), frozenset({"A"}), False)
    every = rules.Requirements(True, True, True, True, True, 18)
    missing = dict(rules.missing_requirements(every, done))
    assert set(missing) == {"proof_keys", "recipient_name", "pin", "parcels", "age_verified"}
    assert missing["parcels"].endswith("missing: B")
    ok = rules.Completion(frozenset({"photo", "signature"}), "Ada", True, frozenset({"A"}), frozenset({"A"}), True)
    assert rules.missing_requirements(every, ok) == []


def test_pin_is_six_digits_stable_and_checked_by_digest() -> None:
    pin = rules.delivery_pin("s" * 32, "shp_1")
    assert len(pin) == 6 and pin.isdigit() and pin == rules.delivery_pin("s" * 32, "shp_1")
    assert pin != rules.delivery_pin("s" * 32, "shp_2") or pin != rules.delivery_pin("t" * 32, "shp_1")
    digest = rules.pin_digest("shp_1", pin)
    assert pin not in digest and rules.pin_matches("shp_1", pin, digest)
    assert not rules.pin_matches("shp_1", "000000" if pin != "000000" else "111111", digest)


def test_scan_comparison() -> None:
    out = rules.compare_scan(["A", "B", "C"], ["A"], ["B", "X", "B"])
    assert out.matched == ["B"] and out.unexpected == ["X"] and out.missing == ["C"] and out.mismatch


def test_jws_pieces_round_trip_with_a_local_key() -> None:
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from joserfc import jws as jose_jws
    from joserfc.jwk import KeySet

    private = ec.generate_private_key(ec.SECP256R1())
    der = private.public_key().public_bytes(serialization.Encoding.DER,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    jwk = jws.public_jwk(der)
    message = jws.signing_input(jwk["kid"], {"sub": "shp_1"})
    token = jws.compact(message, private.sign(message, ec.ECDSA(hashes.SHA256())))
    verified = jose_jws.deserialize_compact(token, KeySet.import_key_set({"keys": [jwk]}), algorithms=["ES256"])
    assert jws.claims_of(token) == {"sub": "shp_1"} and b"shp_1" in verified.payload
