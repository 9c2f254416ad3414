"""Parser processes for STOW-RS. Reading received objects' headers is the CPU-heavy part of a
store, and Python threads share one core, so each request's parts are checked
(`dicomweb.checks.check_parts`) in a process of their own.

A request's thread takes an idle parser, sends the parts over that parser's pipe and waits for
its answer: two pickles and two pipe writes, with no thread in between. (A concurrent.futures
process pool hands every call through a manager thread and a queue feeder thread of the server
process; those hand-offs cost the server more processor time than the calls themselves, and
one crashed process breaks that pool for good.) A parser found dead when a request takes it is
replaced before use; one that dies or hangs while reading a request is replaced, and only that
request fails."""

from __future__ import annotations

import logging
import pickle
import queue
import signal
import threading
from multiprocessing import get_context
from multiprocessing.connection import Connection
from typing import Any

from dicomweb.errors import ServiceUnavailable

log = logging.getLogger("oix")

# Reading the headers of one request takes milliseconds per object; a parser silent this long
# is stuck (a pathological object), and is replaced.
PARSE_TIMEOUT_SECONDS = 600.0
START_TIMEOUT_SECONDS = 120.0
_READY = b"ready"


class ParserFailed(ServiceUnavailable):
    """The parser process reading a request died, hung or could not be started: 503, and the
    request's objects are discarded (a client sends it again)."""


def _serve(connection: Connection) -> None:
    """A parser process: answer each pickled (parts, study UID, bulk threshold) with
    (True, records) or (False, exception) until the server closes the pipe."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the server, which then closes the pipe
    from dicomweb.checks import check_parts

    connection.send_bytes(_READY)
    while True:
        try:
            job = connection.recv_bytes()
        except (EOFError, OSError):
            return
        try:
            answer: tuple[bool, Any] = (True, check_parts(*pickle.loads(job)))
        except Exception as exc:  # a bug, not a bad object (check_parts reports those): the caller raises it
            answer = (False, exc)
        try:
            reply = pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            reply = pickle.dumps((False, ParserFailed(f"the parser's answer could not be sent: {exc!r}")))
        connection.send_bytes(reply)


class _Parser:
    def __init__(self, context):
        self.connection, child = context.Pipe(duplex=True)
        self.process = context.Process(target=_serve, args=(child,), name="oix-parser", daemon=True)
        self.process.start()
        child.close()

    def wait_ready(self) -> None:
        try:
            ready = self.connection.poll(START_TIMEOUT_SECONDS) and self.connection.recv_bytes() == _READY
        except (EOFError, OSError):  # it died while starting
            ready = False
        if not ready:
            self.close()
            raise ParserFailed("a parser process did not start")

    def ask(self, job: bytes, timeout: float) -> tuple[bool, Any]:
        self.connection.send_bytes(job)
        if not self.connection.poll(timeout):
            raise TimeoutError(f"no answer in {timeout:.0f} s")
        return pickle.loads(self.connection.recv_bytes())

    def close(self) -> None:
        self.connection.close()  # the parser reads EOF and exits
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=5)


class ParserPool:
    """`pool(parts, study_uid, bulk_threshold)` runs `check_parts` in one of `workers` parser
    processes (forkserver: started from a clean process, not a copy of the server's threads)."""

    def __init__(self, workers: int, timeout: float = PARSE_TIMEOUT_SECONDS):
        self.workers = workers
        self.timeout = timeout
        self._context = get_context("forkserver")
        self._idle: queue.SimpleQueue[_Parser] = queue.SimpleQueue()
        self._parsers: list[_Parser] = []  # every live parser, idle or busy
        self._lock = threading.Lock()
        self._started = False
        self._closed = False

    def start(self) -> None:
        """Start every parser now (each imports pydicom), so the first uploads do not wait."""
        with self._lock:
            if self._started:
                return
            parsers = [_Parser(self._context) for _ in range(self.workers)]
            self._parsers.extend(parsers)
            for parser in parsers:
                parser.wait_ready()
                self._idle.put(parser)
            self._started = True

    def __call__(self, parts: list, study_uid: str | None, bulk_threshold: int) -> list:
        if not self._started:
            self.start()
        job = pickle.dumps((parts, study_uid, bulk_threshold), protocol=pickle.HIGHEST_PROTOCOL)
        parser = self._take()
        if not parser.process.is_alive():  # died while idle (killed for memory, say): no request lost
            parser = self._replace(parser)
        try:
            ok, value = parser.ask(job, self.timeout)
        except (EOFError, OSError, TimeoutError) as exc:
            self._idle.put(self._replace(parser))
            raise ParserFailed(f"the parser process reading this request failed ({exc or type(exc).__name__}); "
                               "nothing of it was stored, send it again") from exc
        self._idle.put(parser)
        if not ok:
            raise value
        return value

    def _take(self) -> _Parser:
        while not self._closed:
            try:
                return self._idle.get(timeout=1.0)
            except queue.Empty:
                continue
        raise ParserFailed("the server is stopping")

    def _replace(self, failed: _Parser) -> _Parser:
        """A started parser in place of `failed`, for the caller to use or put back."""
        log.error("parser process %s failed (exit code %s); starting another", failed.process.pid,
                  failed.process.exitcode)
        failed.close()
        with self._lock:
            if failed in self._parsers:
                self._parsers.remove(failed)
            if self._closed:
                raise ParserFailed("the server is stopping")
            fresh = _Parser(self._context)
            self._parsers.append(fresh)
        try:
            fresh.wait_ready()
        except ParserFailed:
            self._idle.put(fresh)  # the slot stays: the next request to take it starts another
            raise
        return fresh

    def pids(self) -> list[int]:
        with self._lock:
            return [parser.process.pid for parser in self._parsers]

    def shutdown(self) -> None:
        with self._lock:
            self._closed = True
            parsers, self._parsers = self._parsers, []
        for parser in parsers:
            parser.close()
