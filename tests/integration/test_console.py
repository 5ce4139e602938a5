"""The dispatcher console: signing in with the API key, the session cookie on /v1 merchant routes (CSRF on
unsafe methods), forged / expired / signed-out cookies, the page, and shipment search."""

from __future__ import annotations

import json
import re
import time
from typing import Any
from urllib.parse import quote

import pytest

from chalicelib.console import rules
from tests.integration.conftest import Merchant, new_merchant
from tests.integration.helpers import make_shipment

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
SECRET_ENV = "DOORSTEP_TOKEN_SECRET"


def sign_in(client: Any, api_key: str, **headers: str) -> Any:
    return client.http.post("/console/session", headers={**FORM, **headers}, body=f"api_key={quote(api_key)}")


def cookie_of(response: Any) -> str:
    set_cookie = response.headers["Set-Cookie"]
    match = re.match(rf"{rules.SESSION_COOKIE}=([^;]*);", set_cookie)
    assert match, set_cookie
    return match.group(1)


def csrf_of(page_html: str) -> str:
    match = re.search(r'data-csrf="([^"]+)"', page_html)
    assert match, "the console page carries the session's CSRF token"
    return match.group(1)


class Session:
    """A signed-in console: its cookie value and CSRF token, as the browser would hold them."""

    def __init__(self, client: Any, merchant: Merchant) -> None:
        self.client = client
        r = sign_in(client, merchant.key)
        assert r.status_code == 303, r.body
        self.cookie = cookie_of(r)
        page = client.http.get("/console", headers=self.headers())
        assert page.status_code == 200
        self.csrf = csrf_of(page.body.decode())

    def headers(self, **extra: str) -> dict[str, str]:
        return {"Cookie": f"{rules.SESSION_COOKIE}={self.cookie}", **extra}

    def call(self, method: str, path: str, body: Any = None, *, csrf: bool = True, **extra: str) -> Any:
        headers = self.headers(**extra)
        if body is not None:
            headers["Content-Type"] = "application/json"
        if csrf and method != "GET":
            headers["X-CSRF-Token"] = self.csrf
        kwargs: dict[str, Any] = {"headers": headers}
        if body is not None:
            kwargs["body"] = json.dumps(body)
        return getattr(self.client.http, method.lower())(path, **kwargs)


def test_sign_in_sets_a_strict_session_cookie_and_redirects_to_the_console(client: Any, merchant: Merchant) -> None:
    r = sign_in(client, merchant.key)
    assert r.status_code == 303
    assert r.headers["Location"].endswith("/console")
    assert merchant.key not in r.headers["Location"]
    set_cookie = r.headers["Set-Cookie"]
    for attribute in ("HttpOnly", "Secure", "SameSite=Strict", f"Max-Age={rules.SESSION_TTL_S}", "Path=/"):
        assert attribute in set_cookie
    assert merchant.key not in set_cookie  # the cookie is a signed claim, not the key


def test_a_wrong_key_is_401_with_the_sign_in_form_again(client: Any) -> None:
    r = sign_in(client, "dsk_not_a_key")
    assert r.status_code == 401
    assert "Set-Cookie" not in r.headers
    html = r.body.decode()
    assert 'name="api_key"' in html and 'role="alert"' in html
    assert "dsk_not_a_key" not in html  # never echoed


def test_a_cross_site_sign_in_is_refused(client: Any, merchant: Merchant) -> None:
    r = sign_in(client, merchant.key, **{"Sec-Fetch-Site": "cross-site"})
    assert r.status_code == 403
    assert "Set-Cookie" not in r.headers


def test_the_page_without_a_session_is_the_sign_in_form_under_the_strict_csp(client: Any) -> None:
    r = client.http.get("/console", headers={"Accept-Language": "de-DE"})
    assert r.status_code == 200
    html = r.body.decode()
    assert 'method="post"' in html and 'type="password"' in html and 'lang="de"' in html
    csp = r.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert r.headers["Cache-Control"] == "no-store"


def test_the_console_page_with_a_session_names_no_key_and_loads_its_assets(client: Any, merchant: Merchant) -> None:
    session = Session(client, merchant)
    page = client.http.get("/console", headers=session.headers())
    html = page.body.decode()
    assert merchant.key not in html
    for asset in ("console.js", "console.css", "leaflet.js"):
        src = re.search(rf'"(/static/{re.escape(asset)}\?v=[0-9a-f]+)"', html)
        assert src, asset
        assert client.http.get(src.group(1)).status_code == 200


