"""Starting and stopping a server under test: a free loopback port, waiting until it
answers, and a shutdown that never leaves the process behind."""

from __future__ import annotations

import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

STOP_GRACE_SECONDS = 15.0


@dataclass(frozen=True)
class ServerUnderTest:
    """What the workload needs to know about a running server."""

    name: str
    dicomweb_root: str
    pid: int | None


class ServerStartError(RuntimeError):
    """The server exited or did not answer in time; carries the tail of its log."""


class ServerExited(RuntimeError):
    """The server under test died during the workload; `details` holds what was measured."""

    def __init__(self, name: str, details: dict):
        super().__init__(f"{name} exited during the workload")
        self.details = details


def process_alive(pid: int) -> bool:
    """True while `pid` runs (an exited child not yet reaped is a zombie: not alive)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_ready(
    process: subprocess.Popen, url: str, log_path: Path, timeout: float = 60.0
) -> None:
    """Poll `url` until it answers 200; fail early if the process exits."""
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise ServerStartError(
                    f"server exited with code {process.returncode}:\n{log_tail(log_path)}"
                )
            try:
                if client.get(url).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
    raise ServerStartError(f"{url} did not answer within {timeout:.0f} s:\n{log_tail(log_path)}")


def stop(process: subprocess.Popen) -> None:
    """Terminate, then kill after a bounded wait."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=STOP_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=STOP_GRACE_SECONDS)


def log_tail(log_path: Path, lines: int = 30) -> str:
    try:
        text = log_path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])
