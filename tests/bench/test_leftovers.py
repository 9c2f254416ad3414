"""bench.leftovers keeps what a benchmark wrote until its process exits: removing files between
targets would slow the next target's file creation on ext4 without a journal."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BENCHMARK = """
import sys
from pathlib import Path
from bench.disk import durable_write_ceiling
from bench.leftovers import remove_at_exit
from bench.timing import Budget

data = Path(sys.argv[1]) / "server-data"
(data / "blobs").mkdir(parents=True)
(data / "blobs" / "one").write_bytes(b"x" * 100)
log = Path(sys.argv[1]) / "server.log"
log.write_text("served")
remove_at_exit(data)
remove_at_exit(log)
ceiling = durable_write_ceiling(1000, 3, 2, Budget(count=4, seconds=10))
assert ceiling.batches == 4, ceiling
import tempfile
ceiling_files = list(Path(tempfile.gettempdir()).glob("oix-bench-disk-*/*/*/*"))
print("still there:", data.is_dir(), log.is_file(), len(ceiling_files), flush=True)
"""


def test_what_the_benchmark_wrote_stays_until_it_exits_then_goes(tmp_path):
    temporary = tmp_path / "tmp"  # where the disk ceiling writes its files
    temporary.mkdir()
    finished = subprocess.run([sys.executable, "-c", BENCHMARK, str(tmp_path)], capture_output=True, text=True,
                              timeout=60, cwd=Path(__file__).resolve().parents[2],
                              env={**os.environ, "TMPDIR": str(temporary)})
    assert finished.returncode == 0, finished.stderr
    assert "still there: True True 12" in finished.stdout  # 4 batches of 3 files
    assert sorted(path.name for path in tmp_path.iterdir()) == ["tmp"]
    assert list(temporary.iterdir()) == []
