"""Signing in to the portal and out again against a live `oix serve` (issue Trust, portal
sign-in): a local account's password form with a double-submit CSRF token, the OpenID Connect
authorization-code flow with PKCE (OIDC Core 3.1, RFC 7636) against a real local provider, the
session cookie's flags (RFC 6265 4.1.2.5-6, SameSite), no open redirect after sign-in (OWASP
unvalidated redirects), sign-out guarded by the session's CSRF token, and the audit events
of it all (PS3.15 A.5.3.12 User Authentication)."""

from __future__ import annotations

import re
import secrets
import sqlite3
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from http.cookies import Morsel, SimpleCookie
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.servers import CLI_TIMEOUT_SECONDS, OixServer, new_org_slug, oix_command, run_cli, start_server, stop_server
from tests.trust.oidc_issuer import LocalOidcIssuer

HOME = new_org_slug("portal")
PASSWORD = "a long enough passphrase"
MAX_REDIRECTS = 5  # the OIDC flow is three: /login/oidc → provider /authorize → /login/callback → next


@pytest.fixture(scope="module")
def issuer() -> Iterator[LocalOidcIssuer]:
    """A provider of this module's own (as `fresh_oidc_issuer`, but living as long as the
    module's server), whose user is a sender in HOME."""
    with LocalOidcIssuer() as provider:
        provider.user = {"sub": f"oidc-{secrets.token_hex(4)}", "name": "Dr Grace Hopper",
                         "oix_orgs": {HOME: "sender"}}
        yield provider


@pytest.fixture(scope="module")
def server(tmp_path_factory, issuer) -> Iterator[OixServer]:
    """Authentication on, local accounts, and the provider with a portal client configured."""
    running = start_server(tmp_path_factory.mktemp("portal") / "data", orgs=(HOME,), env=issuer.environment(),
                           auth=True)
    try:
        yield running
    finally:
        stop_server(running)


def cli_env(server: OixServer) -> dict[str, str]:
    return {"OIX_DATA_DIR": str(server.data_dir), "PATH": "/usr/bin:/bin"}


@dataclass(frozen=True)
class Account:
    username: str
    name: str
    password: str = PASSWORD


@pytest.fixture(scope="module")
def member(server) -> Account:
    """A local account, viewer in HOME, added with `oix user add` (password on standard input)."""
    account = Account(f"member-{secrets.token_hex(3)}", "Test Member")
    subprocess.run([*oix_command(), "user", "add", account.username, "--name", account.name, "--org", HOME,
                    "--role", "viewer"], env=cli_env(server), input=account.password + "\n", capture_output=True,
                   text=True, check=True, timeout=CLI_TIMEOUT_SECONDS)
    return account


@pytest.fixture(scope="module")
def admin_key(server) -> str:
    created = run_cli(["key", "create", "--org", HOME, "--role", "admin", "--expires", "1d"], cli_env(server))
    return created.stdout.strip()


@pytest.fixture
def browser(server) -> Iterator[httpx.Client]:
    """A browser of the test's own: it keeps cookies and follows no redirect unless asked."""
    with httpx.Client(base_url=server.base_url, timeout=30, max_redirects=MAX_REDIRECTS) as client:
        yield client


def set_cookie(response: httpx.Response, name: str) -> Morsel | None:
    """The Set-Cookie of `name` in `response`, with its attributes, or None."""
    for header in response.headers.get_list("set-cookie"):
        jar = SimpleCookie()
        jar.load(header)
        if name in jar:
            return jar[name]
    return None


def form_csrf_token(page: httpx.Response) -> str:
    return re.search(r'<input type="hidden" name="csrf_token" value="([^"]+)">', page.text).group(1)


def sign_in(browser: httpx.Client, account: Account, *, password: str | None = None,
            next_url: str = "/api/me") -> httpx.Response:
    """Open the form (its CSRF cookie), then post it as a browser would."""
    token = form_csrf_token(browser.get("/login"))
    return browser.post("/login", data={"username": account.username, "password": password or account.password,
                                        "csrf_token": token, "next": next_url})