def test_the_cookie_authenticates_merchant_reads_and_writes_with_csrf(client: Any, merchant: Merchant) -> None:
    session = Session(client, merchant)
    created = session.call("POST", "/v1/drivers", {"name": "Cookie Driver", "phone": "+14155550123"})
    assert created.status_code == 201, created.body
    listed = session.call("GET", "/v1/drivers")
    assert listed.status_code == 200
    assert [d["id"] for d in listed.json_body["items"]] == [created.json_body["id"]]


def test_an_unsafe_method_without_or_with_a_wrong_csrf_token_is_403(client: Any, merchant: Merchant) -> None:
    session = Session(client, merchant)
    body = {"name": "No Csrf", "phone": "+14155550124"}
    missing = session.call("POST", "/v1/drivers", body, csrf=False)
    assert missing.status_code == 403
    assert missing.json_body["error"]["details"][0]["field"] == "X-CSRF-Token"
    other = Session(client, merchant)  # a token of another session does not do
    wrong = session.call("POST", "/v1/drivers", body, csrf=False, **{"X-CSRF-Token": other.csrf})
    assert wrong.status_code == 403
    assert session.call("GET", "/v1/drivers").json_body["items"] == []  # nothing was written


@pytest.mark.parametrize("tamper", ["forged", "other_secret", "expired", "garbage"])
def test_a_forged_or_expired_cookie_is_401(client: Any, merchant: Merchant, tamper: str) -> None:
    from chalicelib.core.config import get_settings

    session = Session(client, merchant)
    secret = get_settings().token_secret
    claim = rules.open_session(secret, session.cookie, time.time())
    assert claim is not None
    if tamper == "forged":  # the same session under another merchant: the MAC no longer matches
        mac = session.cookie.partition(".")[2]
        forged = rules.seal_session(secret, rules.SessionClaim("mer_someone_else", claim.session_id, claim.expires_s))
        value = f"{forged.partition('.')[0]}.{mac}"
    elif tamper == "other_secret":
        value = rules.seal_session("x" * 40, claim)
    elif tamper == "expired":
        ended = rules.SessionClaim(claim.merchant_id, claim.session_id, int(time.time()) - 1)
        value = rules.seal_session(secret, ended)
    else:
        value = "not.a-cookie"
    r = client.http.get("/v1/drivers", headers={"Cookie": f"{rules.SESSION_COOKIE}={value}"})
    assert r.status_code == 401
    assert r.json_body["error"]["code"] == "unauthorized"
    page = client.http.get("/console", headers={"Cookie": f"{rules.SESSION_COOKIE}={value}"})
    assert 'name="api_key"' in page.body.decode()  # back to sign-in, and the dead cookie is cleared
    assert "Max-Age=0" in page.headers["Set-Cookie"]


def test_sign_out_ends_the_session_everywhere(client: Any, merchant: Merchant) -> None:
    session = Session(client, merchant)
    refused = client.http.post("/console/session/end", headers={**FORM, **session.headers()}, body="csrf=wrong")
    assert refused.status_code == 403
    assert session.call("GET", "/v1/drivers").status_code == 200
    r = client.http.post("/console/session/end", headers={**FORM, **session.headers()},
                         body=f"csrf={quote(session.csrf)}")
    assert r.status_code == 303
    assert "Max-Age=0" in r.headers["Set-Cookie"]
    # A copy of the cookie kept elsewhere stops working too: the session item is gone.
    assert session.call("GET", "/v1/drivers").status_code == 401


def test_sign_out_from_script_needs_the_csrf_header(client: Any, merchant: Merchant) -> None:
    session = Session(client, merchant)
    assert client.http.delete("/console/session", headers=session.headers()).status_code == 403
    r = client.http.delete("/console/session", headers=session.headers(**{"X-CSRF-Token": session.csrf}))
    assert r.status_code == 204
    assert session.call("GET", "/v1/drivers").status_code == 401


