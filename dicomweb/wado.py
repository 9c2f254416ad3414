"""WADO-RS (PS3.18 10.4): retrieve instances, metadata, frames and bulk data of what an
organisation holds; and DELETE of a study, series or instance. Bytes stream from the blob
store; stored bytes go out unchanged unless the client asked for another transfer syntax."""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from oix.access import requester_of
from dicomweb.context import CachedMetadata, context_of, service_root
from dicomweb.errors import BadRequest, NotAcceptable, NotFound
from dicomweb.multipart import closing, new_boundary, part_head, related_content_type
from dicomweb.negotiation import (
    ANY_TRANSFER_SYNTAX,
    EXPLICIT_VR_LITTLE_ENDIAN,
    FRAME_MEDIA_TYPE_SYNTAXES,
    NATIVE_FRAME_MEDIA_TYPES,
    Choice,
    accepted,
    DICOM_JSON,
    accepts_dicom_json,
    transfer_syntaxes,
)
from dicomweb.part10 import SWAP_SIZES, inflate_dataset, swap_bytes
from dicomweb.records import MARKED_INSTANCE_URI, below_service_root, with_service_root
from dicomweb.transcode import (
    TARGET_SYNTAXES,
    CannotEncode,
    CannotTranscode,
    can_encode,
    decoding,
    transcode,
    transcoded_frames,
)
from exchange.archive import patient_id_of
from storage.instances import Held

DICOM = "application/dicom"
OCTET_STREAM = "application/octet-stream"
CHUNK = 1 << 20


def _what(request: Request) -> str:
    """What a frames or bulk data retrieve asks for, as its audit event says."""
    params = request.path_params
    return f"frames {params['frames']}" if "frames" in params else f"bulk data {params.get('path', '')}"


def _scope(request: Request) -> tuple[str, str, str | None, str | None]:
    params = request.path_params
    return params["org"], params["study"], params.get("series"), params.get("instance")


# -- instances ----------------------------------------------------------------------------------

async def retrieve_instances(request: Request) -> Response:
    """PS3.18 10.4.1.1.1-3: a study, series or instance as multipart/related application/dicom,
    each instance in the best transfer syntax the client accepts that it can be sent in."""
    archive = context_of(request).archive
    org, study, series, instance = _scope(request)
    held = await run_in_threadpool(archive.held, org, requester_of(request), "instances", study, series, instance)
    wanted = transfer_syntaxes(accepted(request, DICOM), (DICOM, "*/*", "application/*"))
    _check_servable(wanted, held)
    boundary = new_boundary()
    batches = _batches(held, wanted)
    try:
        # The first batch is read before answering, so a stored object that cannot be written in
        # any accepted syntax is a 406, not a response cut short after its 200.
        first = await run_in_threadpool(_read_batch, archive, batches[0], wanted, boundary, held[0])
    except CannotTranscode as exc:
        raise NotAcceptable(_instead(exc, held[0].transfer_syntax)) from exc

    async def body() -> AsyncIterator[bytes]:
        for index, batch in enumerate(batches):
            # One thread hop reads a batch of small stored objects whole, or transcodes one object;
            # a large stored object streams in chunks.
            if index == 0:
                pieces = first
            else:
                pieces = await run_in_threadpool(_read_batch, archive, batch, wanted, boundary, held[0])
            for piece in pieces:
                yield piece
            large = batch[-1]
            if large.size > BATCH_BYTES and _as_stored(large, wanted):
                handle = await run_in_threadpool(archive.open_blob, large.blob_key)
                try:
                    while chunk := await run_in_threadpool(handle.read, CHUNK):
                        yield chunk
                finally:
                    handle.close()
        yield closing(boundary)

    content_type = related_content_type(DICOM, boundary)
    return StreamingResponse(body(), media_type=content_type)


BATCH_BYTES = 8 << 20


def _plan(item: Held, wanted: list[str]) -> tuple[list[str], bool]:
    """The syntaxes to transcode `item` into, best first, and whether its stored bytes are
    acceptable after those: the client's ranking up to the first choice that is as stored."""
    targets = []
    for syntax in wanted:
        if syntax in (ANY_TRANSFER_SYNTAX, item.transfer_syntax):
            return targets, True
        if can_encode(syntax):
            targets.append(syntax)
    return targets, False


def _as_stored(item: Held, wanted: list[str]) -> bool:
    return _plan(item, wanted) == ([], True)


