"""STOW-RS, Store Instances (PS3.18 10.5): stream a multipart/related body to disk part by
part, check and index each object, and answer with the Store Instances Response."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from oix.access import requester_of
from dicomweb.context import DicomWebLimits, PartChecker, context_of, require_organisation, service_root
from dicomweb.errors import BadRequest, FailureReason, PayloadTooLarge, UnsupportedMediaType
from dicomweb.multipart import MediaType, MultipartError, PartSink, read_parts
from dicomweb.checks import Failure, PartToCheck
from exchange.archive import Archive, Incoming
from storage.blobs import BlobWriter
from storage.instances import AddOutcome

DICOM = "application/dicom"


@dataclass
class ReceivedPart:
    writer: BlobWriter
    media_type: str


@dataclass
class StoreReport:
    """The outcome of one STOW-RS request, per object."""

    stored: list[tuple[str, str, str, str]] = field(default_factory=list)  # class, instance, study, series
    failed: list[Failure] = field(default_factory=list)

    @property
    def status(self) -> int:
        # PS3.18 10.5.3: 200 all stored, 202 some failed, 409 none stored.
        if not self.failed:
            return 200
        return 202 if self.stored else 409


class _Spool:
    """Receives the parts of one request into memory and enforces the size limits as bytes
    arrive. Whenever `MEMORY_BYTES` are held, they go to the parts' files in a worker thread:
    the event loop never waits on the filesystem (creating a file can wait for a journal
    commit), and a request's memory stays bounded however large it is."""

    MEMORY_BYTES = 4 << 20

    def __init__(self, archive: Archive, limits: DicomWebLimits):
        self.archive = archive
        self.limits = limits
        self.parts: list[ReceivedPart] = []
        self.total = 0
        self.held = 0

    def open_part(self, headers: dict[str, str]) -> _PartSink:
        writer = self.archive.blobs.new_writer()
        self.parts.append(ReceivedPart(writer, MediaType.parse(headers.get("content-type", DICOM)).type))
        return _PartSink(self, writer)

    def flush(self) -> None:
        for part in self.parts:
            if part.writer.pending_bytes:
                part.writer.flush()
        self.held = 0

    def discard(self) -> None:
        self.archive.discard([part.writer for part in self.parts])


class _PartSink(PartSink):
    """One part of a spooled request: its bytes go to the part's writer, within the limits."""

    def __init__(self, spool: _Spool, writer: BlobWriter):
        self.spool = spool
        self.writer = writer

    async def write(self, chunk: bytes) -> None:
        spool, writer = self.spool, self.writer
        spool.total += len(chunk)
        if spool.total > spool.limits.max_request_bytes:
            raise PayloadTooLarge(
                f"the request is larger than this server accepts ({spool.limits.max_request_bytes} bytes); "
                "send the study in several requests")
        if writer.size + len(chunk) > spool.limits.max_object_bytes:
            raise PayloadTooLarge(
                f"part {len(spool.parts)} is larger than this server accepts for one object "
                f"({spool.limits.max_object_bytes} bytes)")
        writer.buffer(chunk)
        spool.held += len(chunk)
        if spool.held >= spool.MEMORY_BYTES:
            await run_in_threadpool(spool.flush)

    async def close(self) -> None:
        pass  # closed, with the file's last bytes, by store_parts in a worker thread


# Keeps the objects that passed their checks, given the messages of those that did not:
# returns an outcome per object. `Archive.store` for an organisation's own service root.
Keeper = Callable[[list[Incoming], list[str]], list[AddOutcome]]


async def store_instances(request: Request) -> Response:
    """PS3.18 10.5: store into the organisation of the service root."""
    context = context_of(request)
    org = request.path_params["org"]
    await require_organisation(context, org)
    requester = requester_of(request)

    def keep(accepted: list[Incoming], refused: list[str]) -> list[AddOutcome]:
        return context.archive.store(org, accepted, requester, refused)

    return await receive_instances(request, keep, service_root(request, org))


