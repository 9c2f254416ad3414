"""An flock(2) on a file, for a block: it holds across threads (each call opens the file anew)
and across processes on one data directory."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def file_lock(path: Path | str, mode: int = fcntl.LOCK_EX) -> Iterator[None]:
    """Hold `path` locked (`fcntl.LOCK_EX` or `fcntl.LOCK_SH`) for the block; created if missing."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, mode)
        yield
    finally:
        os.close(fd)  # closing releases the lock