def _check_servable(wanted: list[str], held: list[Held]) -> None:
    """PS3.18 8.7.5: 406 before anything is read when no accepted syntax is possible for an instance."""
    for item in held:
        if _plan(item, wanted) == ([], False):
            asked = ", ".join(wanted) or "no application/dicom representation"
            raise NotAcceptable(
                f"instance {item.sop_instance_uid} (stored as {item.transfer_syntax}) cannot be sent in any "
                f"accepted transfer syntax ({asked}); this server sends multipart/related; "
                f'type="application/dicom" with transfer-syntax=* (as stored) or one of: {", ".join(TARGET_SYNTAXES)}')


def _batches(held: list[Held], wanted: list[str]) -> list[list[Held]]:
    """Consecutive stored objects grouped up to BATCH_BYTES; an object larger than that, or one
    to transcode, is a batch of its own."""
    batches: list[list[Held]] = [[]]
    total = 0
    for item in held:
        alone = item.size > BATCH_BYTES or not _as_stored(item, wanted)
        if batches[-1] and (alone or total + item.size > BATCH_BYTES):
            batches.append([])
            total = 0
        batches[-1].append(item)
        total += item.size
        if alone:
            batches.append([])
            total = 0
    return [batch for batch in batches if batch]


def _read_batch(archive, batch: list[Held], wanted: list[str], boundary: str, first: Held) -> list[bytes]:
    """Part heads and bodies of a batch; a large stored object's body is left for the caller to stream."""
    pieces = []
    for item in batch:
        syntax, data = item.transfer_syntax, None
        targets, stored_ok = _plan(item, wanted)
        if targets:
            try:
                syntax, data = _transcoded(archive, item, targets)
            except CannotTranscode:
                if not stored_ok:
                    raise
        if data is None and (item.size <= BATCH_BYTES or targets):
            with archive.open_blob(item.blob_key) as handle:
                data = handle.read()
        pieces.append(part_head(boundary, {"Content-Type": f"{DICOM}; transfer-syntax={syntax}"},
                                first=item is first))
        if data is not None:
            pieces.append(data)
    return pieces


def _transcoded(archive, item: Held, targets: list[str]) -> tuple[str, bytes]:
    # Past the first batch the headers are gone: a failure here ends the stream rather than
    # send a corrupt part, and the client sees the body cut short.
    with archive.open_blob(item.blob_key) as handle:
        try:
            return transcode(handle, targets)
        except CannotTranscode as exc:
            raise type(exc)(f"instance {item.sop_instance_uid}: {exc}") from exc


def _instead(exc: CannotTranscode, stored: str) -> str:
    """A 406 message: why, and what can be served instead (PS3.18 8.7.5)."""
    instead = f"transfer-syntax=* (as stored, {stored})"
    if isinstance(exc, CannotEncode):  # it decodes, so the uncompressed form can be sent
        instead += f" or transfer-syntax={EXPLICIT_VR_LITTLE_ENDIAN} (Explicit VR Little Endian)"
    return f"{exc}; this object can be sent with {instead}"


# -- metadata -----------------------------------------------------------------------------------

async def retrieve_metadata(request: Request) -> Response:
    """PS3.18 10.4.1.1.4: the DICOM JSON of every instance in scope, prepared at store time.

    A viewer asks for the same study's metadata again and again: a response is kept and served
    again while the index's data version is unchanged (nothing committed since, by any worker),
    audited each time as the first was."""
    context = context_of(request)
    archive = context.archive
    org, study, series, instance = _scope(request)
    if not accepts_dicom_json(request):
        raise NotAcceptable("metadata is served as application/dicom+json only")
    requester = requester_of(request)
    root = service_root(request, org)
    key = (org, study, series, instance, root)
    version = archive.index_version()  # before the read: a commit during it makes the entry stale
    cached = context.metadata.get(key) if version is not None else None
    if cached is not None and cached.version == version:
        archive.metadata_served(org, requester, study, series, instance, cached.count, cached.patient_id)
        return Response(cached.body, media_type=DICOM_JSON)
    found = await run_in_threadpool(archive.dicom_json, org, requester, study, series, instance)
    body = b"[" + b",".join(payload for _, _, _, payload in found) + b"]"
    if MARKED_INSTANCE_URI in body:  # prepared by a version that marked each instance's own URL
        body = b"[" + b",".join(below_service_root(payload, study_uid, series_uid, sop_uid)
                                for study_uid, series_uid, sop_uid, payload in found) + b"]"
    body = with_service_root(body, root.encode())
    if version is not None:
        context.metadata.put(key, CachedMetadata(version, body, len(found), patient_id_of(found[0][3])), len(body))
    return Response(body, media_type=DICOM_JSON)


# -- frames ---------------------------------------------------------------------------------------