async def receive_instances(request: Request, keep: Keeper, root: str) -> Response:
    """Read a STOW-RS request part by part to disk, check every object, hand those that pass to
    `keep`, and answer with the Store Instances Response (URLs under `root`)."""
    context = context_of(request)
    study_uid = request.path_params.get("study")
    boundary = _boundary(request.headers.get("content-type", ""))
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > context.limits.max_request_bytes:
        raise PayloadTooLarge(f"the request is larger than this server accepts ({context.limits.max_request_bytes} bytes)")
    spool = _Spool(context.archive, context.limits)
    try:
        count = await read_parts(request.stream(), boundary, spool.open_part)
    except MultipartError as exc:
        spool.discard()
        raise BadRequest(f"malformed multipart/related body: {exc}") from exc
    except BaseException:
        spool.discard()
        raise
    if count == 0:
        raise BadRequest("the multipart/related body holds no parts")
    try:
        report = await run_in_threadpool(store_parts, context.archive, context.check_parts, context.limits,
                                        study_uid, spool.parts, keep)
    except BaseException:
        spool.discard()  # what was kept is no longer in `incoming/`: only the rest goes
        raise
    return _response(root, study_uid, report)


def _boundary(content_type: str) -> str:
    media = MediaType.parse(content_type)
    if media.type != "multipart/related":
        raise UnsupportedMediaType(
            f"STOW-RS takes multipart/related; type=\"application/dicom\", not '{media.type or 'nothing'}'")
    part_type = media.params.get("type", DICOM).lower()
    if part_type != DICOM:
        raise UnsupportedMediaType(
            f"this server stores Part 10 objects (type=\"application/dicom\"), not type=\"{part_type}\"")
    boundary = media.params.get("boundary")
    if not boundary:
        raise BadRequest("the multipart/related Content-Type has no boundary parameter")
    return boundary


def store_parts(archive: Archive, checker: PartChecker, limits: DicomWebLimits, study_uid: str | None,
                parts: list[ReceivedPart], keep: Keeper) -> StoreReport:
    """Check each part against PS3.18 10.5 and keep the ones that pass."""
    for part in parts:
        part.writer.close()
    jobs = [PartToCheck(number, str(part.writer.path), part.media_type, part.writer.key, part.writer.size,
                        part.writer.keyring)
            for number, part in enumerate(parts, start=1)]
    report = StoreReport()
    accepted: list[Incoming] = []
    rejected: list[BlobWriter] = []
    for part, checked in zip(parts, checker(jobs, study_uid, limits.bulk_threshold)):
        if isinstance(checked, Failure):
            report.failed.append(checked)
            rejected.append(part.writer)
        else:
            accepted.append(Incoming(part.writer, checked))
    archive.discard(rejected)
    outcomes = keep(accepted, [failure.message for failure in report.failed])
    for item, outcome in zip(accepted, outcomes):
        record = item.record
        if outcome is AddOutcome.CONFLICT:
            report.failed.append(Failure(
                record.sop_class_uid, record.sop_instance_uid, FailureReason.DUPLICATE_SOP_INSTANCE,
                f"SOP Instance {record.sop_instance_uid} is already held with different content; "
                "the stored object is kept. DELETE it first to replace it."))
        else:
            report.stored.append((record.sop_class_uid, record.sop_instance_uid, record.study_uid, record.series_uid))
    return report


def _response(root: str, study_uid: str | None, report: StoreReport) -> Response:
    body: dict = {}
    studies = {study for _, _, study, _ in report.stored}
    retrieve_study = study_uid or (next(iter(studies)) if len(studies) == 1 else None)
    if retrieve_study:
        body["00081190"] = {"vr": "UR", "Value": [f"{root}/studies/{retrieve_study}"]}
    if report.failed:
        body["00081198"] = {"vr": "SQ", "Value": [
            {
                "00081150": _uid(failure.sop_class_uid),
                "00081155": _uid(failure.sop_instance_uid),
                "00081197": {"vr": "US", "Value": [int(failure.reason)]},
            }
            for failure in report.failed
        ]}
    if report.stored:
        body["00081199"] = {"vr": "SQ", "Value": [
            {
                "00081150": _uid(sop_class),
                "00081155": _uid(sop_instance),
                "00081190": {"vr": "UR", "Value": [
                    f"{root}/studies/{study}/series/{series}/instances/{sop_instance}"]},
            }
            for sop_class, sop_instance, study, series in report.stored
        ]}
    headers = {}
    if report.failed:
        # PS3.18 8.3.5.1 allows a Warning header (RFC 7234, code 299) for human-readable detail.
        headers["Warning"] = ", ".join(
            f'299 oix "{failure.message.replace(chr(34), chr(39))}"' for failure in report.failed[:20])
    return Response(orjson.dumps(body), status_code=report.status, media_type="application/dicom+json",
                    headers=headers)


def _uid(value: str) -> dict:
    return {"vr": "UI", "Value": [value]} if value else {"vr": "UI"}


ROUTES = [
    Route("/studies", store_instances, methods=["POST"]),
    Route("/studies/{study}", store_instances, methods=["POST"]),
]
