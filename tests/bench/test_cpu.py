"""bench.cpu counts the processor time of a server's whole process family: its own, a live
child's, and that of a child it has already reaped."""

from __future__ import annotations

import subprocess
import sys

from bench.cpu import CpuMeter

BURN_SECONDS = 0.3
BURN = f"import time\nend = time.process_time() + {BURN_SECONDS}\nwhile time.process_time() < end:\n    pass\n"
# A stand-in server: a child that burns and exits (reaped), then one that burns and stays.
FAMILY = f"""
import subprocess, sys
burn = {BURN!r}
subprocess.run([sys.executable, "-c", burn], check=True)
live = subprocess.Popen([sys.executable, "-c", burn + "print('burnt', flush=True)\\nimport sys\\nsys.stdin.read()"],
                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
live.stdout.readline()
print("ready", flush=True)
sys.stdin.read()
live.stdin.close()
live.wait()
"""


def test_the_server_family_is_counted_and_the_clients_apart():
    server = subprocess.Popen([sys.executable, "-c", FAMILY], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    try:
        with CpuMeter(server.pid) as meter:
            assert server.stdout.readline().strip() == "ready"
        use = meter.use
    finally:
        server.stdin.close()
        server.wait(timeout=30)
    assert use.server_seconds >= 2 * BURN_SECONDS * 0.9
    assert use.client_seconds < use.server_seconds / 2  # this process only waited
    assert use.machine_busy_seconds >= 2 * BURN_SECONDS * 0.9
    assert 0 < use.machine_busy_share <= 1.05  # two samples of /proc/stat, not one clock


def test_a_server_that_is_not_a_local_process_has_no_server_figure():
    with CpuMeter(None) as meter:
        pass
    assert meter.use.server_seconds is None
    assert "machine_busy_share" in meter.use.as_dict()
