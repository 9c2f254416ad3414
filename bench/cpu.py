"""Processor time spent while a measurement runs: by the server (its process and its
children), by this benchmark process (the clients) and by the whole machine. On a small
machine STOW at full concurrency can be bound by the cores rather than the disk: these
figures tell which, and how much processor time each server spends per stored instance."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import psutil


@dataclass
class CpuUse:
    server_seconds: float | None  # None when the server is not a process on this machine
    client_seconds: float
    machine_busy_seconds: float
    wall_seconds: float
    cpus: int

    @property
    def machine_busy_share(self) -> float:
        """The share of every core's time that was busy, 0 to 1."""
        return self.machine_busy_seconds / (self.wall_seconds * self.cpus) if self.wall_seconds else 0.0

    def as_dict(self) -> dict:
        return {**asdict(self), "machine_busy_share": self.machine_busy_share}


class CpuMeter:
    """`with CpuMeter(server_pid) as meter: ...` then `meter.use`."""

    def __init__(self, server_pid: int | None):
        self.server_pid = server_pid
        self.use: CpuUse | None = None

    def __enter__(self) -> CpuMeter:
        self._start = self._sample()
        return self

    def __exit__(self, *exc_info) -> None:
        end = self._sample()
        server = None if end[0] is None or self._start[0] is None else end[0] - self._start[0]
        self.use = CpuUse(server, *(after - before for before, after in zip(self._start[1:], end[1:])),
                          cpus=psutil.cpu_count() or 1)

    def _sample(self) -> tuple[float | None, float, float, float]:
        client = psutil.Process().cpu_times()
        machine = psutil.cpu_times()
        # Linux counts guest time inside user time as well; steal is time another guest had.
        not_busy = sum(getattr(machine, name, 0.0) for name in ("idle", "iowait", "steal", "guest", "guest_nice"))
        return (_family_seconds(self.server_pid), client.user + client.system, sum(machine) - not_busy,
                time.monotonic())


def _family_seconds(pid: int | None) -> float | None:
    """User and system time of a process, of its live descendants and of those it has reaped."""
    if pid is None:
        return None
    try:
        root = psutil.Process(pid)
        times = root.cpu_times()
        total = times.user + times.system + times.children_user + times.children_system
        for child in root.children(recursive=True):
            try:
                child_times = child.cpu_times()
            except psutil.NoSuchProcess:
                continue  # reaped between the listing and here: counted in its parent's children_*
            total += child_times.user + child_times.system
        return total
    except psutil.NoSuchProcess:
        return None
