"""`oix send PATH… --to DEST`: send folders of DICOM files to another organisation through its
outbox service root (STOW-RS, PS3.18 10.5), with a progress line, and resume after an interruption
without sending again what the destination has acknowledged (the journal: oix/send_journal.py)."""

from __future__ import annotations

import getpass
import io
import os
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TextIO

import httpx
import pydicom
from pydicom.errors import InvalidDicomError

from exchange.errors import ExchangeError
from oix.send_journal import Acknowledgement, FileIdentity, JournalMismatch, SendJournal, SendTarget
from oix.stow_client import (
    InstanceFailure, Part10, Part10Bytes, Part10File, ServerUnavailable, StoreRefused, StoreResponse, error_message,
    store_instances,
)

NOTE_HEADER = "X-OIX-Note"
PREAMBLE_BYTES, PART10_PREFIX = 128, b"DICM"  # PS3.10 7.1: a 128-byte preamble, then "DICM"
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"  # a DICOMDIR: an index of the media, not an instance
DEFAULT_BATCH_FILES, DEFAULT_BATCH_MB = 20, 64
DEFAULT_RETRIES = 5
RETRY_FIRST_WAIT_SECONDS, RETRY_LONGEST_WAIT_SECONDS = 1.0, 30.0
CONNECT_TIMEOUT_SECONDS, REQUEST_TIMEOUT_SECONDS = 10.0, 600.0
TRANSFER_PAGE, MAX_TRANSFER_PAGES = 500, 20
MEBIBYTE = 1024 * 1024

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class SendError(Exception):
    """The send stops here; the message tells the user what to do. Acknowledgements already
    journalled stay, so the same command resumes."""

    exit_code = EXIT_FAILED


class UsageError(SendError):
    """Nothing was sent: the command, its credentials or its destination are wrong."""

    exit_code = EXIT_USAGE


@dataclass(frozen=True)
class SendSettings:
    paths: tuple[Path, ...]
    destination: str
    server: str
    token: str
    org: str | None = None
    urgency: str = "routine"
    note: str = ""
    report: Path | None = None
    author: str | None = None
    batch_files: int = DEFAULT_BATCH_FILES
    batch_bytes: int = DEFAULT_BATCH_MB * MEBIBYTE
    state: Path | None = None
    complete: bool = True
    retries: int = DEFAULT_RETRIES

    @classmethod
    def from_arguments(cls, args) -> SendSettings:
        """From `oix send`'s arguments; their defaults already hold OIX_SERVER, OIX_ORG and OIX_TOKEN."""
        if not args.server:
            raise UsageError("give the OIX server: --server https://oix.example.nhs.uk (or OIX_SERVER)")
        if not args.token:
            raise UsageError("give an API key or bearer token: --token (or OIX_TOKEN); an admin makes one with "
                             "`oix key create --org ORG --role sender`")
        batch = DEFAULT_BATCH_FILES if args.batch is None else args.batch
        batch_mb = DEFAULT_BATCH_MB if args.batch_mb is None else args.batch_mb
        retries = DEFAULT_RETRIES if args.retries is None else args.retries
        if batch < 1 or batch_mb < 1 or retries < 0:
            raise UsageError("--batch and --batch-mb are at least 1, --retries at least 0")
        return cls(tuple(Path(p) for p in args.paths), args.to, args.server.rstrip("/"), args.token, args.org or None,
                   args.urgency, args.note or "", Path(args.report) if args.report else None, args.author,
                   batch, batch_mb * MEBIBYTE, Path(args.state) if args.state else None, not args.no_complete, retries)

    @property
    def journal_path(self) -> Path:
        return self.state or Path.cwd() / f".oix-send-{re.sub(r'[^A-Za-z0-9._-]', '_', self.destination)}.jsonl"


# -- finding the files --------------------------------------------------------------------------


@dataclass
class Found:
    files: list[Path] = field(default_factory=list)  # DICOM Part 10 files, in name order
    other: int = 0  # files that are not


