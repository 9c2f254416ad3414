"""What the portal and viewer tests share: a live `oix serve` with authentication on and two
organisations, local accounts in them with each role (added through `oix user add`), and
browser contexts signed in through the real sign-in form."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from tests.browser import browser  # noqa: F401  (the session's Chromium, a fixture)
from tests.servers import OixServer, new_org_slug, start_server, stop_server

PASSWORD = "a long enough passphrase"
PAGE_TIMEOUT_MS = 15_000


@dataclass(frozen=True)
class Account:
    username: str
    name: str
    org: str
    role: str
    password: str = PASSWORD


@dataclass(frozen=True)
class Portal:
    """A live server with organisations A (the sender) and B (the receiver) and their people."""

    server: OixServer
    a: str
    b: str
    accounts: dict[str, Account]  # "a-sender", "a-admin", "b-viewer", "b-sender", "b-admin"

    @property
    def base_url(self) -> str:
        return self.server.base_url

    def cli_env(self) -> dict[str, str]:
        return {"OIX_DATA_DIR": str(self.server.data_dir), "PATH": "/usr/bin:/bin"}


def add_account(server: OixServer, org: str, role: str, name: str) -> Account:
    account = Account(f"{role}-{org}-{secrets.token_hex(3)}".lower(), name, org, role)
    server.cli("user", "add", account.username, "--name", account.name, "--org", org, "--role", role,
               stdin=account.password + "\n")
    return account


@pytest.fixture(scope="module")
def portal(tmp_path_factory) -> Iterator[Portal]:
    a, b = new_org_slug("senda"), new_org_slug("recvb")
    running = start_server(tmp_path_factory.mktemp("portal") / "data", orgs=(a, b), auth=True)
    try:
        people = {
            "a-sender": add_account(running, a, "sender", "Rita Radiographer"),
            "a-admin": add_account(running, a, "admin", "Alan Admin"),
            "b-viewer": add_account(running, b, "viewer", "Vera Viewer"),
            "b-sender": add_account(running, b, "sender", "Dr Rachel Radiologist"),
            "b-admin": add_account(running, b, "admin", "Pat PACS-Admin"),
        }
        yield Portal(running, a, b, people)
    finally:
        stop_server(running)


@pytest.fixture
def signed_in(browser, portal: Portal) -> Iterator[Callable[[str], object]]:  # noqa: F811
    """`signed_in("b-sender")` → a playwright Page of a new browser context, signed in as that
    account through the sign-in form. Contexts are closed after the test."""
    contexts = []

    def open_as(who: str):
        account = portal.accounts[who]
        context = browser.new_context(base_url=portal.base_url, viewport={"width": 1366, "height": 900})
        context.set_default_timeout(PAGE_TIMEOUT_MS)
        contexts.append(context)
        page = context.new_page()
        page.goto("/login")
        page.fill("input[name=username]", account.username)
        page.fill("input[name=password]", account.password)
        page.click("button[type=submit]")
        page.wait_for_load_state()
        assert "/login" not in page.url, f"{who} could not sign in: {page.content()[:500]}"
        return page

    yield open_as
    for context in contexts:
        context.close()
