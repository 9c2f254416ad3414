"""`oix serve` refuses, with exit code 2 and a message naming the risk, to start in a way that
could expose patient data (issue Trust): no authentication on an address others can reach,
the audit trail off, half a TLS configuration; a declared demo (--demo / OIX_DEMO=1) may run
open on every address, and without audit."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.servers import free_port, oix_command, start_server, stop_server

# A refusal comes before uvicorn is even imported; a server that did not refuse would bind and
# serve until this runs out, failing the test with TimeoutExpired rather than hanging it.
REFUSAL_TIMEOUT_SECONDS = 30.0


def serve(data_dir: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`oix serve ARGS` on a free port, with no OIX_* setting but the data directory and `env`."""
    clean = {name: value for name, value in os.environ.items() if not name.startswith("OIX_")}
    clean.update(OIX_DATA_DIR=str(data_dir), **(env or {}))
    return subprocess.run([*oix_command(), "serve", "--port", str(free_port()), *args], env=clean,
                          capture_output=True, text=True, timeout=REFUSAL_TIMEOUT_SECONDS)


def assert_refused(completed: subprocess.CompletedProcess, *words: str) -> None:
    assert completed.returncode == 2, (completed.returncode, completed.stderr)
    assert completed.stderr.startswith("oix: "), completed.stderr
    for word in words:
        assert word in completed.stderr, completed.stderr


@pytest.mark.parametrize("open_access", [{"args": ("--no-auth",)}, {"env": {"OIX_AUTH": "off"}}],
                         ids=["--no-auth", "OIX_AUTH=off"])
def test_no_authentication_on_every_address_is_refused(tmp_path, open_access):
    """Anything reachable on 0.0.0.0 could read every study: the message says so and names the
    ways out (authentication, loopback, --demo)."""
    completed = serve(tmp_path / "data", "--host", "0.0.0.0", *open_access.get("args", ()),
                      env=open_access.get("env"))
    assert_refused(completed, "refusing to serve on 0.0.0.0 without authentication", "read every study",
                   "127.0.0.1", "--demo")
    assert not (tmp_path / "data").exists()  # refused before the data directory was touched


@pytest.mark.parametrize("workers", [{"args": ("--workers", "0")}, {"env": {"OIX_WORKERS": "-1"}}],
                         ids=["--workers 0", "OIX_WORKERS=-1"])
def test_fewer_than_one_worker_is_refused(tmp_path, workers):
    """A count of server processes below one is refused with the count given, before anything starts."""
    completed = serve(tmp_path / "data", "--no-auth", *workers.get("args", ()), env=workers.get("env"))
    given = workers.get("args", ("", "-1"))[1]
    assert_refused(completed, "--workers (OIX_WORKERS) takes 1 or more server processes", f"not {given}")
    assert not (tmp_path / "data").exists()


def listening_addresses(port: int) -> set[str]:
    """The IPv4 addresses a socket listens on at `port`, from /proc/net/tcp (state 0A is LISTEN):
    which address the server bound, without talking to anything but loopback."""
    addresses = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, port_hex = local.split(":")
        if state == "0A" and int(port_hex, 16) == port:
            addresses.add(socket.inet_ntoa(int(address, 16).to_bytes(4, "little")))
    return addresses


@pytest.mark.parametrize("declared", [{"args": ("--demo",)}, {"env": {"OIX_DEMO": "1"}}], ids=["--demo", "OIX_DEMO=1"])
def test_a_declared_demo_serves_without_authentication_on_every_address(tmp_path, declared):
    """A demo allows both --no-auth on 0.0.0.0 and OIX_AUDIT=off; an anonymous caller then acts
    as admin of every organisation (the embedded single-user mode)."""
    demo = start_server(tmp_path / "data", args=("--host", "0.0.0.0", *declared.get("args", ())),
                        env={"OIX_AUDIT": "off", **declared.get("env", {})}, auth=False)
    try:
        bound = listening_addresses(httpx.URL(demo.base_url).port)
        me = httpx.get(f"{demo.base_url}/api/me", timeout=10)
    finally:
        stop_server(demo)
    assert bound == {"0.0.0.0"}
    assert me.status_code == 200, me.text
    assert (me.json()["actor"], me.json()["every_organisation"]) == ("anonymous", "admin")


def test_no_authentication_on_loopback_needs_no_demo(tmp_path):
    """The refusal is about reachability, not about --no-auth itself: a loopback address that no
    one else can reach serves without --demo (the control for the refusal above)."""
    local = start_server(tmp_path / "data", args=("--host", "127.0.0.1"), auth=False)
    try:
        assert httpx.get(f"{local.base_url}/api/me", timeout=10).status_code == 200
    finally:
        stop_server(local)


def test_audit_off_without_a_demo_is_refused(tmp_path):
    """Every access to patient data is audited: OIX_AUDIT=off is for a declared demo only, even
    on loopback and with authentication on."""
    completed = serve(tmp_path / "data", "--host", "127.0.0.1", env={"OIX_AUDIT": "off"})
    assert_refused(completed, "OIX_AUDIT=off", "--demo", "audited")


@pytest.mark.parametrize("given", ["--tls-cert", "--tls-key"])
def test_half_a_tls_configuration_is_refused(tmp_path, given):
    """A certificate without its key (or a key without its certificate) cannot serve HTTPS, and
    silently serving plain HTTP instead would send credentials in the clear."""
    pem = tmp_path / "half.pem"
    pem.write_text("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n")
    completed = serve(tmp_path / "data", "--host", "127.0.0.1", given, str(pem))
    assert_refused(completed, "--tls-cert and --tls-key go together")