def find_part10(paths: tuple[Path, ...], leave_out: Path | None = None) -> Found:
    """Every DICOM Part 10 file under `paths` (files, and folders walked recursively), told by the
    "DICM" prefix after the preamble without reading further."""
    found = Found()
    seen = {leave_out.resolve()} if leave_out else set()  # a file under two of the paths is sent once
    for path in paths:
        if path.is_dir():
            candidates = _files_under(path)
        elif path.is_file():
            candidates = iter([path])
        else:
            raise UsageError(f"{path}: no such file or folder")
        for candidate in candidates:
            if (resolved := candidate.resolve()) in seen:
                continue
            seen.add(resolved)
            if is_part10(candidate):
                found.files.append(candidate)
            else:
                found.other += 1
    return found


def _files_under(folder: Path) -> Iterator[Path]:
    """Files in name order, folder by folder (symbolic links to folders are not followed)."""
    for parent, folders, names in os.walk(folder):
        folders.sort()
        for name in sorted(names):
            yield Path(parent) / name


def is_part10(path: Path) -> bool:
    try:
        with open(path, "rb") as file:
            file.seek(PREAMBLE_BYTES)
            return file.read(len(PART10_PREFIX)) == PART10_PREFIX
    except OSError:
        return False


# -- what goes in a request ------------------------------------------------------------------------


@dataclass(frozen=True)
class Outgoing:
    """One object to send and what the journal records of it once it is acknowledged."""

    part: Part10
    label: str  # how messages name it
    sop: str
    study: str
    source: FileIdentity
    kind: str = "image"

    def acknowledgement(self) -> Acknowledgement:
        return Acknowledgement(self.sop, self.study, self.source, self.kind)


class NotAnInstance(Exception):
    """A Part 10 file that is not a composite instance to send (a DICOMDIR)."""


def outgoing_file(path: Path) -> Outgoing:
    """The file, with the UIDs the journal needs from its header (read up to the UIDs only)."""
    identity = FileIdentity.of(path)
    dataset = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPInstanceUID", "StudyInstanceUID"])
    meta = dataset.file_meta
    if str(meta.get("MediaStorageSOPClassUID", "")) == MEDIA_STORAGE_DIRECTORY:
        raise NotAnInstance(path)
    sop = str(dataset.get("SOPInstanceUID", "") or meta.get("MediaStorageSOPInstanceUID", ""))
    if not sop:
        raise ValueError("it has no SOP Instance UID")
    return Outgoing(Part10File(path, identity.size), str(path), sop, str(dataset.get("StudyInstanceUID", "")), identity)


def outgoing_report(report: Path, study_file: Path, author: str | None, when: datetime) -> Outgoing:
    """The report made into an object of `study_file`'s study: a PDF as Encapsulated PDF, a .txt
    file as Basic Text SR; titled by its file name."""
    from exchange.reports import MAX_REPORT_BYTES, ReportTooLarge, basic_text_sr, encapsulated_pdf  # loads pypdf

    identity = FileIdentity.of(report)
    if identity.size > MAX_REPORT_BYTES:
        raise ReportTooLarge(identity.size, MAX_REPORT_BYTES)
    study = pydicom.dcmread(study_file, stop_before_pixels=True)
    content = report.read_bytes()
    title = report.stem
    if report.suffix.lower() == ".txt":
        try:
            text = content.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise UsageError(f"{report}: a .txt report is read as UTF-8, and this file is not UTF-8") from None
        data = basic_text_sr(text, study, title=title, author=author, when=when)
    else:
        data = encapsulated_pdf(content, study, title=title, author=author, when=when)
    made = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    return Outgoing(Part10Bytes(data), f"report {report}", str(made.SOPInstanceUID), str(made.StudyInstanceUID),
                    identity, "report")


# -- progress --------------------------------------------------------------------------------------


