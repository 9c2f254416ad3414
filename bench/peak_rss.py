"""Peak resident memory of a server process and its children, sampled by a background
thread for as long as the workload runs."""

from __future__ import annotations

import threading

import psutil

SAMPLE_INTERVAL_SECONDS = 0.1


class PeakRssSampler:
    """`with PeakRssSampler(pid) as sampler: ...` then `sampler.peak_bytes`."""

    def __init__(self, pid: int, interval: float = SAMPLE_INTERVAL_SECONDS):
        self.pid = pid
        self.interval = interval
        self.peak_bytes = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="peak-rss", daemon=True)

    def __enter__(self) -> PeakRssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        try:
            root = psutil.Process(self.pid)
        except psutil.NoSuchProcess:
            return
        while not self._stop.is_set():
            total = 0
            try:
                # Worker processes may come and go: list the family again at every sample.
                family = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            for process in family:
                try:
                    total += process.memory_info().rss
                except psutil.NoSuchProcess:
                    continue
            self.samples += 1
            self.peak_bytes = max(self.peak_bytes, total)
            self._stop.wait(self.interval)