def test_a_bearer_key_still_wins_over_a_cookie(client: Any, merchant: Merchant) -> None:
    other = new_merchant(client)
    session = Session(client, other)
    r = client.http.get("/v1/drivers", headers={**merchant.headers(), **session.headers()})
    assert r.status_code == 200  # the key's merchant, no CSRF asked: the header is not sent by browsers alone
    r = client.http.post("/v1/drivers", headers={**merchant.headers(), **session.headers()},
                         body=json.dumps({"name": "Key Driver", "phone": "+14155550125"}))
    assert r.status_code == 201


def test_the_cookie_of_one_merchant_never_reads_another(client: Any, merchant: Merchant,
                                                       other_merchant: Merchant) -> None:
    shipment = make_shipment(other_merchant)
    session = Session(client, merchant)
    assert session.call("GET", f"/v1/shipments/{shipment['id']}").status_code == 404
    found = session.call("GET", f"/v1/shipments/search?q={quote(shipment['external_ref'])}")
    assert found.status_code == 200 and found.json_body["items"] == []


# --- search ---------------------------------------------------------------------------------------


def search(merchant: Merchant, q: str) -> Any:
    r = merchant.call("GET", f"/v1/shipments/search?q={quote(q)}")
    assert r.status_code == 200, r.body
    return r.json_body


def test_search_by_external_ref_id_and_tracking_link(client: Any, merchant: Merchant) -> None:
    shipment = make_shipment(merchant, recipient={"name": "Grace Hopper", "phone": "+14155550190"})
    by_ref = search(merchant, shipment["external_ref"])
    assert by_ref["matched_by"] == "external_ref" and [s["id"] for s in by_ref["items"]] == [shipment["id"]]
    by_id = search(merchant, shipment["id"])
    assert by_id["matched_by"] == "shipment_id" and by_id["items"][0]["id"] == shipment["id"]
    by_link = search(merchant, shipment["tracking_url"])
    assert by_link["matched_by"] == "tracking_link" and by_link["items"][0]["id"] == shipment["id"]
    token = shipment["tracking_url"].rsplit("/", 1)[1]
    assert search(merchant, token)["items"][0]["id"] == shipment["id"]
    assert search(merchant, "order-that-does-not-exist") == {"matched_by": None, "items": []}


def test_search_by_exact_recipient_phone_or_email_follows_patches(client: Any, merchant: Merchant) -> None:
    first = make_shipment(merchant, 1, recipient={"name": "Ann", "phone": "+14155550301", "email": "Ann@Example.com"})
    second = make_shipment(merchant, 2, recipient={"name": "Ann", "phone": "+14155550301"})
    make_shipment(merchant, 3, recipient={"name": "Bob", "phone": "+14155550302"})
    by_phone = search(merchant, "+1 415 555 0301")
    assert by_phone["matched_by"] == "phone"
    assert [s["id"] for s in by_phone["items"]] == [second["id"], first["id"]]  # newest first
    assert [s["id"] for s in search(merchant, "ann@example.COM")["items"]] == [first["id"]]
    r = merchant.call("PATCH", f"/v1/shipments/{first['id']}",
                      {"recipient": {"phone": "+14155550399", "email": None}},
                      **{"Content-Type": "application/merge-patch+json"})
    assert r.status_code == 200, r.body
    assert [s["id"] for s in search(merchant, "+14155550301")["items"]] == [second["id"]]
    assert [s["id"] for s in search(merchant, "+14155550399")["items"]] == [first["id"]]
    assert search(merchant, "ann@example.com")["items"] == []


def test_search_of_another_merchants_contact_finds_nothing(client: Any, merchant: Merchant,
                                                           other_merchant: Merchant) -> None:
    make_shipment(other_merchant, recipient={"name": "Cy", "phone": "+14155550401", "email": "cy@example.com"})
    assert search(merchant, "+14155550401")["items"] == []
    assert search(merchant, "cy@example.com")["items"] == []


@pytest.mark.parametrize("query", ["", "x" * 301])
def test_a_bad_search_is_422_naming_q(client: Any, merchant: Merchant, query: str) -> None:
    r = merchant.call("GET", f"/v1/shipments/search?q={quote(query)}")
    assert r.status_code == 422
    assert r.json_body["error"]["details"][0]["field"] == "q"