class Progress:
    """One line on a terminal, redrawn at most ten times a second: files and bytes acknowledged
    of the total, and the rate. Nothing is drawn when `stream` is not a terminal."""

    def __init__(self, stream: TextIO, files: int, size: int, clock=time.monotonic):
        self.stream = stream
        self.drawing = stream.isatty()
        self.files, self.size = files, size
        self.done_files = self.done_bytes = self.in_flight = 0
        self.clock = clock
        self.started = clock()
        self.drawn_at = 0.0

    def drop(self, size: int) -> None:
        """An object found not to need sending after all."""
        self.files -= 1
        self.size -= size
        self.draw()

    def streamed(self, count: int) -> None:
        self.in_flight += count
        self.draw()

    def acknowledged(self, files: int, size: int) -> None:
        self.done_files += files
        self.done_bytes += size
        self.in_flight = 0
        self.draw(force=True)

    def retrying(self) -> None:
        self.in_flight = 0

    def rate(self) -> float:
        return self.done_bytes / max(self.clock() - self.started, 1e-6)

    def say(self, line: str) -> None:
        """A message on its own line, under which the progress line is drawn again."""
        self.clear()
        print(line, file=self.stream, flush=True)
        self.draw(force=True)

    def draw(self, force: bool = False) -> None:
        now = self.clock()
        if not self.drawing or (not force and now - self.drawn_at < 0.1):
            return
        self.drawn_at = now
        sent = min(self.done_bytes + self.in_flight, self.size)
        self.stream.write(f"\r\x1b[K{self.done_files}/{self.files} files  {_mb(sent)}/{_mb(self.size)} MB  "
                          f"{_mb(self.rate())} MB/s")
        self.stream.flush()

    def clear(self) -> None:
        if self.drawing:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def _mb(size: float) -> str:
    return f"{size / 1e6:.1f}"


def _size(size: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size:.0f} B"


# -- the send --------------------------------------------------------------------------------------


@dataclass
class Tally:
    acknowledged: int = 0
    acknowledged_bytes: int = 0
    already: int = 0  # acknowledged by an earlier run
    not_dicom: int = 0
    directories: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # what, why


