"""PATCH /v1/settings changes only the fields sent (JSON merge patch); PUT keeps replacing them all (issue 14)."""

from __future__ import annotations

import pytest

from tests.integration.test_errors import assert_error


def _get(merchant) -> dict:
    r = merchant.call("GET", "/v1/settings")
    assert r.status_code == 200
    return r.json_body


def test_patch_with_only_branding_keeps_the_time_zone_and_the_other_fields(merchant):
    r = merchant.call("PATCH", "/v1/settings", {"time_zone": "America/Chicago", "stop_radius_m": 60.0,
                                                "branding": {"support_email": "help@acme.example",
                                                             "primary_colour": "#112233"}})
    assert r.status_code == 200, r.body
    r = merchant.call("PATCH", "/v1/settings", {"branding": {"name": "Acme"}})
    assert r.status_code == 200, r.body
    after = _get(merchant)
    assert after == r.json_body
    assert after["time_zone"] == "America/Chicago" and after["stop_radius_m"] == 60.0
    assert after["branding"] == {**after["branding"], "name": "Acme", "support_email": "help@acme.example",
                                 "primary_colour": "#112233", "accent_colour": "#0f766e"}


def test_put_still_replaces_every_field(merchant):
    assert merchant.call("PATCH", "/v1/settings", {"time_zone": "Europe/Paris"}).status_code == 200
    r = merchant.call("PUT", "/v1/settings", {"branding": {"name": "Acme"}})
    assert r.status_code == 200
    assert _get(merchant)["time_zone"] == "UTC"  # PUT: an omitted field takes its default


def test_null_restores_the_default_and_clears_a_nullable_field(merchant):
    merchant.call("PATCH", "/v1/settings", {"time_zone": "Asia/Tokyo", "link_expiry_days": 30,
                                            "branding": {"logo_url": "https://cdn.example/logo.png",
                                                         "name": "Acme"}})
    r = merchant.call("PATCH", "/v1/settings", {"time_zone": None, "branding": {"logo_url": None}})
    assert r.status_code == 200, r.body
    after = _get(merchant)
    assert after["time_zone"] == "UTC" and after["branding"]["logo_url"] is None
    assert after["branding"]["name"] == "Acme" and after["link_expiry_days"] == 30
    merchant.call("PATCH", "/v1/settings", {"branding": None})
    assert _get(merchant)["branding"]["name"] is None  # the whole object back to its defaults


def test_lists_are_replaced_not_merged_and_nested_objects_merge(merchant):
    r = merchant.call("PATCH", "/v1/settings", {"reschedule_options": {"weekdays": [2, 4]}})
    assert r.status_code == 200, r.body
    options = _get(merchant)["reschedule_options"]
    assert options["weekdays"] == [2, 4]
    assert options["days_ahead"] == 5 and [w["id"] for w in options["windows"]] == ["morning", "afternoon"]


def test_an_empty_patch_changes_nothing(merchant):
    merchant.call("PATCH", "/v1/settings", {"locale": "fr"})
    before = _get(merchant)
    r = merchant.call("PATCH", "/v1/settings", {})
    assert r.status_code == 200 and r.json_body == before == _get(merchant)


@pytest.mark.parametrize(("patch", "field"), [
    ({"branding": {"primary_colour": "red"}}, "branding.primary_colour"),
    ({"brandng": {"name": "typo"}}, "brandng"),
    ({"branding": {"nmae": "typo"}}, "branding.nmae"),
    ({"stop_radius_m": -1}, "stop_radius_m"),
    ({"time_zone": "Mars/Olympus"}, "time_zone"),
    ({"branding": "Acme"}, "branding"),
    ({"reschedule_options": {"weekdays": [1, 1]}}, "reschedule_options.weekdays"),
    ({"reschedule_options": {"windows": [{"id": "late", "start_time": "18:00", "end_time": "17:00"}]}},
     "reschedule_options.windows.0.end_time"),
])
def test_an_invalid_patch_names_the_field_and_changes_nothing(merchant, patch, field):
    merchant.call("PATCH", "/v1/settings", {"time_zone": "America/Chicago"})
    before = _get(merchant)
    assert_error(merchant.call("PATCH", "/v1/settings", patch), 422, "validation_failed", field)
    assert _get(merchant) == before


def test_a_merge_patch_content_type_is_accepted_and_other_types_are_415(merchant):
    r = merchant.call("PATCH", "/v1/settings", {"locale": "de"}, **{"Content-Type": "application/merge-patch+json"})
    assert r.status_code == 200 and r.json_body["locale"] == "de"
    assert_error(merchant.call("PATCH", "/v1/settings", "locale=de", **{"Content-Type": "text/plain"}), 415)


def test_settings_are_per_merchant(merchant, client):
    from tests.integration.conftest import new_merchant

    other = new_merchant(client)
    merchant.call("PATCH", "/v1/settings", {"time_zone": "Europe/Berlin"})
    assert _get(other)["time_zone"] == "UTC"


def test_a_concurrent_change_is_merged_not_overwritten(merchant, monkeypatch):
    """Another writer changes the settings between this PATCH's read and its write: the conditional write fails,
    the PATCH reads again and merges into the new settings, so both changes survive."""
    from chalicelib.storage import get_repository
    from chalicelib.storage.repository import Repository

    repo = get_repository()
    reads = {"n": 0}
    original = Repository.merchant_settings

    def racing_read(self, merchant_id, *, consistent=False):
        stored = original(self, merchant_id, consistent=consistent)
        reads["n"] += 1
        if reads["n"] == 1:  # the other writer commits right after our first read
            current = original(self, merchant_id, consistent=True)
            import json

            changed = {**json.loads(current or "{}"), "locale": "es"}
            repo.put_merchant_settings(merchant_id, json.dumps(changed))
        return stored

    monkeypatch.setattr(Repository, "merchant_settings", racing_read)
    r = merchant.call("PATCH", "/v1/settings", {"time_zone": "America/Denver"})
    assert r.status_code == 200, r.body
    monkeypatch.undo()
    after = _get(merchant)
    assert (after["locale"], after["time_zone"]) == ("es", "America/Denver")
    assert reads["n"] == 2


def test_a_patch_that_keeps_losing_the_race_is_a_409(merchant, monkeypatch):
    from chalicelib.storage.repository import Repository

    monkeypatch.setattr(Repository, "swap_merchant_settings", lambda self, mid, expected, new: False)
    assert_error(merchant.call("PATCH", "/v1/settings", {"locale": "fr"}), 409, "settings_changed")


def test_openapi_documents_patch_with_every_field_optional(client):
    document = client.http.get("/openapi.json").json_body
    operation = document["paths"]["/v1/settings"]["patch"]
    ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    schema = document["components"]["schemas"][ref]
    assert not schema.get("required")
    assert set(schema["properties"]) == set(document["components"]["schemas"]["MerchantSettings"]["properties"])
    assert {"200", "409", "422"} <= set(operation["responses"])
    assert "put" in document["paths"]["/v1/settings"] and "get" in document["paths"]["/v1/settings"]
