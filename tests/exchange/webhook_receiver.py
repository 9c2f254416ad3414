"""A real webhook receiver for the tests: an HTTP server on 127.0.0.1 in a thread of the test
process, that records every POST and answers from a script (a status, a delay, headers)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Answer:
    status: int = 200
    delay: float = 0.0  # seconds to wait before answering: a slow receiver
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes


class Receiver:
    def __init__(self, server: ThreadingHTTPServer, answers: list[Answer]):
        self._server = server
        self._answers = list(answers)
        self._lock = threading.Lock()
        self.requests: list[Received] = []

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/oix-events"

    def wait_for(self, count: int, timeout: float = 5.0) -> list[Received]:
        """The first `count` requests, once they have arrived (bounded wait)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.requests) >= count:
                    return self.requests[:count]
            time.sleep(0.01)
        raise AssertionError(f"the receiver got {len(self.requests)} requests, not {count}, in {timeout} s")

    def _next(self, received: Received) -> Answer:
        with self._lock:
            self.requests.append(received)
            return self._answers.pop(0) if self._answers else Answer()


@contextmanager
def receiver(*answers: Answer) -> Iterator[Receiver]:
    """A receiver answering `answers` in turn, then 200 to everything."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802 - the http.server name
            length = int(self.headers.get("Content-Length", "0"))
            received = Received(self.path, {name.lower(): value for name, value in self.headers.items()},
                                self.rfile.read(length))
            answer = running._next(received)
            if answer.delay:
                time.sleep(answer.delay)
            try:
                self.send_response(answer.status)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer.body)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(answer.body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up waiting: what a timeout looks like from here

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.block_on_close = False  # a receiver still sleeping does not hold the test up
    running = Receiver(server, list(answers))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield running
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