class Send:
    """One run of `oix send` against a server: checks, batches, the journal, transfers completed."""

    def __init__(self, settings: SendSettings, client: httpx.Client, out: TextIO, err: TextIO):
        self.settings = settings
        self.client = client
        self.out, self.err = out, err
        self.tally = Tally()

    def run(self) -> int:
        settings = self.settings
        found = find_part10(settings.paths, leave_out=settings.journal_path)
        self.tally.not_dicom = found.other
        if not found.files:
            raise UsageError(f"no DICOM files in {', '.join(map(str, settings.paths))}: "
                             f"{found.other} file(s) found, none DICOM Part 10 ('DICM' after the 128-byte preamble)")
        note = _header_value(settings.note)
        org = self._sending_org()
        self._require_destination(org)
        journal = SendJournal(settings.journal_path, SendTarget(settings.server, org, settings.destination))
        if not os.access(journal.path if journal.path.exists() else journal.path.parent, os.W_OK):
            raise UsageError(f"cannot write the journal {journal.path}: give --state FILE somewhere writable")
        report = self._report(journal, found.files)
        pending = [path for path in found.files if not self._held(journal, path)]
        progress = Progress(self.err, len(pending) + bool(report),
                            sum(path.stat().st_size for path in pending) + (report.part.size if report else 0))
        url = f"/dicomweb/{org}/outbox/{settings.destination}{_urgency_path(settings.urgency)}/studies"
        headers = {NOTE_HEADER: note} if note else {}
        started, elapsed, transfers = time.monotonic(), None, None
        try:
            for batch in self._batches(pending, journal, progress, report):
                self._send_batch(url, headers, batch, journal, progress)
            elapsed = time.monotonic() - started
            progress.clear()
            if settings.complete and not self.tally.failed:
                transfers = self._complete(org, journal)
        finally:  # stopped by an error or Ctrl-C too: say what arrived
            progress.clear()
            self._summary(time.monotonic() - started if elapsed is None else elapsed, transfers, journal)
        return EXIT_FAILED if self.tally.failed else EXIT_OK

    # -- before sending

    def _sending_org(self) -> str:
        """The organisation to send as: --org, or the only one the token acts for (GET /api/me)."""
        response = self._get("/api/me")
        me = response.json()
        memberships: dict = me.get("memberships") or {}
        org = self.settings.org
        if org is None:
            if len(memberships) != 1:
                raise UsageError("give the sending organisation with --org (or OIX_ORG): the token acts for "
                                 f"{', '.join(sorted(memberships)) or 'every organisation'}")
            return next(iter(memberships))
        if org not in memberships and not me.get("every_organisation"):
            acts_for = ", ".join(sorted(memberships)) or "no organisation"
            raise UsageError(f"the token does not act for {org}; it acts for {acts_for}")
        return org

    def _require_destination(self, org: str) -> None:
        destination = self.settings.destination
        if destination == org:
            raise UsageError(f"--to {destination} is the sending organisation; a transfer goes to another one")
        listed = self._get("/api/orgs", params={"q": destination}).json().get("organisations", [])
        codes = [entry.get("code") for entry in listed]
        if destination not in codes:
            hint = f"; did you mean {', '.join(codes[:5])}?" if codes else ""
            raise UsageError(f"unknown destination {destination}: no organisation with that code on "
                             f"{self.settings.server}{hint}")

    def _report(self, journal: SendJournal, files: list[Path]) -> Outgoing | None:
        """The report, in the study of the first file (in name order) that is an instance of a study."""
        path = self.settings.report
        if path is None:
            return None
        if not path.is_file():
            raise UsageError(f"--report {path}: no such file")
        if journal.holds_file(FileIdentity.of(path)):
            self.tally.already += 1
            return None
        study_file = next((file for file in files if _study_of(file)), None)
        if study_file is None:
            raise UsageError(f"--report {path}: none of the DICOM files names a study for the report to join")
        author = self.settings.author or getpass.getuser()
        return outgoing_report(path, study_file, author, datetime.now().astimezone())

    def _held(self, journal: SendJournal, path: Path) -> bool:
        if journal.holds_file(FileIdentity.of(path)):
            self.tally.already += 1
            return True
        return False

    def _batches(self, pending: list[Path], journal: SendJournal, progress: Progress,
                 report: Outgoing | None) -> Iterator[list[Outgoing]]:
        """Requests of at most --batch objects and --batch-mb bytes (one larger object goes alone),
        the report first so that the receiver sees it from the start."""
        batch: list[Outgoing] = [report] if report else []
        size = report.part.size if report else 0
        for path in pending:
            try:
                item = outgoing_file(path)
            except NotAnInstance:
                self.tally.directories += 1
                progress.drop(path.stat().st_size)
                continue
            except (InvalidDicomError, OSError, ValueError, EOFError) as error:
                self._failed(progress, str(path), f"not readable as DICOM: {error}")
                progress.drop(path.stat().st_size if path.exists() else 0)
                continue
            if journal.holds_instance(item.sop):
                self.tally.already += 1
                progress.drop(item.part.size)
                continue
            if batch and (len(batch) >= self.settings.batch_files or size + item.part.size > self.settings.batch_bytes):
                yield batch
                batch, size = [], 0
            batch.append(item)
            size += item.part.size
        if batch:
            yield batch

    # -- sending

    def _send_batch(self, url: str, headers: dict, batch: list[Outgoing], journal: SendJournal,
                    progress: Progress) -> None:
        response = self._store(url, headers, batch, progress)
        acknowledged = [item for item in batch if item.sop in response.stored]
        try:
            journal.record([item.acknowledgement() for item in acknowledged])
        except OSError as error:
            raise SendError(f"cannot write the journal {journal.path} ({error}): the destination holds the last "
                            f"{len(acknowledged)} instance(s) sent, but a later run sends them again") from None
        self.tally.acknowledged += len(acknowledged)
        self.tally.acknowledged_bytes += sum(item.part.size for item in acknowledged)
        progress.acknowledged(len(acknowledged), sum(item.part.size for item in acknowledged))
        for item, why in _failures(batch, response):
            self._failed(progress, item.label, why)

    def _store(self, url: str, headers: dict, batch: list[Outgoing], progress: Progress) -> StoreResponse:
        """One Store Instances request, tried again after a transport failure or a 5xx, waiting
        twice as long each time."""
        parts = [item.part for item in batch]
        wait = RETRY_FIRST_WAIT_SECONDS
        for attempt in range(self.settings.retries + 1):
            try:
                return store_instances(self.client, url, parts, headers, on_bytes=progress.streamed)
            except StoreRefused as refused:
                raise SendError(_refusal(refused)) from None
            except (httpx.TransportError, ServerUnavailable) as error:
                progress.retrying()
                problem = _transport_problem(error)
                if attempt == self.settings.retries:
                    raise SendError(
                        f"{self.settings.server}: {problem}, {attempt + 1} time(s). What was acknowledged is in "
                        f"{self.settings.journal_path}: run the same command again to send the rest") from None
                progress.say(f"oix send: {problem}; trying again in {wait:.0f} s")
                time.sleep(wait)
                wait = min(wait * 2, RETRY_LONGEST_WAIT_SECONDS)
            except OSError as error:  # a file removed or cut short while it was being sent
                raise SendError(f"{error}; nothing of that request was acknowledged: run the command again") from None
        raise AssertionError("unreachable")

    def _failed(self, progress: Progress, what: str, why: str) -> None:
        self.tally.failed.append((what, why))
        progress.say(f"oix send: failed: {what}: {why}")

    # -- after sending

    def _complete(self, org: str, journal: SendJournal) -> list[dict]:
        """Deliver the transfers this journal's studies went into that are still receiving
        (POST …/complete), rather than leave them to the server's idle time."""
        studies = journal.studies()
        completed = []
        for transfer in self._receiving(org):
            detail = self._get(f"/api/orgs/{org}/transfers/{transfer['id']}").json()
            if not studies & {study["study_uid"] for study in detail.get("studies", [])}:
                continue  # another send's transfer to the same destination
            response = self._request("POST", f"/api/orgs/{org}/transfers/{transfer['id']}/complete", json={})
            if response.status_code == 409:  # delivered meanwhile, by the idle time
                response = self._get(f"/api/orgs/{org}/transfers/{transfer['id']}")
            elif response.status_code != 200:
                raise SendError(f"transfer {transfer['id']} could not be completed: {response.status_code} "
                                f"{error_message(response)}")
            completed.append(response.json())
        return completed

    def _receiving(self, org: str) -> list[dict]:
        found: list[dict] = []
        for page in range(MAX_TRANSFER_PAGES):
            listing = self._get(f"/api/orgs/{org}/outbox", params={
                "state": "receiving", "counterpart": self.settings.destination,
                "limit": TRANSFER_PAGE, "offset": page * TRANSFER_PAGE}).json()
            found += listing["transfers"]
            if len(found) >= listing["total"] or not listing["transfers"]:
                break
        return found

    def _summary(self, elapsed: float, transfers: list[dict] | None, journal: SendJournal) -> None:
        tally = self.tally
        rate = tally.acknowledged_bytes / elapsed if elapsed > 0 else 0.0
        print(f"sent {tally.acknowledged} instance(s), {_size(tally.acknowledged_bytes)}, to "
              f"{self.settings.destination} in {elapsed:.1f} s ({_size(rate)}/s); skipped: {tally.already} "
              f"already acknowledged, {tally.not_dicom} not DICOM, {tally.directories} DICOMDIR; "
              f"failed: {len(tally.failed)}", file=self.out)
        for what, why in tally.failed:
            print(f"failed: {what}: {why}", file=self.out)
        if transfers == []:
            print("no transfer of these studies is still receiving", file=self.out)
        for transfer in transfers or []:
            instances = sum(study.get("instances", 0) for study in transfer.get("studies", []))
            print(f"transfer {transfer['id']}: {transfer['state']}, {transfer['urgency']}, "
                  f"{len(transfer.get('studies', []))} study(ies), {instances} instance(s)", file=self.out)
        if transfers is None and self.settings.complete and journal.acknowledged:
            print("transfers left receiving: the server delivers what arrived after its idle time, unless the rest "
                  "is sent first", file=self.out)
        if journal.path.exists():
            print(f"journal: {journal.path}", file=self.out)

    def _get(self, url: str, params: dict | None = None) -> httpx.Response:
        response = self._request("GET", url, params=params)
        if response.status_code != 200:
            raise SendError(f"GET {url}: {response.status_code} {error_message(response)}")
        return response

    def _request(self, method: str, url: str, **options) -> httpx.Response:
        """A JSON API request; a refused token or an unreachable server ends the send."""
        try:
            response = self.client.request(method, url, **options)
        except httpx.TransportError as error:
            raise SendError(f"{self.settings.server}: {_transport_problem(error)}") from None
        if response.status_code == 401:
            raise UsageError(f"the server refused the token: {error_message(response)}")
        return response


