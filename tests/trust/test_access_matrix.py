"""The route × role matrix (issue Trust, Access control): every route of the app, for every
kind of caller, gets the status its policy says — against a live `oix serve` whose bearer
tokens come from a local OpenID provider. A route without a policy stops the app from starting."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.responses import Response
from starlette.routing import Mount, Route

from exchange.access import ROLE_PERMISSIONS, Permission, Role
from oix.access import ROUTE_POLICIES, UnguardedRoute, guard_routes, route_methods
from oix.app import create_app
from oix.settings import Settings
from tests.servers import OixServer, new_org_slug, run_cli, start_server, stop_server
from tests.trust.oidc_issuer import LocalOidcIssuer

HOME, OTHER = new_org_slug("home"), new_org_slug("other")
CALLERS = ("anonymous", "expired token", "wrong audience", "other organisation", "viewer", "sender", "admin",
           "sender API key")
ROLE_OF = {"viewer": Role.VIEWER, "sender": Role.SENDER, "admin": Role.ADMIN, "sender API key": Role.SENDER}
NOT_SIGNED_IN = {"anonymous", "expired token", "wrong audience"}


def app_routes(tmp_path: Path) -> list[tuple[str, str]]:
    app = create_app(Settings(data_dir=tmp_path / "routes", parse_workers=0))
    return [(path, method) for path, method, _route in route_methods(app.routes)]


def answered_when_allowed(path: str, method: str) -> int:
    """What the route itself answers when the caller may use it (the matrix's requests name
    studies no one holds and carry no bodies)."""
    public = {"/login": {"GET": 200, "POST": 400}, "/login/oidc": {"GET": 302}, "/login/callback": {"GET": 400}}
    if path.startswith("/access/"):
        return 404  # issue 6: no patient access link has the matrix's token
    if path.startswith("/orgs/{org}/admin") and method == "POST":
        # issue 6: no such key, rule, webhook or link to revoke or remove; an empty form otherwise
        return 404 if path.endswith(("/revoke", "/delete")) else 400
    if path == "/":
        return 303  # issue 6: the portal's home sends a person of one organisation to its inbox
    if path.startswith("/orgs/{org}/send") and method == "POST":
        return 400  # issue 6: no studies chosen, no PDF given
    if path in public:
        return public[path][method]
    if path == "/logout":
        return 303
    if path == "/static/{path:path}":
        return 404  # no such file
    if path == "/viewer/{org}/studies/{study}":
        return 404  # the viewer's page for a study nobody holds
    if path.startswith("/dicomweb/"):
        if method == "POST":  # STOW-RS, to the organisation's own root or an outbox
            return 415  # no multipart/related body
        if method == "DELETE" or not (path.endswith("/series") or path.endswith("/instances")
                                      or path.endswith("/studies")):
            return 404  # retrieve or delete of a study nobody holds
        return 200  # QIDO-RS: an empty match
    if path.endswith(("/keys", "/transfers", "/webhooks", "/import", "/forwarding")) and method == "POST":
        return 400  # no role, no studies, no URL, no patient in the body
    if path.endswith(("/keys/{key_id}", "/webhooks/{webhook}", "/forwarding/{rule}")) \
            or "/transfers/{transfer}" in path:
        return 404  # no such key, webhook, forwarding rule or transfer
    return 200


PUBLIC_PATHS = {"/healthz", "/metrics", "/conformance", "/conformance.json", "/login", "/login/oidc",
                "/login/callback", "/static/{path:path}"}
# issue 6: a patient access link's page, ZIP and read-only DICOMweb subset: the token is the credential
PATIENT_ACCESS_PATHS = {
    "/access/{token}", "/access/{token}/download",
    "/access/{token}/dicomweb/studies/{study}/metadata",
    "/access/{token}/dicomweb/studies/{study}/series/{series}/metadata",
    "/access/{token}/dicomweb/studies/{study}/series/{series}/instances/{instance}/frames/{frames}",
    "/access/{token}/dicomweb/studies/{study}/thumbnail",
    "/access/{token}/dicomweb/studies/{study}/series/{series}/thumbnail",
    "/access/{token}/dicomweb/studies/{study}/series/{series}/instances/{instance}/thumbnail",
    "/access/{token}/dicomweb/studies/{study}/series/{series}/instances/{instance}/rendered",
    "/access/{token}/dicomweb/studies/{study}/series/{series}/instances/{instance}/frames/{frames}/rendered",
}
PUBLIC_PATHS |= PATIENT_ACCESS_PATHS


def is_page(path: str) -> bool:
    """A portal page (HTML for a person): without credentials it redirects to sign in."""
    return path not in PUBLIC_PATHS and path != "/logout" and not path.startswith(("/api/", "/dicomweb/"))
RANK = {None: 0, Role.VIEWER: 1, Role.SENDER: 2, Role.ADMIN: 3}


def least_role(path: str, method: str) -> Role | None | str:
    """Who may call a route, written from the issues' words rather than read from the policy
    table, so a wrongly declared policy fails here: viewer (search, retrieve, view), sender
    (also store and send), admin (also members, keys, rules, audit; and delete)."""
    if path in PUBLIC_PATHS:
        return "public"
    if path in ("/api/me", "/logout", "/api/orgs") or (path == "/api/orgs/{org}" and method == "GET"):
        return None  # any signed-in caller: who am I, the directory
    if path == "/api/orgs/{org}":
        return Role.ADMIN  # changing the organisation's details
    if path.startswith("/orgs/{org}/admin"):
        return Role.ADMIN  # issue 6: members, keys, rules, webhooks, retention, usage, patient access
    admin_paths = ("/keys", "/keys/{key_id}", "/audit", "/webhooks", "/webhooks/{webhook}", "/forwarding",
                   "/forwarding/{rule}")
    if path.endswith(admin_paths) or method == "DELETE":
        return Role.ADMIN
    if "/outbox/{dest}/" in path or path.endswith(("/transfers", "/complete", "/reject", "/import")):
        return Role.SENDER  # sending, and deciding on a transfer
    if path.endswith(("/retain", "/release")):
        return Role.SENDER  # keeping received copies past retention: a records decision, as sending
    if path.endswith("/usage"):
        return Role.VIEWER  # counts per month, no patient data
    if path.startswith("/viewer/"):
        return Role.VIEWER  # issue 5: the built-in viewer shows a study's images, a retrieve
    if path == "/":
        return None  # issue 6: the portal's home, for anyone signed in
    if path.startswith("/orgs/{org}/send"):
        return Role.SENDER  # issue 6: the Send page is for sending
    return Role.SENDER if method == "POST" and not path.endswith("/viewed") else Role.VIEWER


def expected(path: str, method: str, caller: str) -> int:
    needed = least_role(path, method)
    allowed = answered_when_allowed(path, method)
    if needed == "public":
        return allowed
    if caller in NOT_SIGNED_IN:
        return 303 if is_page(path) else 401
    if needed is None:
        return allowed
    if caller == "other organisation":
        return 403
    return allowed if RANK[ROLE_OF[caller]] >= RANK[needed] else 403


def concrete(path: str) -> str:
    values = {"{org}": HOME, "{dest}": OTHER, "{transfer}": "T0000000000000000", "{webhook}": "999999",
              "{rule}": "999999",
              "{study}": f"2.25.{secrets.randbits(96)}", "{series}": f"2.25.{secrets.randbits(96)}",
              "{instance}": f"2.25.{secrets.randbits(96)}", "{frames}": "1", "{path:path}": "7FE00010",
              "{key_id}": "0000000000000000",
              "{token}": secrets.token_urlsafe(32), "{link}": "0000000000000000"}
    for name, value in values.items():
        path = path.replace(name, value)
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory, oidc_issuer: LocalOidcIssuer) -> Iterator[OixServer]:
    running = start_server(tmp_path_factory.mktemp("matrix") / "data", orgs=(HOME, OTHER),
                           env=oidc_issuer.environment(), auth=True)
    try:
        yield running
    finally:
        stop_server(running)


@pytest.fixture(scope="module")
def headers(server: OixServer, oidc_issuer: LocalOidcIssuer) -> dict[str, dict[str, str]]:
    def bearer(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    env = {"OIX_DATA_DIR": str(server.data_dir), "PATH": "/usr/bin:/bin"}
    api_key = run_cli(["key", "create", "--org", HOME, "--role", "sender"], env).stdout.strip()
    return {
        "anonymous": {},
        "expired token": bearer(oidc_issuer.mint({"oix_orgs": {HOME: "admin"}}, expires_in=-600)),
        "wrong audience": bearer(oidc_issuer.mint({"oix_orgs": {HOME: "admin"}}, audience="another-service")),
        "other organisation": bearer(oidc_issuer.mint({"oix_orgs": {OTHER: "admin"}})),
        "viewer": bearer(oidc_issuer.mint({"oix_orgs": {HOME: "viewer"}})),
        "sender": bearer(oidc_issuer.mint({"oix_orgs": [f"{HOME}:sender"]})),
        "admin": bearer(oidc_issuer.mint({"oix_orgs": {HOME: "admin"}})),
        "sender API key": bearer(api_key),
    }


def test_every_route_answers_each_caller_as_its_policy_says(server, headers, tmp_path):
    routes = app_routes(tmp_path)
    assert len(routes) >= 30
    wrong = []
    with httpx.Client(base_url=server.base_url, timeout=30, follow_redirects=False) as client:
        for path, method in routes:
            for caller in CALLERS:
                status = client.request(method, concrete(path), headers=headers[caller]).status_code
                if status != expected(path, method, caller):
                    wrong.append(f"{method} {path} as {caller}: {status}, expected {expected(path, method, caller)}")
    assert not wrong, "\n".join(wrong)


def test_refusals_say_why(server, headers):
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        expired = client.get(f"/dicomweb/{HOME}/studies", headers=headers["expired token"])
        assert expired.status_code == 401
        assert 'error="invalid_token"' in expired.headers["www-authenticate"]
        assert "expired" in expired.json()["error"]
        anonymous = client.get(f"/dicomweb/{HOME}/studies")
        assert anonymous.headers["www-authenticate"] == 'Bearer realm="oix"'
        stranger = client.get(f"/dicomweb/{HOME}/studies", headers=headers["other organisation"])
        assert stranger.status_code == 403 and f"not a member of {HOME}" in stranger.json()["error"]
        viewer = client.post(f"/dicomweb/{HOME}/studies", headers=headers["viewer"])
        assert viewer.status_code == 403 and "viewer role" in viewer.json()["error"]


def test_every_route_of_the_app_has_a_policy_and_every_policy_a_route(tmp_path):
    routes = set(app_routes(tmp_path))
    declared = {(path, method) for path, methods in ROUTE_POLICIES.items() for method in methods}
    assert routes == declared


def test_a_route_without_a_policy_stops_the_app_from_starting(tmp_path):
    """guard_routes is what create_app runs: an undeclared route (here one mounted where a
    new API would go) is refused, naming it."""
    app = create_app(Settings(data_dir=tmp_path / "app", parse_workers=0))

    async def forgotten(_request) -> Response:
        return Response("open")

    routes = [*app.routes, Mount("/api", routes=[Route("/orgs/{org}/forgotten", forgotten)])]
    with pytest.raises(UnguardedRoute, match="GET /api/orgs/{org}/forgotten"):
        guard_routes(routes, app.routes[0].app.gate)


def test_roles_grow_viewer_sender_admin():
    """issue Trust: viewer (search, retrieve), sender (also store and send), admin (everything)."""
    assert ROLE_PERMISSIONS[Role.VIEWER] < ROLE_PERMISSIONS[Role.SENDER] < ROLE_PERMISSIONS[Role.ADMIN]
    assert ROLE_PERMISSIONS[Role.ADMIN] == frozenset(Permission)


def test_rendered_images_and_thumbnails_are_retrieves_a_viewer_may_make(tmp_path):
    """issue 5 (PS3.18 10.4.1.1.7-8): a rendered image or a thumbnail shows the patient's images,
    so it is a retrieve, which the viewer role may make (the live matrix above checks each caller)."""
    imaging = [(path, method) for path, method in app_routes(tmp_path)
               if path.startswith("/dicomweb/{org}/studies/") and path.endswith(("/rendered", "/thumbnail"))]
    assert len(imaging) == 8
    for path, method in imaging:
        assert least_role(path, method) is Role.VIEWER
        assert ROUTE_POLICIES[path][method].permission is Permission.RETRIEVE
