"""The journal `oix send` keeps of what a destination has acknowledged, so that a send cut off
part way resumes without sending again what already arrived.

JSON lines, appended and fsynced after each acknowledged request. The first line names the send:
`{"oix_send": 1, "server": …, "org": …, "destination": …, "created": …}`; each further line is one
acknowledged instance: `{"sop": …, "study": …, "path": …, "size": …, "mtime_ns": …, "kind": "image"
| "report", "at": …}` (`path`, `size` and `mtime_ns` say which file it came from: for a report, the
PDF or text file it was made from). No patient identifiers are written. A line cut short by a crash
is ignored."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

JOURNAL_FORMAT = 1
HEADER_START = b'{"oix_send": '


class JournalMismatch(Exception):
    """The journal at the path records a send to another server, organisation or destination."""


@dataclass(frozen=True)
class SendTarget:
    server: str
    org: str
    destination: str


@dataclass(frozen=True)
class FileIdentity:
    """A file as it was when it was sent: a file edited since is sent again."""

    path: str
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: Path) -> FileIdentity:
        status = path.stat()
        return cls(str(path.resolve()), status.st_size, status.st_mtime_ns)


@dataclass(frozen=True)
class Acknowledgement:
    sop: str
    study: str
    source: FileIdentity
    kind: str = "image"  # or "report"


class SendJournal:
    """What has been acknowledged, read from the journal file when it exists; `record` appends."""

    def __init__(self, path: Path, target: SendTarget):
        self.path = path
        self.target = target
        self.acknowledged: list[Acknowledgement] = []
        self._files: set[FileIdentity] = set()
        self._instances: set[str] = set()
        self._has_header = False
        if path.exists():
            self._read()

    def holds_file(self, identity: FileIdentity) -> bool:
        return identity in self._files

    def holds_instance(self, sop_instance_uid: str) -> bool:
        return sop_instance_uid in self._instances

    def studies(self) -> set[str]:
        return {ack.study for ack in self.acknowledged if ack.study}

    def record(self, acknowledgements: list[Acknowledgement]) -> None:
        """Append the acknowledgements and make them durable before returning."""
        if not acknowledgements:
            return
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        lines = [json.dumps({"sop": ack.sop, "study": ack.study, **asdict(ack.source), "kind": ack.kind, "at": now})
                 for ack in acknowledgements]
        new_file = not self.path.exists()
        if not self._has_header:
            lines.insert(0, json.dumps({"oix_send": JOURNAL_FORMAT, **asdict(self.target), "created": now}))
        with open(self.path, "ab") as journal:
            if journal.tell() > 0 and not self._ends_with_newline():
                lines.insert(0, "")  # end a line a crash cut short, so the next one stands alone
            journal.write(("\n".join(lines) + "\n").encode("utf-8"))
            journal.flush()
            os.fsync(journal.fileno())
        if new_file:
            _sync_directory(self.path.parent)
        self._has_header = True
        for ack in acknowledgements:
            self._add(ack)

    def _add(self, ack: Acknowledgement) -> None:
        self.acknowledged.append(ack)
        self._files.add(ack.source)
        self._instances.add(ack.sop)

    def _ends_with_newline(self) -> bool:
        with open(self.path, "rb") as journal:
            journal.seek(-1, os.SEEK_END)
            return journal.read(1) == b"\n"

    def _read(self) -> None:
        content = self.path.read_bytes()
        entries = [entry for entry in map(_entry, content.splitlines()) if entry is not None]
        if not entries and content.startswith(HEADER_START[:len(content)]):
            return  # empty, or only a header a crash cut short
        if not entries:
            raise JournalMismatch(f"{self.path} is not an `oix send` journal: give another --state file")
        header = entries[0]
        if "oix_send" not in header:
            raise JournalMismatch(f"{self.path} is not an `oix send` journal: give another --state file")
        recorded = SendTarget(str(header.get("server")), str(header.get("org")), str(header.get("destination")))
        if recorded != self.target:
            raise JournalMismatch(
                f"{self.path} records a send to {recorded.destination} from {recorded.org} on {recorded.server}, "
                f"not to {self.target.destination} from {self.target.org} on {self.target.server}: "
                "give another --state file")
        self._has_header = True
        for entry in entries[1:]:
            try:
                self._add(Acknowledgement(str(entry["sop"]), str(entry.get("study", "")),
                                          FileIdentity(str(entry["path"]), int(entry["size"]), int(entry["mtime_ns"])),
                                          str(entry.get("kind", "image"))))
            except (KeyError, TypeError, ValueError):
                continue  # not an acknowledgement this version wrote: nothing to skip for it


def _entry(line: bytes) -> dict | None:
    try:
        entry = json.loads(line)
    except ValueError:
        return None  # a line a crash cut short
    return entry if isinstance(entry, dict) else None


def _sync_directory(directory: Path) -> None:
    """A new file's name is durable once its directory is synced (POSIX)."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