def _study_of(path: Path) -> str:
    """The Study Instance UID of a Part 10 file; empty for a DICOMDIR or a file that names none."""
    try:
        return outgoing_file(path).study
    except (NotAnInstance, InvalidDicomError, OSError, ValueError, EOFError):
        return ""


def _failures(batch: list[Outgoing], response: StoreResponse) -> list[tuple[Outgoing, str]]:
    """Each object of the batch not acknowledged, with the server's reason. A failure naming no
    instance (an object the server could not read) goes to the first such object not named."""
    by_uid = {item.sop: item for item in batch}
    named = [(by_uid[f.sop_instance_uid], f) for f in response.failed if f.sop_instance_uid in by_uid]
    anonymous = [f for f in response.failed if f.sop_instance_uid not in by_uid]
    accounted = {item.sop for item, _ in named} | set(response.stored)
    unnamed = [item for item in batch if item.sop not in accounted]
    found = [(item, failure.describe()) for item, failure in named]
    for index, item in enumerate(unnamed):
        failure: InstanceFailure | None = anonymous[index] if index < len(anonymous) else None
        found.append((item, failure.describe() if failure else "the server's response does not acknowledge it"))
    return found


def _urgency_path(urgency: str) -> str:
    return "" if urgency == "routine" else f"/{urgency}"


