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
from dicomweb.context import context_of, service_root
from dicomweb.errors import BadRequest, NotAcceptable, NotFound
from dicomweb.multipart import closing, new_boundary, part_head, related_content_type
from dicomweb.negotiation import (
    ANY_TRANSFER_SYNTAX,
    EXPLICIT_VR_LITTLE_ENDIAN,
    NATIVE_FRAME_MEDIA_TYPES,
    Choice,
    accepted,
    DICOM_JSON,
    accepts_dicom_json,
)
from dicomweb.part10 import SWAP_SIZES, inflate_dataset, swap_bytes
from dicomweb.records import INSTANCE_URL_MARK
from dicomweb.transcode import CannotTranscode, can_produce, decode_frame, transcode
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
    """PS3.18 10.4.1.1.1-3: a study, series or instance as multipart/related application/dicom."""
    archive = context_of(request).archive
    org, study, series, instance = _scope(request)
    held = await run_in_threadpool(archive.held, org, requester_of(request), "instances", study, series, instance)
    target = _instance_syntax(accepted(request, DICOM), held)
    boundary = new_boundary()
    batches = _batches(held)
    try:
        # The first batch is read before answering, so a stored object that cannot be decoded
        # into the requested syntax is a 406, not a response cut short after its 200.
        first = await run_in_threadpool(_read_batch, archive, batches[0], target, boundary, held[0])
    except CannotTranscode as exc:
        raise NotAcceptable(f"{exc}; ask for transfer-syntax=* to receive the objects as stored") from exc

    async def body() -> AsyncIterator[bytes]:
        for index, batch in enumerate(batches):
            # One thread hop reads a batch of small objects whole; large ones stream in chunks.
            if index == 0:
                pieces = first
            else:
                pieces = await run_in_threadpool(_read_batch, archive, batch, target, boundary, held[0])
            for piece in pieces:
                yield piece
            large = batch[-1]
            if large.size > BATCH_BYTES and _syntax(large, target) == large.transfer_syntax:
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


def _batches(held: list[Held]) -> list[list[Held]]:
    """Consecutive instances grouped up to BATCH_BYTES; an object larger than that ends its batch."""
    batches: list[list[Held]] = [[]]
    total = 0
    for item in held:
        if batches[-1] and total + item.size > BATCH_BYTES:
            batches.append([])
            total = 0
        batches[-1].append(item)
        total += item.size
        if item.size > BATCH_BYTES:
            batches.append([])
            total = 0
    return [batch for batch in batches if batch]


def _syntax(item: Held, target: str) -> str:
    return item.transfer_syntax if target == ANY_TRANSFER_SYNTAX else target


def _read_batch(archive, batch: list[Held], target: str, boundary: str, first: Held) -> list[bytes]:
    """Part heads and bodies of a batch; a large object's body is left for the caller to stream."""
    pieces = []
    for item in batch:
        syntax = _syntax(item, target)
        pieces.append(part_head(boundary, {"Content-Type": f"{DICOM}; transfer-syntax={syntax}"},
                                first=item is first))
        if syntax != item.transfer_syntax:
            pieces.append(_transcoded(archive, item, syntax))
        elif item.size <= BATCH_BYTES:
            with archive.open_blob(item.blob_key) as handle:
                pieces.append(handle.read())
    return pieces


def _instance_syntax(choices: list[Choice], held: list[Held]) -> str:
    """The transfer syntax to send, from the best choice every instance can be served in."""
    for choice in choices:
        if choice.part_type not in (DICOM, "*/*", "application/*"):
            continue
        # PS3.18 8.7.3.5.2: with no transfer-syntax parameter, the default is Explicit VR LE.
        wanted = choice.transfer_syntax or EXPLICIT_VR_LITTLE_ENDIAN
        if wanted == ANY_TRANSFER_SYNTAX or all(can_produce(h.transfer_syntax, wanted) for h in held):
            return wanted
    raise NotAcceptable(
        "none of the accepted representations can be served: this server sends multipart/related; "
        "type=\"application/dicom\" with transfer-syntax=* (as stored), the stored syntax, "
        f"{EXPLICIT_VR_LITTLE_ENDIAN} or 1.2.840.10008.1.2")


def _transcoded(archive, item: Held, syntax: str) -> bytes:
    # Past the first batch the headers are gone: a failure here ends the stream rather than
    # send a corrupt part, and the client sees the body cut short.
    with archive.open_blob(item.blob_key) as handle:
        try:
            return transcode(handle, syntax)
        except CannotTranscode as exc:
            raise CannotTranscode(f"instance {item.sop_instance_uid}: {exc}") from exc


# -- metadata -----------------------------------------------------------------------------------

