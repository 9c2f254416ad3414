"""Trust fixtures: a local OpenID Provider on loopback (tests/trust/oidc_issuer.py), one for
the session (tokens for a live `oix serve`) and one per test for tests that change its keys."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.trust.oidc_issuer import LocalOidcIssuer


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def oidc_issuer() -> Iterator[LocalOidcIssuer]:
    """The session's provider; point a server at it with `oidc_issuer.environment()`. Do not
    rotate its keys or break its JWKS: use `fresh_oidc_issuer` for that."""
    with LocalOidcIssuer() as issuer:
        yield issuer


@pytest.fixture
def fresh_oidc_issuer() -> Iterator[LocalOidcIssuer]:
    """A provider of the test's own, free to rotate keys or go down."""
    with LocalOidcIssuer() as issuer:
        yield issuer