def _header_value(note: str) -> bytes:
    """The note as an HTTP header value: one line of Latin-1 (RFC 9110 5.5), as servers decode it."""
    if any(ord(char) < 32 and char != "\t" or ord(char) == 127 for char in note):
        raise UsageError("--note is one line, without control characters")
    try:
        return note.encode("latin-1")
    except UnicodeEncodeError:
        raise UsageError("--note must be Latin-1 text (an HTTP header carries it)") from None


def _transport_problem(error: Exception) -> str:
    if isinstance(error, ServerUnavailable):
        return str(error)
    if isinstance(error, httpx.TimeoutException):
        return "no answer in time"
    if isinstance(error, httpx.ConnectError):
        return f"cannot connect ({error})"
    return f"the connection failed ({type(error).__name__}: {error})" if str(error) else \
        f"the connection failed ({type(error).__name__})"


def _refusal(refused: StoreRefused) -> str:
    hint = {
        401: "the server refused the token",
        403: "the token may not send for this organisation (the sender or admin role is needed)",
        404: "not found",
        413: "the request is larger than the server takes: lower --batch or --batch-mb",
    }.get(refused.status, "refused")
    return f"{hint}: {refused.status} {refused.message}"


def command(args) -> int:
    """`oix send` from its command-line arguments."""
    try:
        settings = SendSettings.from_arguments(args)
    except UsageError as error:
        print(f"oix send: {error}", file=sys.stderr)
        return error.exit_code
    return send(settings)


def send(settings: SendSettings, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Run `oix send`; the exit status (0 all sent, 1 something failed, 2 nothing could start)."""
    headers = {"Authorization": f"Bearer {settings.token}", "User-Agent": "oix-send"}
    timeout = httpx.Timeout(REQUEST_TIMEOUT_SECONDS, connect=CONNECT_TIMEOUT_SECONDS)
    try:
        with httpx.Client(base_url=settings.server, headers=headers, timeout=timeout) as client:
            return Send(settings, client, out, err).run()
    except (SendError, JournalMismatch, ExchangeError) as error:  # ExchangeError: a report refused
        print(f"oix send: {error}", file=err)
        return error.exit_code if isinstance(error, SendError) else EXIT_USAGE
    except KeyboardInterrupt:
        print(f"\noix send: interrupted. What was acknowledged is in {settings.journal_path}: run the same command "
              "again to send the rest", file=err)
        return EXIT_INTERRUPTED