async def retrieve_metadata(request: Request) -> Response:
    """PS3.18 10.4.1.1.4: the DICOM JSON of every instance in scope, prepared at store time."""
    archive = context_of(request).archive
    org, study, series, instance = _scope(request)
    if not accepts_dicom_json(request):
        raise NotAcceptable("metadata is served as application/dicom+json only")
    found = await run_in_threadpool(archive.dicom_json, org, requester_of(request), study, series, instance)
    root = service_root(request, org).encode()
    mark = INSTANCE_URL_MARK.encode()

    def pieces():
        yield b"["
        for index, (study_uid, series_uid, sop_uid, payload) in enumerate(found):
            url = b"%s/studies/%s/series/%s/instances/%s" % (root, study_uid.encode(), series_uid.encode(),
                                                             sop_uid.encode())
            yield (b"," if index else b"") + payload.replace(mark, url)
        yield b"]"

    return Response(b"".join(pieces()), media_type=DICOM_JSON)


# -- frames ---------------------------------------------------------------------------------------

async def retrieve_frames(request: Request) -> Response:
    """PS3.18 10.4.1.1.6: frames of one instance, each a part of its own."""
    archive = context_of(request).archive
    org, study, series, instance = _scope(request)
    numbers = _frame_numbers(request.path_params["frames"])
    held = (await run_in_threadpool(archive.held, org, requester_of(request), _what(request), study, series,
                                    instance, True))[0]
    layout = orjson.loads(held.layout)
    frames = layout["frames"]
    if not frames:
        raise NotFound(f"instance {instance} has no pixel data frames")
    missing = [n for n in numbers if n > len(frames)]
    if missing:
        raise NotFound(f"instance {instance} has {len(frames)} frame(s); frame {missing[0]} does not exist")
    part_type, syntax = _frame_representation(accepted(request, OCTET_STREAM), held, layout)
    boundary = new_boundary()

    def read(number: int) -> bytes:
        if syntax != held.transfer_syntax and layout["encapsulated"]:
            with archive.open_blob(held.blob_key) as handle:
                return decode_frame(handle, number - 1)
        if layout["deflated"]:
            with archive.open_blob(held.blob_key) as handle:
                return decode_frame(handle, number - 1, deflated=True)
        data = b"".join(archive.read_blob(held.blob_key, offset, length) for offset, length in frames[number - 1])
        if layout["frame_big_endian"]:
            data = swap_bytes(data, layout.get("pixel_swap_size", 2))
        return data

    try:
        bodies = [await run_in_threadpool(read, number) for number in numbers]
    except CannotTranscode as exc:
        raise NotAcceptable(f"{exc}; ask for transfer-syntax=* to receive the frames as stored") from exc
    label = syntax if layout["encapsulated"] else EXPLICIT_VR_LITTLE_ENDIAN
    chunks = []
    for index, data in enumerate(bodies):
        chunks.append(part_head(boundary, {"Content-Type": f"{part_type}; transfer-syntax={label}"},
                                first=index == 0))
        chunks.append(data)
    chunks.append(closing(boundary))
    return Response(b"".join(chunks), media_type=related_content_type(part_type, boundary))


def _frame_numbers(text: str) -> list[int]:
    try:
        numbers = [int(piece) for piece in text.split(",") if piece.strip()]
    except ValueError:
        raise BadRequest(f"frame list '{text}' is not comma-separated frame numbers (1-based)") from None
    if not numbers or any(n < 1 for n in numbers):
        raise BadRequest(f"frame list '{text}' must name frames numbered from 1")
    return numbers


def _frame_representation(choices: list[Choice], held: Held, layout: dict) -> tuple[str, str]:
    stored = held.transfer_syntax
    native_type = NATIVE_FRAME_MEDIA_TYPES.get(stored)
    for choice in choices:
        if choice.part_type in (OCTET_STREAM, "*/*", "application/*"):
            wanted = choice.transfer_syntax or EXPLICIT_VR_LITTLE_ENDIAN
            if wanted == ANY_TRANSFER_SYNTAX or wanted == stored:
                return OCTET_STREAM, stored if layout["encapsulated"] else EXPLICIT_VR_LITTLE_ENDIAN
            if wanted == EXPLICIT_VR_LITTLE_ENDIAN:
                return OCTET_STREAM, EXPLICIT_VR_LITTLE_ENDIAN
        elif native_type and choice.part_type == native_type and choice.transfer_syntax in (None, "*", stored):
            return native_type, stored
    raise NotAcceptable(
        f"frames of this instance (stored as {stored}) are served as application/octet-stream "
        f"(transfer-syntax=* or {EXPLICIT_VR_LITTLE_ENDIAN})" + (f" or {native_type}" if native_type else ""))


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
