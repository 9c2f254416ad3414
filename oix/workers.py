"""The server processes of `oix serve`: one by default; with `--workers N`, N processes share
one listening socket, so a busy exchange uses every core (one Python process runs Python on
one core at a time).

With several workers, uvicorn's process supervisor starts them (each a fresh interpreter that
opens the data directory itself) and restarts one that dies. What must happen once, creating
or updating the index schema, happens in the supervisor before they start. Each worker keeps
its own counters and /metrics adds up every worker's (prometheus_client's multiprocess mode),
so a scrape answered by any worker covers all of them. The index's writers queue across the
processes (storage/database.py), and each worker's audit trail buffers the reads it serves
(exchange/audit.py says how a search still includes them)."""

from __future__ import annotations

import faulthandler
import functools
import logging
import os
import tempfile

from starlette.applications import Starlette

from oix.observability import METRICS_DIR_VARIABLE  # read by prometheus_client on import
from oix.settings import Settings


def server_app(settings: Settings) -> Starlette:
    """The application one server process runs."""
    from oix.app import create_app

    logging.basicConfig(level=settings.log_level.upper(), format="%(message)s")
    # A native library crashing the process leaves the Python stack of every thread on stderr,
    # so an administrator (and a CI log) can tell which request killed it.
    faulthandler.enable()
    return create_app(settings)


def serve_workers(settings: Settings, options: dict) -> None:
    """Run `settings.workers` server processes on one socket until the supervisor is stopped
    (SIGINT or SIGTERM: each worker finishes its requests and writes its buffered audit events)."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    from oix.app import open_database

    logging.basicConfig(level=settings.log_level.upper(), format="%(message)s")
    database, _keyring = open_database(settings)
    database.dispose()
    with tempfile.TemporaryDirectory(prefix="oix-metrics-") as metrics_dir:
        os.environ[METRICS_DIR_VARIABLE] = metrics_dir
        config = uvicorn.Config(functools.partial(server_app, settings), factory=True, workers=settings.workers,
                                **options)
        Multiprocess(config, sockets=[config.bind_socket()]).run()
