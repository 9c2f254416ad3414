"""One structured log line per request (with a request id) and Prometheus metrics."""

from __future__ import annotations

import logging
import os
import time
import uuid

import orjson
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("oix.access")

METRICS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"  # set by oix.workers for its workers


class Metrics:
    """What /metrics serves (`registry`). Under `oix serve --workers`, each worker's counters
    are written to files in the shared metrics folder and a scrape adds up all of them."""

    def __init__(self):
        self.registry = CollectorRegistry()
        shared = os.environ.get(METRICS_DIR_VARIABLE)
        counted = CollectorRegistry() if shared else self.registry
        if shared:
            MultiProcessCollector(self.registry, path=shared)
        self.requests = Counter("oix_http_requests_total", "HTTP requests answered",
                                ["method", "route", "status"], registry=counted)
        self.latency = Histogram("oix_http_request_duration_seconds", "Time to answer a request",
                                 ["method", "route"], registry=counted,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.bytes_received = Counter("oix_http_received_bytes_total", "Request body bytes received",
                                      ["route"], registry=counted)
        self.bytes_sent = Counter("oix_http_sent_bytes_total", "Response body bytes sent",
                                  ["route"], registry=counted)

    def watch_holdings(self, count_holdings) -> None:
        """Instances and bytes held, read from the index at each scrape."""
        self.registry.register(_HoldingsCollector(count_holdings))


class _HoldingsCollector:
    def __init__(self, count_holdings):
        self.count_holdings = count_holdings

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        instances, size = self.count_holdings()
        yield GaugeMetricFamily("oix_instances_held", "Instances in the index (all organisations)", value=instances)
        yield GaugeMetricFamily("oix_held_bytes", "Bytes of the instances in the index", value=size)


def route_label(scope: Scope) -> str:
    """A bounded label for a path: UIDs and organisation codes replaced by their role."""
    parts = scope.get("path", "").strip("/").split("/")
    if parts and parts[0] == "dicomweb":
        names = ["dicomweb", "{org}"]
        for index, piece in enumerate(parts[2:]):
            previous = parts[1 + index]
            named = {"studies": "{study}", "series": "{series}", "instances": "{instance}",
                     "frames": "{frames}", "bulkdata": "{path}"}.get(previous)
            names.append(named if named and piece not in ("metadata",) else piece)
            if previous == "bulkdata":
                break
        return "/" + "/".join(names)
    return "/" + parts[0] if parts and parts[0] else "/"


def logged_path(scope: Scope) -> str:
    """The path as the request log records it: a patient access link's token is its credential
    (only its hash is stored), so it never reaches a log."""
    path = scope.get("path", "")
    if path.startswith("/access/"):
        rest = path[len("/access/"):].partition("/")
        return "/access/{token}" + (rest[1] + rest[2] if rest[1] else "")
    return path


REQUEST_ID = "oix.request_id"  # the ASGI scope key holding the request's id


class RequestLogMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = dict(scope.get("headers") or [])
        request_id = headers.get(b"x-request-id", b"").decode("latin-1")[:64] or uuid.uuid4().hex
        scope[REQUEST_ID] = request_id  # for the audit trail
        route = route_label(scope)
        state = {"status": 500, "sent": 0, "received": 0}

        async def receive_counted() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
            return message

        async def send_logged(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
                message.setdefault("headers", [])
                message["headers"] = list(message["headers"]) + [(b"x-request-id", request_id.encode())]
            elif message["type"] == "http.response.body":
                state["sent"] += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive_counted, send_logged)
        finally:
            elapsed = time.perf_counter() - started
            method = scope["method"]
            self.metrics.requests.labels(method, route, str(state["status"])).inc()
            self.metrics.latency.labels(method, route).observe(elapsed)
            self.metrics.bytes_received.labels(route).inc(state["received"])
            self.metrics.bytes_sent.labels(route).inc(state["sent"])
            log.info(orjson.dumps({
                "request_id": request_id, "method": method, "path": logged_path(scope),
                "status": state["status"], "ms": round(elapsed * 1000, 2),
                "received": state["received"], "sent": state["sent"],
                "client": (scope.get("client") or ["", 0])[0],
            }).decode())