async def retrieve_frames(request: Request) -> Response:
    """PS3.18 10.4.1.1.6: frames of one instance, each a part of its own, in the best
    representation the client accepts that this server can produce."""
    archive = context_of(request).archive
    org, study, series, instance = _scope(request)
    frame_list = request.path_params["frames"]
    frame_numbers(frame_list, None)  # a malformed list is refused before anything is read
    held = (await run_in_threadpool(archive.held, org, requester_of(request), _what(request), study, series,
                                    instance, True))[0]
    layout = orjson.loads(held.layout)
    numbers = frame_numbers(frame_list, held)
    representations = _frame_representations(accepted(request, OCTET_STREAM), held.transfer_syntax,
                                              layout["encapsulated"])
    if not representations:
        raise NotAcceptable(_frames_served(held.transfer_syntax))
    refusals = []
    for part_type, syntax in representations:
        try:
            bodies = await decoding(_read_frames, archive, held, layout, numbers, syntax)
        except CannotTranscode as exc:
            refusals.append(f"{part_type} ({syntax}): {exc}")
            continue
        boundary = new_boundary()
        chunks = []
        for index, data in enumerate(bodies):
            chunks.append(part_head(boundary, {"Content-Type": f"{part_type}; transfer-syntax={syntax}"},
                                    first=index == 0))
            chunks.append(data)
        chunks.append(closing(boundary))
        return Response(b"".join(chunks), media_type=related_content_type(part_type, boundary))
    raise NotAcceptable("; ".join(refusals) + "; " + _frames_served(held.transfer_syntax))


def frame_numbers(text: str, held: Held | None) -> list[int]:
    """The 1-based frame numbers of a frame list (PS3.18 10.4.1.1.6), checked against the
    instance `held` if given: each must exist, and a list may not name more frames than the
    instance has (repeats would multiply the work of one request)."""
    try:
        numbers = [int(piece) for piece in text.split(",") if piece.strip()]
    except ValueError:
        raise BadRequest(f"frame list '{text}' is not comma-separated frame numbers (1-based)") from None
    if not numbers or any(n < 1 for n in numbers):
        raise BadRequest(f"frame list '{text}' must name frames numbered from 1")
    if held is None:
        return numbers
    count = len(orjson.loads(held.layout)["frames"])
    if not count:
        raise NotFound(f"instance {held.sop_instance_uid} has no pixel data frames")
    missing = [n for n in numbers if n > count]
    if missing:
        raise NotFound(f"instance {held.sop_instance_uid} has {count} frame(s); frame {missing[0]} does not exist")
    if len(numbers) > count:
        raise BadRequest(f"frame list '{text}' names {len(numbers)} frames; instance {held.sop_instance_uid} has "
                         f"{count}: name each frame once")
    return numbers


def _frame_representations(choices: list[Choice], stored: str, encapsulated: bool) -> list[tuple[str, str]]:
    """(part media type, transfer syntax) the frames can be sent in, the client's best first.
    PS3.18 Table 8.7.3-4: application/octet-stream is uncompressed, Explicit VR Little Endian;
    with transfer-syntax=* it is the frame as stored. Table 8.7.3-5: a compressed media type
    with no transfer syntax is the stored one where it has that media type, else the default."""
    found: list[tuple[str, str]] = []
    for choice in choices:
        wanted = choice.transfer_syntax
        if choice.part_type in (OCTET_STREAM, "*/*", "application/*"):
            if wanted in (ANY_TRANSFER_SYNTAX, stored) and encapsulated:
                found.append((OCTET_STREAM, stored))
            elif wanted in (None, ANY_TRANSFER_SYNTAX, stored, EXPLICIT_VR_LITTLE_ENDIAN):
                found.append((OCTET_STREAM, EXPLICIT_VR_LITTLE_ENDIAN))
        elif choice.part_type in FRAME_MEDIA_TYPE_SYNTAXES:
            syntaxes = FRAME_MEDIA_TYPE_SYNTAXES[choice.part_type]
            if wanted in (None, ANY_TRANSFER_SYNTAX):
                wanted = stored if stored in syntaxes else syntaxes[0]
            if wanted in syntaxes and (wanted == stored or can_encode(wanted)):
                found.append((choice.part_type, wanted))
    return list(dict.fromkeys(found))


def _frames_served(stored: str) -> str:
    """What the frames of an instance stored in `stored` can be asked for in (PS3.18 8.7.5)."""
    offers = [f'type="{OCTET_STREAM}" with transfer-syntax={EXPLICIT_VR_LITTLE_ENDIAN} (uncompressed) or *']
    if stored in NATIVE_FRAME_MEDIA_TYPES:
        offers.append(f'type="{NATIVE_FRAME_MEDIA_TYPES[stored]}" (as stored, {stored})')
    for media, syntaxes in FRAME_MEDIA_TYPE_SYNTAXES.items():
        encoded = [syntax for syntax in syntaxes if syntax != stored and can_encode(syntax)]
        if encoded:
            offers.append(f'type="{media}" with transfer-syntax={" or ".join(encoded)} (transcoded)')
    return "frames of this instance are served as multipart/related; " + "; ".join(offers)