def test_a_cookie_request_costs_the_storage_what_a_key_request_does(client: Any, merchant: Merchant,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Authentication is on every request's hot path: the cookie's check is one GetItem, as the key's."""
    from tests.faults.inject import Injector, injected

    session = Session(client, merchant)
    with injected(Injector(), monkeypatch) as calls:
        calls.reset()
        assert merchant.call("GET", "/v1/drivers").status_code == 200
        by_key = list(calls.operations)
        calls.reset()
        assert session.call("GET", "/v1/drivers").status_code == 200
        by_cookie = list(calls.operations)
        calls.reset()
        forged = client.http.get("/v1/drivers", headers={"Cookie": f"{rules.SESSION_COOKIE}=forged.cookie"})
        assert forged.status_code == 401
        assert calls.operations == []  # refused by its signature, before any read
    assert len(by_cookie) == len(by_key)
    assert by_cookie.count("GetItem") == by_key.count("GetItem") >= 1


def test_other_cookies_alone_are_no_credential(client: Any, merchant: Merchant) -> None:
    r = client.http.get("/v1/drivers", headers={"Cookie": "theme=dark; _ga=GA1.2.3"})
    assert r.status_code == 401
    assert r.json_body["error"]["message"] == "The Authorization header is missing."
    assert merchant.call("GET", "/v1/drivers", Cookie="theme=dark").status_code == 200


# --- one-time sign-in links (`make run` prints one) ---------------------------------------------------------


def _link_path(merchant: Merchant) -> str:
    r = merchant.call("POST", "/v1/console/sign-in-links")
    assert r.status_code == 201, r.body
    assert merchant.key not in r.body.decode()
    return "/" + r.json_body["url"].split("/", 3)[3]


def test_a_sign_in_link_opens_the_console_once(client: Any, merchant: Merchant) -> None:
    path = _link_path(merchant)
    first = client.http.get(path)
    assert first.status_code == 303 and first.headers["Location"].endswith("/console")
    assert first.headers["Referrer-Policy"] == "no-referrer"
    cookie = cookie_of(first)
    page = client.http.get("/console", headers={"Cookie": f"{rules.SESSION_COOKIE}={cookie}"})
    assert page.status_code == 200 and csrf_of(page.body.decode())
    shipment = make_shipment(merchant)
    seen = client.http.get(f"/v1/shipments/{shipment['id']}", headers={"Cookie": f"{rules.SESSION_COOKIE}={cookie}"})
    assert seen.status_code == 200
    again = client.http.get(path)  # used: the sign-in form, no cookie
    assert again.status_code == 401 and "Set-Cookie" not in again.headers
    assert "api_key" in again.body.decode()


def test_a_sign_in_link_is_the_merchant_s_own(client: Any, merchant: Merchant) -> None:
    other = new_merchant(client)
    theirs = make_shipment(other)
    cookie = cookie_of(client.http.get(_link_path(merchant)))
    headers = {"Cookie": f"{rules.SESSION_COOKIE}={cookie}"}
    assert client.http.get(f"/v1/shipments/{theirs['id']}", headers=headers).status_code == 404


def test_a_forged_or_expired_sign_in_link_reads_nothing(client: Any, merchant: Merchant,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from chalicelib.storage.repository import Repository

    path = _link_path(merchant)
    token = path.rsplit("/", 1)[1]
    used: list[str] = []
    monkeypatch.setattr(Repository, "use_console_link", lambda self, link_id: used.append(link_id))
    assert client.http.get(path[:-3] + ("AAA" if not path.endswith("AAA") else "BBB")).status_code == 401
    expired = rules.seal_link("not-this-stage's-secret", rules.LinkClaim(merchant.id, "x" * 32, int(time.time()) + 60))
    assert client.http.get(f"/console/link/{expired}").status_code == 401
    assert client.http.get("/console/link/" + "a" * 500).status_code == 401
    assert used == []
    assert token  # the genuine one was never presented


def test_an_expired_link_is_refused() -> None:
    claim = rules.LinkClaim("mer_1", "l" * 32, 1_000)
    sealed = rules.seal_link("secret", claim)
    assert rules.open_link("secret", sealed, 999.0) == claim
    assert rules.open_link("secret", sealed, 1_000.0) is None
    assert rules.open_link("other", sealed, 999.0) is None
    assert rules.open_session("secret", sealed, 999.0) is None  # a link is not a session cookie
