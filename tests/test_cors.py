"""CORS (Fetch standard): a browser viewer on an allowed origin may call the DICOMweb API of a
server started with `--cors-origin`; other origins, and servers without it, get no CORS headers."""

from __future__ import annotations

import httpx
import pytest

from tests.dicomweb_requests import make_study, stow
from tests.servers import start_server, stop_server

VIEWER = "http://viewer.example"


@pytest.fixture(scope="module")
def cors_server(tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("cors") / "data", orgs=("viewer-org",),
                          args=("--cors-origin", VIEWER))
    try:
        with httpx.Client(timeout=60) as http:
            yield server, http
    finally:
        stop_server(server)


def test_cors_allows_the_configured_origin(cors_server):
    """PS3.18 8.2 leaves CORS to HTTP; the allowed origin is echoed and Warning is exposed."""
    server, http = cors_server
    response = http.get(f"{server.root()}/studies", headers={"Origin": VIEWER})
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == VIEWER
    assert "warning" in response.headers["access-control-expose-headers"].lower()


def test_cors_answers_a_preflight_for_stow(cors_server):
    """A browser's preflight before a STOW-RS POST with a multipart Content-Type succeeds."""
    server, http = cors_server
    response = http.options(f"{server.root()}/studies", headers={
        "Origin": VIEWER, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type"})
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == VIEWER
    assert "POST" in response.headers["access-control-allow-methods"]
    study = make_study(instances_per_series=1)
    stored = stow(http, server.root(), study.parts, headers={"Origin": VIEWER})
    assert stored.status_code == 200
    assert stored.headers["access-control-allow-origin"] == VIEWER


def test_cors_gives_nothing_to_another_origin(cors_server):
    server, http = cors_server
    response = http.get(f"{server.root()}/studies", headers={"Origin": "http://elsewhere.example"})
    assert "access-control-allow-origin" not in response.headers


def test_no_cors_headers_without_cors_origin(server, http):
    """The session's servers run without --cors-origin: no origin is allowed."""
    response = http.get(f"{server.root()}/studies", headers={"Origin": VIEWER})
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers


def test_cors_preflight_allows_a_bearer_token(cors_server):
    """A viewer sending `Authorization: Bearer` (OHIF with a token) is preflighted for every URL;
    the preflight must name Authorization itself: a `*` answer does not cover it (Fetch standard,
    CORS protocol), so the requested headers are echoed, and the answer is kept 10 minutes."""
    server, http = cors_server
    frames = f"{server.root()}/studies/1.2.3/series/1.2.3.4/instances/1.2.3.4.5/frames/1"
    response = http.options(frames, headers={
        "Origin": VIEWER, "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization,accept"})
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == VIEWER
    allowed = {name.strip().lower() for name in response.headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "accept"} <= allowed
    assert "GET" in response.headers["access-control-allow-methods"]
    assert response.headers["access-control-max-age"] == "600"
    assert "access-control-allow-credentials" not in response.headers  # tokens, not cookies


def test_cors_preflight_from_another_origin_is_refused(cors_server):
    server, http = cors_server
    response = http.options(f"{server.root()}/studies", headers={
        "Origin": "http://elsewhere.example", "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization"})
    assert response.status_code == 400
    assert "access-control-allow-origin" not in response.headers


def test_cors_lets_a_listed_origin_reach_a_private_network(cors_server):
    """Private Network Access: a viewer hosted on a public site calling an OIX inside a hospital
    network sends this preflight; a listed origin is allowed through."""
    server, http = cors_server
    response = http.options(f"{server.root()}/studies", headers={
        "Origin": VIEWER, "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Private-Network": "true"})
    assert response.status_code == 200
    assert response.headers["access-control-allow-private-network"] == "true"


def test_cors_exposes_the_search_warning_and_request_id(cors_server):
    """PS3.18 8.3.4.2: fuzzymatching=true is answered with a Warning a viewer's script may read."""
    server, http = cors_server
    response = http.get(f"{server.root()}/studies", params={"fuzzymatching": "true"}, headers={"Origin": VIEWER})
    assert response.status_code == 200 and response.headers["warning"].startswith("299 ")
    exposed = {name.strip().lower() for name in response.headers["access-control-expose-headers"].split(",")}
    assert {"warning", "x-request-id", "www-authenticate"} <= exposed
    assert response.headers["x-request-id"]


def test_cors_refused_token_is_a_readable_401(cors_server):
    """A stale or revoked token is refused with 401 and WWW-Authenticate (RFC 6750 3) that carry
    the CORS headers, so a viewer sees the 401 and signs in again rather than a network error."""
    server, http = cors_server
    response = http.get(f"{server.root()}/studies", headers={"Origin": VIEWER, "Authorization": "Bearer oixk_revoked"})
    assert response.status_code == 401
    assert response.headers["access-control-allow-origin"] == VIEWER
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert "www-authenticate" in response.headers["access-control-expose-headers"].lower()
