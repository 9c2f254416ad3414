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
