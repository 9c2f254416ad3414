"""OIX as a server under test: `oix serve` on a free loopback port with a fresh data
directory, either on the embedded default (SQLite + files) or on a throw-away PostgreSQL
database."""

from __future__ import annotations

import logging
import os
import secrets
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

from bench.leftovers import remove_at_exit
from bench.server_process import ServerUnderTest, free_port, stop, wait_until_ready

log = logging.getLogger("bench")

BENCH_ORGANISATION = "bench"
POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
POSTGRES_SERVER_URL = "postgresql://postgres@127.0.0.1:5432"
REPOSITORY = Path(__file__).resolve().parent.parent
CLI_TIMEOUT_SECONDS = 60


def oix_executable() -> str:
    """The `oix` script installed beside the running interpreter, else the project's venv."""
    for candidate in (Path(sys.executable).parent / "oix", REPOSITORY / ".venv" / "bin" / "oix"):
        if os.access(candidate, os.X_OK):
            return str(candidate)
    raise FileNotFoundError("no `oix` executable; run `make install` first")


@contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh, empty database on the local server (trust auth); dropped on exit."""
    name = f"oix_bench_{secrets.token_hex(4)}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{POSTGRES_SERVER_URL}/{name}"
    finally:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def running_oix(
    database_url: str | None = None, keep_dir: bool = False, audit: bool = True
) -> Iterator[ServerUnderTest]:
    """OIX with one organisation, `bench`, whose service root is the benchmark's target. It
    runs without authentication on loopback, as Orthanc does here; every access is audited
    unless `audit` is False (a declared demo: the reference for the audit trail's cost)."""
    executable = oix_executable()
    data_dir = Path(tempfile.mkdtemp(prefix="oix-bench-data-"))
    env = {**os.environ, "OIX_DATA_DIR": str(data_dir)}
    if not audit:
        env.update(OIX_AUDIT="off", OIX_DEMO="1")
    if database_url:
        env["OIX_DATABASE_URL"] = database_url
    log_path = data_dir.parent / f"{data_dir.name}.log"
    process = None
    failed = False
    try:
        subprocess.run(
            [executable, "org", "add", BENCH_ORGANISATION, "Bench organisation"],
            env=env,
            check=True,
            timeout=CLI_TIMEOUT_SECONDS,
            stdin=subprocess.DEVNULL,
        )
        port = free_port()
        command = [
            executable, "serve", "--host", "127.0.0.1", "--port", str(port),
            "--data-dir", str(data_dir), "--no-auth",
        ]  # fmt: skip
        if database_url:
            command += ["--database", database_url]
        with open(log_path, "wb") as log_file:
            process = subprocess.Popen(
                command, env=env, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        base = f"http://127.0.0.1:{port}"
        wait_until_ready(process, f"{base}/healthz", log_path)
        yield ServerUnderTest(
            ("oix-pg" if database_url else "oix-sqlite") + ("" if audit else "-audit-off"),
            f"{base}/dicomweb/{BENCH_ORGANISATION}",
            process.pid,
        )
    except BaseException:
        failed = True
        raise
    finally:
        if process is not None:
            stop(process)
        if keep_dir or failed:
            log.info("OIX data directory %s and log %s kept", data_dir, log_path)
        else:
            remove_at_exit(data_dir)
            remove_at_exit(log_path)


@contextmanager
def running_oix_on_postgres(keep_dir: bool = False) -> Iterator[ServerUnderTest]:
    with postgres_database() as database_url:
        with running_oix(database_url, keep_dir) as server:
            yield server
