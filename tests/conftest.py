"""Shared fixtures: a real `oix serve` per index backend (SQLite and PostgreSQL) for the whole
session, organisations added through the CLI, and the clients the tests talk to it with.
Every test makes its own studies with fresh UIDs, so tests share servers without interfering."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack

import httpx
import pytest

from tests.servers import (
    OixServer,
    new_org_slug,
    new_postgresql_database,
    remove_data_dir,
    start_server,
    stop_server,
)

BACKENDS = ("sqlite", "postgresql")
HTTP_TIMEOUT_SECONDS = 60.0


@pytest.fixture(scope="session")
def postgresql_database() -> Iterator[str]:
    with new_postgresql_database() as url:
        yield url


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="session")
def server(request: pytest.FixtureRequest, backend: str, tmp_path_factory) -> Iterator[OixServer]:
    """The session's server for `backend`, with two organisations (`server.orgs[0:2]`)."""
    database = request.getfixturevalue("postgresql_database") if backend == "postgresql" else None
    running = start_server(tmp_path_factory.mktemp(f"oix-{backend}") / "data", backend=backend,
                           database_url=database, orgs=(new_org_slug("alpha"), new_org_slug("beta")))
    try:
        yield running
    finally:
        stop_server(running)
        remove_data_dir(running)


@pytest.fixture(scope="session")
def org(server: OixServer) -> str:
    """The organisation most tests store into."""
    return server.orgs[0]


@pytest.fixture(scope="session")
def other_org(server: OixServer) -> str:
    return server.orgs[1]


@pytest.fixture
def fresh_org(server: OixServer) -> str:
    """An organisation of the test's own, for tests that reuse UIDs of the real corpus files."""
    return server.add_org()


@pytest.fixture(scope="session")
def http(server: OixServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=HTTP_TIMEOUT_SECONDS) as client:
        yield client


@pytest.fixture
def dicomweb(server: OixServer, org: str):
    """A stock DICOMweb client (dicomweb-client) on the organisation's service root."""
    return server.client(org)


@pytest.fixture(scope="module")
def start_dedicated_server(backend: str, tmp_path_factory) -> Iterator[Callable[..., OixServer]]:
    """Start a server of the module's own (other limits, CORS origins...) on `backend`:
    `start_dedicated_server(env={...}, args=(...))`. Stopped and dropped after the module."""
    with ExitStack() as cleanup:

        def start(env: dict[str, str] | None = None, args: tuple[str, ...] = (),
                  orgs: tuple[str, ...] = ("dedicated",), auth: bool = False) -> OixServer:
            database = cleanup.enter_context(new_postgresql_database()) if backend == "postgresql" else None
            running = start_server(tmp_path_factory.mktemp("dedicated") / "data", backend=backend,
                                   database_url=database, orgs=orgs, env=env, args=args, auth=auth)
            cleanup.callback(stop_server, running)
            return running

        yield start


@pytest.fixture(scope="session")
def stored_corpus(server: OixServer, http: httpx.Client) -> dict[str, str]:
    """Every usable real corpus file stored on the session's server: file name -> the
    organisation holding it. Files sharing a SOP Instance UID go to different organisations
    (one per layer, see `tests.real_files.layers`), each layer in one STOW request."""
    from tests.dicomweb_requests import failures, stow
    from tests.real_files import corpus_files, layers

    holder: dict[str, str] = {}
    for layer in layers(corpus_files()):
        org = server.add_org(new_org_slug("corpus"))
        response = stow(http, server.root(org), [item.data for item in layer])
        assert response.status_code == 200, (response.status_code, failures(response.json()),
                                             response.headers.get("warning"))
        holder.update({item.name: org for item in layer})
    return holder
