"""The disk's durable-write ceiling, measured beside each target in the same run: no server
stores CT-size instances durably faster than this on the same filesystem, so the STOW
512×512 figures can be read against it (disks on shared machines drift by a factor of two
within an hour, so only a figure taken minutes apart means anything)."""

from __future__ import annotations

import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from bench.leftovers import remove_at_exit
from bench.metrics import MB
from bench.timing import Budget
from storage.blobs import sync_filesystem
from storage.direct_file import DirectFile


@dataclass(frozen=True)
class DiskCeiling:
    batches: int
    files_per_batch: int
    file_bytes: int
    writers: int
    seconds: float

    @property
    def megabytes_per_second(self) -> float:
        return self.batches * self.files_per_batch * self.file_bytes / MB / self.seconds if self.seconds else 0.0

    @property
    def files_per_second(self) -> float:
        return self.batches * self.files_per_batch / self.seconds if self.seconds else 0.0


def durable_write_ceiling(file_bytes: int, files_per_batch: int, writers: int, budget: Budget) -> DiskCeiling:
    """`writers` threads each write batches of `files_per_batch` files of `file_bytes` (past their
    first bytes straight to the disk, the faster way here: storage/direct_file.py), rename
    them into a two-level fan-out and flush the filesystem (storage.blobs.sync_filesystem), as
    a STOW-RS request of as many instances must before it answers; until `budget` (batches,
    seconds) is spent. Measured in the temporary directory the servers keep their data in."""
    directory = Path(tempfile.mkdtemp(prefix="oix-bench-disk-"))
    content = os.urandom(file_bytes)
    clock = budget.start()
    lock = threading.Lock()
    done = 0

    def claim() -> bool:
        with lock:
            return clock.take()

    def writer() -> None:
        nonlocal done
        while claim():
            placed = []
            for _ in range(files_per_batch):
                name = os.urandom(16).hex()
                spooled = directory / f"incoming-{name}"
                file = DirectFile(spooled)  # as OIX spools an upload
                file.writelines([content])
                file.close()
                target = directory / name[-2:] / name[-4:-2] / name
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(spooled, target)
                placed.append(target)
            sync_filesystem(directory, placed)
            with lock:
                done += 1

    os.sync()
    threads = [threading.Thread(target=writer, daemon=True) for _ in range(writers)]
    started = time.perf_counter()
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return DiskCeiling(done, files_per_batch, file_bytes, writers, time.perf_counter() - started)
    finally:
        remove_at_exit(directory)  # not now: see bench/leftovers.py
