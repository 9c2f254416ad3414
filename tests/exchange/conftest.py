"""Index databases for the exchange's service tests: an empty one of the test's own on each
backend (a SQLite file, or a fresh PostgreSQL database)."""

from __future__ import annotations

import pytest

from tests.exchange.audit_support import BACKENDS, index_database, open_database


@pytest.fixture(params=BACKENDS)
def index_url(request, tmp_path):
    with index_database(request.param, tmp_path / "data") as found:
        yield found


@pytest.fixture
def database(index_url):
    with open_database(index_url) as opened:
        yield opened
