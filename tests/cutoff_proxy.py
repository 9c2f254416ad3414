"""A loopback HTTP proxy in front of a test server that forwards a set number of STOW-RS requests
(POST …/studies) and then cuts the next ones off: it closes the connection without an answer
("drop"), or holds the request unanswered until released ("hold"). What a client meets when the
network or the server goes away part way through an upload. Other requests go through."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding", "host",
              "proxy-connection", "te", "trailer", "upgrade", "server", "date"}
HOLD_LIMIT_SECONDS = 120.0


class CutoffProxy:
    def __init__(self, upstream: str, forward_posts: int | None, cutoff: str):
        assert cutoff in ("drop", "hold")
        self.upstream = upstream
        self.forward_posts = forward_posts
        self.cutoff = cutoff
        self.forwarded_posts = 0  # STOW-RS requests
        self.cut_off_posts = 0
        self.holding = threading.Event()  # set once a request is being held
        self.released = threading.Event()
        self.lock = threading.Lock()
        self.http = httpx.Client(base_url=upstream, timeout=120)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def forward_everything(self) -> None:
        """From now on, forward every request; a held one is dropped."""
        with self.lock:
            self.forward_posts = None
        self.released.set()

    def counts(self) -> tuple[int, int]:
        with self.lock:
            return self.forwarded_posts, self.cut_off_posts

    def _admit(self, method: str, path: str) -> bool:
        with self.lock:
            if method != "POST" or "/studies" not in path:
                return True
            if self.forward_posts is not None and self.forwarded_posts >= self.forward_posts:
                self.cut_off_posts += 1
                return False
            self.forwarded_posts += 1
            return True


def _handler(proxy: CutoffProxy):
    class Relay(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self._relay()

        def do_POST(self) -> None:
            self._relay()

        def _relay(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if not proxy._admit(self.command, self.path):
                if proxy.cutoff == "hold":
                    proxy.holding.set()
                    proxy.released.wait(HOLD_LIMIT_SECONDS)
                self.close_connection = True  # unanswered: the client sees the connection go
                return
            headers = {name: value for name, value in self.headers.items() if name.lower() not in HOP_BY_HOP}
            answer = proxy.http.request(self.command, self.path, content=body, headers=headers)
            self.send_response(answer.status_code)
            for name, value in answer.headers.multi_items():
                if name.lower() not in HOP_BY_HOP:
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(answer.content)))
            self.end_headers()
            self.wfile.write(answer.content)

        def log_message(self, *args) -> None:
            pass

    return Relay


@contextmanager
def cutoff_proxy(upstream: str, forward_posts: int | None, cutoff: str = "drop") -> Iterator[CutoffProxy]:
    proxy = CutoffProxy(upstream, forward_posts, cutoff)
    thread = threading.Thread(target=proxy.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        proxy.released.set()
        proxy.server.shutdown()
        proxy.server.server_close()
        proxy.http.close()
        thread.join(timeout=10)
