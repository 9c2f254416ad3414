"""A small HTTP server of a test's own (an OpenID provider, a static site) on a free loopback
port, serving in a daemon thread until stopped."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STOP_TIMEOUT_SECONDS = 5.0


class LoopbackHttpServer:
    def __init__(self, handler: type[BaseHTTPRequestHandler], name: str):
        self.handler = handler
        self.name = name
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, f"{self.name} is not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self.handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            assert self._thread is not None
            self._thread.join(STOP_TIMEOUT_SECONDS)
            self._server = None