def _read_frames(archive, held: Held, layout: dict, numbers: list[int], syntax: str) -> list[bytes]:
    """The frames' bytes in `syntax`: as stored where that is the stored syntax (a compressed
    frame's fragments, PS3.5 A.4), native little endian pixels for Explicit VR Little Endian,
    else transcoded."""
    frames = layout["frames"]
    stored = held.transfer_syntax == syntax and layout["encapsulated"]
    native = syntax == EXPLICIT_VR_LITTLE_ENDIAN and not layout["encapsulated"] and not layout["deflated"]
    if stored or native:
        bodies = [b"".join(archive.read_blob(held.blob_key, offset, length) for offset, length in frames[n - 1])
                  for n in numbers]
        if native and layout["frame_big_endian"]:
            bodies = [swap_bytes(data, layout.get("pixel_swap_size", 2)) for data in bodies]
        return bodies
    with archive.open_blob(held.blob_key) as handle:
        return transcoded_frames(handle, [n - 1 for n in numbers], syntax)


# -- bulk data ------------------------------------------------------------------------------------

async def retrieve_bulkdata(request: Request) -> Response:
    """PS3.18 10.4.1.1.5: a bulk value referenced by a BulkDataURI in the metadata."""
    archive = context_of(request).archive
    org, study, series, instance = _scope(request)
    path = request.path_params["path"].strip("/").upper()
    held = (await run_in_threadpool(archive.held, org, requester_of(request), _what(request), study, series,
                                    instance, True))[0]
    layout = orjson.loads(held.layout)
    location = layout["bulk"].get(path)
    if location is None:
        raise NotFound(f"instance {instance} has no bulk data at '{path}'")
    offset, length, vr, big_endian = location
    if layout["encapsulated"] and path == "7FE00010":
        raise NotAcceptable("this bulk value is compressed; retrieve its frames instead")
    if layout["deflated"]:
        data = await run_in_threadpool(_inflated_range, archive, held.blob_key, layout["dataset_offset"], offset,
                                       length)
    else:
        data = await run_in_threadpool(archive.read_blob, held.blob_key, offset, length)
    size = layout.get("pixel_swap_size", 2) if path == "7FE00010" else SWAP_SIZES.get(vr)
    if big_endian and size:
        data = swap_bytes(data, size)
    boundary = new_boundary()
    body = part_head(boundary, {"Content-Type": OCTET_STREAM}, first=True) + data + closing(boundary)
    return Response(body, media_type=related_content_type(OCTET_STREAM, boundary))


def _inflated_range(archive, key: str, dataset_offset: int, offset: int, length: int) -> bytes:
    """A value of a deflated object, whose offsets are into the inflated dataset."""
    with archive.open_blob(key) as handle:
        return inflate_dataset(handle.read(), dataset_offset)[offset:offset + length]


# -- delete ---------------------------------------------------------------------------------------

async def delete_held(request: Request) -> Response:
    """Remove a study, series or instance from this organisation's holdings (not in PS3.18;
    the same resource paths as Orthanc and dcm4chee). Blobs go when nothing references them."""
    archive = context_of(request).archive
    org, study, series, instance = _scope(request)
    removed = await run_in_threadpool(archive.delete, org, requester_of(request), study, series, instance)
    return Response(orjson.dumps({"deleted_instances": removed}), media_type="application/json")


STUDY = "/studies/{study}"
SERIES = STUDY + "/series/{series}"
INSTANCE = SERIES + "/instances/{instance}"

ROUTES = [
    Route(STUDY, retrieve_instances, methods=["GET"]),
    Route(SERIES, retrieve_instances, methods=["GET"]),
    Route(INSTANCE, retrieve_instances, methods=["GET"]),
    Route(STUDY + "/metadata", retrieve_metadata, methods=["GET"]),
    Route(SERIES + "/metadata", retrieve_metadata, methods=["GET"]),
    Route(INSTANCE + "/metadata", retrieve_metadata, methods=["GET"]),
    Route(INSTANCE + "/frames/{frames}", retrieve_frames, methods=["GET"]),
    Route(INSTANCE + "/bulkdata/{path:path}", retrieve_bulkdata, methods=["GET"]),
    Route(STUDY, delete_held, methods=["DELETE"]),
    Route(SERIES, delete_held, methods=["DELETE"]),
    Route(INSTANCE, delete_held, methods=["DELETE"]),
]