def audit_events_of(server: OixServer, admin_key: str, *responses: httpx.Response) -> list[dict]:
    """The audit events the requests of `responses` made, by their X-Request-ID, read from the
    index itself: an organisation's audit API shows only events of that organisation."""
    flushed = httpx.get(f"{server.base_url}/api/orgs/{HOME}/audit", params={"limit": 1},
                        headers={"Authorization": f"Bearer {admin_key}"}, timeout=30)  # writes what is buffered
    assert flushed.status_code == 200, flushed.text
    request_ids = [response.headers["x-request-id"] for response in responses]
    with sqlite3.connect(server.data_dir / "index.sqlite3") as index:
        index.row_factory = sqlite3.Row
        rows = index.execute(f"SELECT action, actor, outcome, outcome_description, org, detail, request_id "
                             f"FROM auditentry WHERE request_id IN ({', '.join('?' * len(request_ids))}) "
                             f"ORDER BY sequence", request_ids).fetchall()
    return [dict(row) for row in rows]


# -- the password form -------------------------------------------------------------------------

def test_sign_in_page_is_a_form_with_a_double_submit_csrf_token_and_the_provider_link(server, browser):
    page = browser.get("/login")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<form method="post" action="/login">' in page.text
    assert 'name="username"' in page.text and 'name="password" type="password"' in page.text
    cookie = set_cookie(page, "oix_login_csrf")
    assert cookie is not None and cookie.value == form_csrf_token(page)
    assert cookie["httponly"] and cookie["samesite"].lower() == "strict" and cookie["path"] == "/login"
    assert 'href="/login/oidc?next=' in page.text  # a provider client is configured
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]


def test_the_right_password_opens_an_httponly_lax_session_naming_the_memberships(browser, member):
    assert browser.get("/api/me").status_code == 401
    signed_in = sign_in(browser, member)
    assert (signed_in.status_code, signed_in.headers["location"]) == (303, "/api/me")
    cookie = set_cookie(signed_in, "oix_session")
    assert cookie is not None and len(cookie.value) >= 32
    assert cookie["httponly"] and cookie["samesite"].lower() == "lax" and cookie["path"] == "/"
    assert not cookie["secure"]  # plain HTTP here; tests/trust/test_tls.py signs in over TLS
    assert 0 < int(cookie["max-age"]) <= 12 * 3600
    me = browser.get("/api/me")
    assert me.status_code == 200, me.text
    described = me.json()
    assert described.pop("csrf_token")  # what the session's pages and scripts send back on POST
    assert described == {"actor": member.username, "kind": "user", "name": member.name,
                         "memberships": {HOME: "viewer"}, "every_organisation": None}


def test_a_wrong_password_is_401_and_opens_no_session(browser, member):
    refused = sign_in(browser, member, password="not the password at all")
    assert refused.status_code == 401
    assert "The username or password is not right." in refused.text
    assert set_cookie(refused, "oix_session") is None
    assert browser.get("/api/me").status_code == 401


@pytest.mark.parametrize("forgery", ["no token", "a wrong token", "another browser's token"])
def test_a_sign_in_without_its_forms_csrf_token_is_400_even_with_the_right_password(server, browser, member,
                                                                                    forgery):
    """Login CSRF: a page elsewhere must not sign a browser in to an account of its choosing."""
    token = form_csrf_token(browser.get("/login"))
    form = {"username": member.username, "password": member.password, "next": "/api/me"}
    if forgery == "a wrong token":
        form["csrf_token"] = token[::-1]
    elif forgery == "another browser's token":
        browser.cookies.clear()  # the token came from a form this browser no longer holds the cookie of
        form["csrf_token"] = token
    refused = browser.post("/login", data=form)
    assert refused.status_code == 400
    assert set_cookie(refused, "oix_session") is None
    assert browser.get("/api/me").status_code == 401
    assert sign_in(browser, member).status_code == 303  # the control: with its token the same form works


