"""What the viewer tests share: the prebuilt OHIF viewer (npm `@ohif/app`) served from 127.0.0.1
as any static host serves a single-page app, with the `app-config.js` of docs/ohif.md pointed at
a live OIX, and one Chromium page on it that may reach nothing but loopback."""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.loopback_http import LoopbackHttpServer
from tests.browser import browser, npm_package  # noqa: F401  (browser: the session's Chromium, a fixture)

REPOSITORY = Path(__file__).resolve().parents[2]
OHIF_GUIDE = REPOSITORY / "docs" / "ohif.md"
DOCUMENTED_ROOT = "https://oix.example.org/dicomweb/RJ1"  # the service root the guide's config names
REQUEST_SOCKET_TIMEOUT_SECONDS = 10.0
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
VIEWPORT = {"width": 1400, "height": 900}


def documented_app_config(service_root: str) -> str:
    """docs/ohif.md's `app-config.js` (its first js block that sets window.config), naming
    `service_root` where the guide names its example root: the tests run what the guide says."""
    blocks = re.findall(r"```js\n(.*?)```", OHIF_GUIDE.read_text(), flags=re.DOTALL)
    config = next((block for block in blocks if block.startswith("window.config")), None)
    assert config is not None, f"{OHIF_GUIDE} has no ```js block setting window.config"
    assert DOCUMENTED_ROOT in config, f"the guide's config no longer names {DOCUMENTED_ROOT}"
    return config.replace(DOCUMENTED_ROOT, service_root)


class OhifSite:
    """OHIF's dist/ over HTTP on a free loopback port: its files as they are, `app-config.js`
    from `app_config` (set by the test, never cached), and index.html for any other path."""

    def __init__(self, dist: Path):
        self.dist = dist
        self.app_config = ""
        self._http = LoopbackHttpServer(_handler_for(self), "ohif-site")

    @property
    def origin(self) -> str:
        return self._http.url

    def start(self) -> OhifSite:
        self._http.start()
        return self

    def stop(self) -> None:
        self._http.stop()


def _handler_for(site: OhifSite) -> type[SimpleHTTPRequestHandler]:
    class Handler(SimpleHTTPRequestHandler):
        timeout = REQUEST_SOCKET_TIMEOUT_SECONDS

        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(site.dist), **kwargs)

        def do_GET(self) -> None:
            path = urlsplit(self.path).path
            if path == "/app-config.js":
                body = site.app_config.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/javascript")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)
                return
            if not os.path.isfile(self.translate_path(self.path)):
                self.path = "/index.html"  # a route of the single-page app (/viewer, /callback...)
            super().do_GET()

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the base's name)
            pass

    return Handler


@pytest.fixture(scope="module")
def ohif_site() -> Iterator[OhifSite]:
    site = OhifSite(npm_package("@ohif/app") / "dist").start()
    try:
        yield site
    finally:
        site.stop()


@dataclass
class Traffic:
    """What the page asked of servers other than the viewer's own: OIX answers of 400 and above,
    requests that failed (a CORS refusal is one), and attempts to leave loopback (which fail)."""

    viewer_origin: str
    refused: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)
    answered: list[tuple[int, str]] = field(default_factory=list)

    def clear(self) -> None:
        self.refused.clear()
        self.failed.clear()
        self.blocked.clear()
        self.answered.clear()

    def on_response(self, response) -> None:
        if not response.url.startswith(self.viewer_origin):
            self.answered.append((response.status, response.url))
            if response.status >= 400:
                self.refused.append(f"{response.status} {response.request.method} {response.url}")

    def on_failure(self, request) -> None:
        url = urlsplit(request.url)
        if url.hostname not in LOOPBACK_HOSTS and url.scheme in ("http", "https"):
            self.blocked.append(request.url)
        elif not request.url.startswith(self.viewer_origin) and request.failure != "net::ERR_ABORTED":
            # (aborted: cancelled by the page itself, or by leaving it; a CORS refusal is ERR_FAILED)
            self.failed.append(f"{request.method} {request.url}: {request.failure}")


@dataclass
class ViewerPage:
    page: object  # playwright's Page
    traffic: Traffic


@pytest.fixture(scope="module")
def viewer_page(browser, ohif_site: OhifSite) -> Iterator[ViewerPage]:  # noqa: F811 (the fixture above)
    """One browser context and page for the module. Anything not on loopback goes to a proxy
    that is not there, so it fails inside the browser and the tests never depend on the network
    (OHIF fetches its fonts and scripts from its own dist). A proxy rather than playwright's
    request routing: routing answers CORS preflights itself, and they are what is tested here."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as nowhere:
        nowhere.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        context = browser.new_context(viewport=VIEWPORT, proxy={
            "server": f"http://127.0.0.1:{nowhere.getsockname()[1]}", "bypass": "127.0.0.1,localhost,[::1]"})
        traffic = Traffic(ohif_site.origin)
        page = context.new_page()
        page.on("response", traffic.on_response)
        page.on("requestfailed", traffic.on_failure)
        try:
            yield ViewerPage(page, traffic)
        finally:
            context.close()
