"""Fixtures for the conformance tests: a real `oix serve` on a free port with a fresh data
directory, and stand-in servers that answer everything wrongly, so the kit is seen to fail."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from conformance.corpus import StudySpec, new_uid, synthetic_instance
from dicomweb.multipart import encode_related, new_boundary
from tests.servers import free_port, start_server, stop_server

ORGANISATION = "KIT"
START_SECONDS = 60.0
STOP_SECONDS = 15.0


@pytest.fixture(scope="session")
def oix_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The base URL of a live OIX holding one organisation, ORGANISATION."""
    server = start_server(tmp_path_factory.mktemp("oix-data") / "data", orgs=(ORGANISATION,))
    try:
        yield server.base_url
    finally:
        stop_server(server)


@pytest.fixture(scope="session")
def service_root(oix_server: str) -> str:
    return f"{oix_server}/dicomweb/{ORGANISATION}"


def store(service_root: str, *parts: bytes) -> httpx.Response:
    """STOW-RS of Part 10 objects, as any client sends it."""
    boundary = new_boundary()
    return httpx.post(f"{service_root}/studies", content=b"".join(encode_related(parts, "application/dicom", boundary)),
                      headers={"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'},
                      timeout=30.0)


@pytest.fixture(scope="session")
def store_instances(service_root: str):
    """STOW-RS into the live OIX: `store_instances(part10, ...)` → the response."""
    return lambda *parts: store(service_root, *parts)


@pytest.fixture(scope="session")
def stored_mr_instance(service_root: str) -> str:
    """The path below the service root of one MR instance stored for these tests."""
    spec = StudySpec(modality="MR", rows=64, columns=64)  # JPEG 2000 (OpenJPEG) encodes 32 px and up
    series_uid, sop_uid = new_uid(), new_uid()
    response = store(service_root, synthetic_instance(spec, series_uid, 1, 1, sop_uid))
    assert response.status_code == 200, response.text
    return f"/studies/{spec.study_uid}/series/{series_uid}/instances/{sop_uid}"


# -- stand-ins that do not speak DICOMweb ----------------------------------------------------------

def answering_everything(status: int, body: bytes, media_type: str) -> Starlette:
    async def answer(_request: Request) -> Response:
        return Response(body, status_code=status, media_type=media_type)

    return Starlette(routes=[Route("/{path:path}", answer, methods=["GET", "POST", "PUT", "DELETE"])])


BROKEN_ENDPOINTS = {
    "always-500": answering_everything(500, b"internal error", "text/plain"),
    "always-empty-200": answering_everything(200, b"[]", "application/dicom+json"),
}


@pytest.fixture(params=sorted(BROKEN_ENDPOINTS))
def broken_service_root(request: pytest.FixtureRequest) -> Iterator[str]:
    """A service root on a tiny server that answers every request the same wrong way."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(BROKEN_ENDPOINTS[request.param], host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + START_SECONDS
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the stand-in server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/dicomweb/BROKEN"
    finally:
        server.should_exit = True
        thread.join(timeout=STOP_SECONDS)
