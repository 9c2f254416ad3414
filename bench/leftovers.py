"""What the benchmark writes (servers' data directories, the disk ceiling's files) is removed
when the benchmark process exits, never between measurements.

On ext4 without a journal (this machine's root filesystem), for the kernel's dirty-expire
interval after a file is deleted (`vm.dirty_expire_centisecs`, 30 s by default), creating a
file walks over each recently deleted inode of its group one by one (`recently_deleted` in
fs/ext4/ialloc.c). Removing tens of thousands of files just before a target starts made every
file that target then created slower: under perf, 15 % of OIX's samples during STOW 64×64 at 8
clients were that walk. With no deletion in the 40 s before, that STOW stored about 1,700 instead
of about 1,300 instances per second for OIX and about 1,260 instead of 1,180 for Orthanc."""

from __future__ import annotations

import atexit
import shutil
from pathlib import Path

_pending: list[Path] = []


def remove_at_exit(path: Path) -> None:
    if not _pending:
        atexit.register(remove_all)
    _pending.append(path)


def remove_all() -> None:
    while _pending:
        path = _pending.pop()
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