@pytest.mark.parametrize("next_url", ["//evil.example/", "https://evil.example/", "/\\evil.example",
                                      "\\\\evil.example", "/\t/evil.example", "evil.example"])
def test_sign_in_never_redirects_off_the_server(browser, member, next_url):
    """Only a path of this server is followed after sign-in; anything else (including a path with
    a tab or space, which a browser may strip into '//') lands on the portal's home page."""
    page = browser.get("/login", params={"next": next_url})
    hidden_next = re.search(r'name="next" value="([^"]*)"', page.text).group(1)
    landed = sign_in(browser, member, next_url=next_url)
    assert landed.status_code == 303
    assert hidden_next == "/"
    assert landed.headers["location"] == "/"


def test_sign_in_follows_a_path_on_this_server(browser, member):
    """The control for the open-redirect test: a local path is where sign-in goes."""
    landed = sign_in(browser, member, next_url=f"/dicomweb/{HOME}/studies?PatientID=P1")
    assert (landed.status_code, landed.headers["location"]) == (303, f"/dicomweb/{HOME}/studies?PatientID=P1")
    assert browser.get(landed.headers["location"]).status_code == 200


# -- signing out ----------------------------------------------------------------------------------

@pytest.mark.parametrize("carrier", ["X-CSRF-Token header", "csrf_token form field"])
def test_sign_out_needs_the_sessions_csrf_token_and_ends_the_session(server, browser, member, carrier):
    sign_in(browser, member)
    old_cookie = browser.cookies["oix_session"]
    token = browser.get("/api/me").json()["csrf_token"]
    for forged in ({}, {"headers": {"X-CSRF-Token": "forged"}}, {"data": {"csrf_token": "forged"}},
                   {"headers": {"X-CSRF-Token": ""}}):
        refused = browser.post("/logout", **forged)
        assert refused.status_code == 403, (forged, refused.text)
        assert "CSRF" in refused.json()["error"]
    assert browser.get("/api/me").status_code == 200  # still signed in

    carried = {"headers": {"X-CSRF-Token": token}} if carrier.endswith("header") else {"data": {"csrf_token": token}}
    signed_out = browser.post("/logout", **carried)
    assert (signed_out.status_code, signed_out.headers["location"]) == (303, "/login")
    assert set_cookie(signed_out, "oix_session")["max-age"] == "0"
    assert browser.get("/api/me").status_code == 401

    with httpx.Client(base_url=server.base_url, timeout=30) as replay:  # the old cookie, kept by an attacker
        stale = replay.get("/api/me", headers={"Cookie": f"oix_session={old_cookie}"})
    assert stale.status_code == 401
    assert stale.headers["www-authenticate"].startswith('Bearer realm="oix"')


# -- OpenID Connect -------------------------------------------------------------------------------

def test_sign_in_with_the_provider_runs_the_code_flow_with_pkce_and_opens_a_session(server, issuer, browser):
    started = browser.get("/login/oidc", params={"next": "/api/me"})
    assert started.status_code == 302
    authorize = urlsplit(started.headers["location"])
    assert f"{authorize.scheme}://{authorize.netloc}{authorize.path}" == f"{issuer.url}/authorize"
    asked = {name: values[0] for name, values in parse_qs(authorize.query).items()}
    assert asked["response_type"] == "code" and "openid" in asked["scope"].split()
    assert asked["client_id"] == issuer.client_id
    assert asked["redirect_uri"] == f"{server.base_url}/login/callback"
    assert asked["code_challenge_method"] == "S256" and len(asked["code_challenge"]) == 43  # RFC 7636 4.2
    assert len(asked["state"]) >= 32 and len(asked["nonce"]) >= 32
    binding = set_cookie(started, "oix_sign_in")
    assert binding.value == asked["state"] and binding["httponly"] and binding["samesite"].lower() == "lax"

    landed = browser.get(started.headers["location"], follow_redirects=True)
    assert [hop.status_code for hop in landed.history] == [302, 303]  # provider → callback → next
    callback = landed.history[1]
    assert callback.url.path == "/login/callback"
    code = parse_qs(callback.url.query.decode())["code"][0]
    assert issuer.authorizations[code].used  # exchanged at the token endpoint, PKCE verified there
    assert set_cookie(callback, "oix_session")["httponly"]
    assert landed.url.path == "/api/me" and landed.status_code == 200, landed.text
    me = landed.json()
    assert (me["actor"], me["kind"], me["name"]) == (issuer.user["sub"], "user", "Dr Grace Hopper")
    assert me["memberships"] == {HOME: "sender"} and me["every_organisation"] is None


