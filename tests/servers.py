"""Real `oix serve` processes for the tests: organisations added through the CLI, a free
loopback port, a wait for GET /healthz, a stop that never leaves the process behind, and a
PostgreSQL database of their own when they index there."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from dicomweb_client import DICOMwebClient

from bench.server_process import stop

START_TIMEOUT_SECONDS = 60.0
CLI_TIMEOUT_SECONDS = 60.0
POSTGRESQL_ADMIN_URL = os.environ.get("OIX_TEST_POSTGRESQL_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def oix_command() -> list[str]:
    """The installed `oix` console script of this interpreter's environment."""
    script = Path(sys.executable).with_name("oix")
    return [str(script)] if script.exists() else [sys.executable, "-m", "oix.cli"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def new_org_slug(prefix: str = "org") -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


@dataclass
class OixServer:
    """One running server: where it listens, where it keeps its data, how to reach an organisation."""

    backend: str
    data_dir: Path
    database_url: str | None
    base_url: str
    process: subprocess.Popen
    log_path: Path
    orgs: list[str] = field(default_factory=list)
    tls_ca: str | None = None  # the certificate that a TLS server's clients trust

    @property
    def pid(self) -> int:
        return self.process.pid

    def root(self, org: str | None = None) -> str:
        """The DICOMweb service root of `org` (the first organisation by default)."""
        return f"{self.base_url}/dicomweb/{org or self.orgs[0]}"

    def client(self, org: str | None = None) -> DICOMwebClient:
        return DICOMwebClient(url=self.root(org))

    def add_org(self, slug: str | None = None, name: str = "Test organisation") -> str:
        """Add an organisation to the running server's directory with `oix org add`, called
        in this process (the server reads the directory per request): a new interpreter per
        organisation would cost ~2 s, and the corpus tests need dozens."""
        from oix.cli import main as oix_main

        slug = slug or new_org_slug()
        flags = ["--data-dir", str(self.data_dir)]
        if self.database_url:
            flags += ["--database", self.database_url]
        if oix_main(["org", "add", slug, name, *flags]) != 0:
            raise RuntimeError(f"oix org add {slug} failed")
        self.orgs.append(slug)
        return slug

    def cli(self, *args: str, stdin: str = "") -> str:
        """Run an `oix` command on this server's storage in this process (a new interpreter
        costs ~1.5 s) and return what it printed; fails the test if the command does. `stdin`
        is what the command reads from standard input (a password)."""
        import contextlib
        import io
        import sys

        from oix.cli import main as oix_main

        flags = ["--data-dir", str(self.data_dir)]
        if self.database_url:
            flags += ["--database", self.database_url]
        printed = io.StringIO()
        saved_stdin, sys.stdin = sys.stdin, io.StringIO(stdin)
        try:
            with contextlib.redirect_stdout(printed):
                status = oix_main([*args, *flags])
        finally:
            sys.stdin = saved_stdin
        if status != 0:
            raise RuntimeError(f"oix {' '.join(args)} failed ({status})")
        return printed.getvalue()

    def blob_files(self) -> set[str]:
        """Names of the blob files in the data directory (SHA-256 keys)."""
        return {path.name for path in (self.data_dir / "blobs").rglob("*") if path.is_file()}

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


class ServerStartError(RuntimeError):
    pass


def run_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    completed = subprocess.run([*oix_command(), *args], env=env, capture_output=True, text=True,
                               timeout=CLI_TIMEOUT_SECONDS)
    if completed.returncode != 0:
        raise RuntimeError(f"oix {' '.join(args)} failed ({completed.returncode}): {completed.stderr}")
    return completed


def start_server(data_dir: Path, *, backend: str = "sqlite", database_url: str | None = None,
                 orgs: tuple[str, ...] = (), env: dict[str, str] | None = None,
                 args: tuple[str, ...] = (), auth: bool = False) -> OixServer:
    """Add `orgs` through the CLI (OIX_DATA_DIR / OIX_DATABASE_URL), then start `oix serve`
    on a free port and wait until GET /healthz answers 200. Without `auth` the server runs in
    the embedded single-user mode on loopback (`--no-auth`): the DICOMweb tests exercise the
    standard, and tests/trust/ exercise authentication and access control."""
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log_path = data_dir.parent / f"{data_dir.name}-server.log"
    # Two workers, whatever the machine: every multi-process path is exercised, and the suite's
    # servers start alike everywhere (the default count is tested in tests/test_cli.py).
    server_env = dict(os.environ, OIX_DATA_DIR=str(data_dir), OIX_LOG_LEVEL="warning", OIX_WORKERS="2")
    server_env.pop("OIX_DATABASE_URL", None)
    if database_url:
        server_env["OIX_DATABASE_URL"] = database_url
    server_env.update(env or {})
    for slug in orgs:
        run_cli(["org", "add", slug, f"Organisation {slug}"], server_env)
    command = [*oix_command(), "serve", "--host", "127.0.0.1", "--port", str(port), *args]
    if not auth:
        command.append("--no-auth")
    if database_url:
        command += ["--database", database_url]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, env=server_env, stdout=log, stderr=subprocess.STDOUT)
    tls_ca = args[args.index("--tls-cert") + 1] if "--tls-cert" in args else None
    server = OixServer(backend, data_dir, database_url, f"{'https' if tls_ca else 'http'}://127.0.0.1:{port}",
                       process, log_path, list(orgs), tls_ca)
    try:
        wait_until_healthy(server)
    except BaseException:
        stop_server(server)
        raise
    return server


def wait_until_healthy(server: OixServer, timeout: float = START_TIMEOUT_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    verify = ssl.create_default_context(cafile=server.tls_ca) if server.tls_ca else True
    with httpx.Client(timeout=2.0, verify=verify) as client:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                raise ServerStartError(f"oix serve exited with {server.process.returncode}:\n{server.log_tail()}")
            try:
                if client.get(f"{server.base_url}/healthz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
    raise ServerStartError(f"oix serve did not answer /healthz within {timeout:.0f} s:\n{server.log_tail()}")


def stop_server(server: OixServer) -> None:
    """Terminate, then kill after a bounded wait."""
    stop(server.process)


def remove_data_dir(server: OixServer) -> None:
    shutil.rmtree(server.data_dir, ignore_errors=True)


def _database_url_for(name: str) -> str:
    return POSTGRESQL_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"


def _connect_admin():
    """The maintenance database of the local PostgreSQL. Unreachable PostgreSQL skips the
    PostgreSQL half of the suite, except under CI=true where it fails loudly."""
    import psycopg

    try:
        return psycopg.connect(POSTGRESQL_ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        reason = f"PostgreSQL is unreachable at {POSTGRESQL_ADMIN_URL}: {exc}".strip()
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason} (CI=true: the PostgreSQL backend must be tested)", pytrace=False)
        pytest.skip(reason)


@contextmanager
def new_postgresql_database() -> Iterator[str]:
    """A database of its own (oix_test_<hex>) on the local PostgreSQL, dropped at the end."""
    name = f"oix_test_{secrets.token_hex(6)}"
    with _connect_admin() as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _database_url_for(name)
    finally:
        with _connect_admin() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
