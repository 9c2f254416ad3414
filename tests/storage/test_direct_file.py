"""Blob files written past their header straight to the disk (storage/direct_file.py): the bytes
read back are the bytes given, however they were cut, and only the header and the last partial
block pass through the page cache."""

from __future__ import annotations

import ctypes
import mmap
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from storage import direct_file
from storage.direct_file import BLOCK, CACHED_HEAD, DirectFile

SIZES = [0, 1, BLOCK - 1, BLOCK, CACHED_HEAD - 1, CACHED_HEAD, CACHED_HEAD + 1, CACHED_HEAD + BLOCK,
         CACHED_HEAD + BLOCK + 7, 512 * 512 * 2 + 1_400, direct_file.BUFFER_BYTES * 2 + CACHED_HEAD + 3]


def write_in_pieces(path: Path, data: bytes, rng: random.Random) -> DirectFile:
    """`data` written in several `writelines` calls of several chunks each, cut at random."""
    file = DirectFile(path)
    position = 0
    while position < len(data):
        chunks = []
        for _ in range(rng.randint(1, 4)):
            size = rng.choice([1, 17, BLOCK - 3, BLOCK, 65_536, 300_001])
            chunks.append(data[position:position + size])
            position += size
        file.writelines(chunks)
    file.close()
    return file


@pytest.mark.parametrize("size", SIZES)
def test_the_file_holds_exactly_the_bytes_written(tmp_path, size):
    rng = random.Random(size)
    data = rng.randbytes(size)
    for attempt in range(3):
        path = tmp_path / f"blob-{attempt}"
        write_in_pieces(path, data, rng)
        assert path.read_bytes() == data


def resident_pages(path: Path) -> list[bool]:
    """Which pages of `path` the page cache holds (mincore(2)), without reading any."""
    libc = ctypes.CDLL(None, use_errno=True)
    size = path.stat().st_size
    pages = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
    with open(path, "r+b") as handle, mmap.mmap(handle.fileno(), size) as mapped:
        vector = (ctypes.c_ubyte * pages)()
        address = ctypes.addressof(ctypes.c_char.from_buffer(mapped))
        try:
            if libc.mincore(ctypes.c_void_p(address), ctypes.c_size_t(size), vector) != 0:
                raise OSError(ctypes.get_errno(), "mincore failed")
        finally:
            del address  # no export of the map may outlive it
    return [bool(flag & 1) for flag in vector]


def test_only_the_header_and_the_last_partial_block_pass_through_the_page_cache(tmp_path):
    """The test directory is on the machine's disk (ext4 here), which takes direct I/O."""
    size = 512 * 512 * 2 + 1_400  # a 512×512 16-bit instance and its header
    path = tmp_path / "blob"
    file = write_in_pieces(path, random.Random(1).randbytes(size), random.Random(2))
    assert not file._refused
    resident = resident_pages(path)
    head_pages = CACHED_HEAD // mmap.PAGESIZE
    assert all(resident[:head_pages])
    assert not any(resident[head_pages:-1])  # written directly: never in the page cache
    assert resident[-1]  # the last 1,400 bytes are less than a block


def test_a_filesystem_without_direct_io_gets_the_bytes_through_the_page_cache(tmp_path):
    """ramfs has no direct I/O: setting O_DIRECT fails with EINVAL, and the file is written as
    any other. Mounted in a mount namespace of its own (unshare(1)), which needs root."""
    if os.geteuid() != 0:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("mounting ramfs needs root (CI=true: the fallback must be tested)", pytrace=False)
        pytest.skip("mounting ramfs needs root")
    mount_point = tmp_path / "ramfs"
    mount_point.mkdir()
    script = (
        "import random, sys\n"
        "from pathlib import Path\n"
        "from tests.storage.test_direct_file import write_in_pieces\n"
        "data = random.Random(3).randbytes(700_001)\n"
        "file = write_in_pieces(Path(sys.argv[1]) / 'blob', data, random.Random(4))\n"
        "assert file._refused, 'ramfs took O_DIRECT'\n"
        "assert (Path(sys.argv[1]) / 'blob').read_bytes() == data\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        ["unshare", "--mount", "sh", "-c", 'mount -t ramfs ramfs "$1" && "$2" -c "$3" "$1"', "sh",
         str(mount_point), sys.executable, script],
        cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_a_device_wanting_larger_blocks_gets_the_rest_through_the_page_cache(tmp_path, monkeypatch):
    """Direct writes of 256-byte blocks at 256-byte offsets are refused (EINVAL) by a disk whose
    logical blocks are 512 bytes or more; the file is then finished through the page cache."""
    monkeypatch.setattr(direct_file, "BLOCK", 256)
    monkeypatch.setattr(direct_file, "CACHED_HEAD", 256)
    data = random.Random(5).randbytes(100_000)
    file = write_in_pieces(tmp_path / "blob", data, random.Random(6))
    assert file._refused
    assert (tmp_path / "blob").read_bytes() == data