def provider_redirect(browser: httpx.Client) -> httpx.URL:
    """Begin a provider sign-in and let the provider answer: the callback URL it sends the
    browser to, not yet followed."""
    started = browser.get("/login/oidc")
    answered = browser.get(started.headers["location"])
    assert answered.status_code == 302
    return httpx.URL(answered.headers["location"])


def test_a_callback_with_another_state_or_from_another_browser_is_400(server, browser):
    """RFC 6749 10.12: the state binds the callback to the browser that began the sign-in."""
    callback = provider_redirect(browser)
    wrong_state = browser.get(callback.copy_set_param("state", secrets.token_urlsafe(32)))
    assert wrong_state.status_code == 400 and set_cookie(wrong_state, "oix_session") is None
    with httpx.Client(timeout=30) as stranger:
        elsewhere = stranger.get(callback)
    assert elsewhere.status_code == 400 and set_cookie(elsewhere, "oix_session") is None
    assert browser.get("/api/me").status_code == 401
    finished = browser.get(callback)  # the control: the genuine callback still signs in
    assert finished.status_code == 303 and set_cookie(finished, "oix_session") is not None


# -- the audit of it --------------------------------------------------------------------------------

def test_sign_ins_refusals_and_sign_outs_are_audited(server, issuer, browser, member, admin_key):
    """PS3.15 A.5.3.12 User Authentication: each sign-in (outcome 0), each refused one
    (outcome 4, with why), and each sign-out is one event naming who."""
    refused = sign_in(browser, member, password="not the password at all")
    by_password = sign_in(browser, member)
    token = browser.get("/api/me").json()["csrf_token"]
    signed_out = browser.post("/logout", headers={"X-CSRF-Token": token})
    callback = provider_redirect(browser)
    bad_state = browser.get(callback.copy_set_param("state", "forged"))
    by_provider = browser.get(callback)
    assert [r.status_code for r in (refused, by_password, signed_out, bad_state, by_provider)] == \
        [401, 303, 303, 400, 303]

    events = audit_events_of(server, admin_key, refused, by_password, signed_out, bad_state, by_provider)
    assert [(e["action"], e["actor"], e["outcome"], e["outcome_description"], e["detail"]) for e in events] == [
        ("authenticate", "anonymous", 4, "bad-credentials", f"password sign-in as '{member.username}'"),
        ("authenticate", member.username, 0, "", "portal sign-in (password)"),
        ("logout", member.username, 0, "", "portal sign-out"),
        ("authenticate", "anonymous", 4, "bad-state", "portal sign-in"),
        ("authenticate", issuer.user["sub"], 0, "", "portal sign-in (oidc)"),
    ]


def test_an_organisations_admin_sees_its_members_portal_sign_in_and_sign_out(server, browser, member, admin_key):
    by_password = sign_in(browser, member)
    token = browser.get("/api/me").json()["csrf_token"]
    signed_out = browser.post("/logout", headers={"X-CSRF-Token": token})
    trail = httpx.get(f"{server.base_url}/api/orgs/{HOME}/audit", params={"actor": member.username, "limit": 1000},
                      headers={"Authorization": f"Bearer {admin_key}"}, timeout=30).json()["events"]
    seen = {(event["request_id"], event["action"]) for event in trail}
    assert (by_password.headers["x-request-id"], "authenticate") in seen
    assert (signed_out.headers["x-request-id"], "logout") in seen
