"""WADO-RS rendered and thumbnail resources (PS3.18 10.4.1.1.7-8, 8.3.5): images of what an
organisation holds, for display. Each retrieve is scoped and audited as any other; rendering
(dicomweb.rendering) runs in a worker thread, and recent images are kept in a bounded cache."""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from dicomweb.context import context_of, service_root
from dicomweb.errors import BadRequest, NotAcceptable
from dicomweb.lru import LruCache
from dicomweb.multipart import closing, new_boundary, part_head, related_content_type
from dicomweb.negotiation import accepted
from dicomweb.rendering import (
    DEFAULT_MEDIA_TYPE,
    DEFAULT_QUALITY,
    MEDIA_TYPES,
    CannotRender,
    Region,
    RegionOutsideImage,
    Rendering,
    Viewport,
    Window,
    WindowFunction,
    render,
)
from dicomweb.transcode import decoding
from dicomweb.wado import INSTANCE, SERIES, STUDY, frame_numbers
from exchange.archive import Archive
from oix.access import requester_of
from storage.instances import Held

THUMBNAIL_SIZE = 128  # pixels, longest side, when a thumbnail request names no viewport
CACHE_BYTES = 64 << 20

# PS3.18 8.3.5.1.4 names the functions in lower case; PS3.3 C.11.2.1.3 spells them in capitals.
WINDOW_FUNCTIONS = {
    "linear": WindowFunction.LINEAR,
    "linear-exact": WindowFunction.LINEAR_EXACT,
    "sigmoid": WindowFunction.SIGMOID,
}


# Recently rendered images by (blob key, frame, rendering). Blobs never change, so an entry never
# goes stale, and a retrieve is scoped and audited before the cache is looked at.
CACHE: LruCache[bytes] = LruCache(CACHE_BYTES)


async def retrieve_rendered(request: Request) -> Response:
    """PS3.18 10.4.1.1.7: a study, series, instance or frames rendered as image/jpeg, image/png or
    image/gif, with the viewport, window and quality parameters of PS3.18 8.3.5."""
    rendering = Rendering(_media_type(request), _quality(request), _window(request), _viewport(request))
    archive = context_of(request).archive
    images = await _images(request, "rendered")
    if "instance" in request.path_params and len(images) == 1:  # an instance, or one frame: one image
        return await _single(archive, *images[0], rendering)
    return await _related(request, archive, images, rendering)


async def retrieve_thumbnail(request: Request) -> Response:
    """PS3.18 10.4.1.1.8: a small image representative of a study, series, instance or frame
    (by default at most THUMBNAIL_SIZE pixels on its longest side; `viewport` sets the size)."""
    viewport = _viewport(request) or Viewport(THUMBNAIL_SIZE, THUMBNAIL_SIZE, enlarge=False)
    rendering = Rendering(_media_type(request), viewport=viewport)
    images = await _images(request, "thumbnail")
    # A frame list's thumbnail is its first frame's.
    item, number = images[0] if "instance" in request.path_params else (representative(images), None)
    return await _single(context_of(request).archive, item, number, rendering)


def representative(images: list[tuple[Held, int | None]]) -> Held:
    """The image a study or series thumbnail shows: the middle image (by Instance Number) of the
    series with the most images, so a localizer does not stand for a CT series."""
    series: dict[str, list[Held]] = {}
    for item, _ in images:
        series.setdefault(item.series_uid, []).append(item)
    largest = max(series.values(), key=len)  # the first such series, in the index's order, on a tie
    return largest[(len(largest) - 1) // 2]


# -- the retrieve -------------------------------------------------------------------------------

async def _images(request: Request, what: str) -> list[tuple[Held, int | None]]:
    """The images a request is about, in the index's order: each instance with the frame number
    named, or None for its first frame. The read is scoped to the organisation and audited as a
    retrieve (PS3.15 A.5.3.7); objects without pixel data are left out, and if that leaves
    nothing the answer is 406."""
    params = request.path_params
    frames = params.get("frames")
    if frames is not None:
        frame_numbers(frames, None)  # a malformed list is refused before anything is read
    held = await run_in_threadpool(context_of(request).archive.held, params["org"], requester_of(request),
                                   f"{what} frames {frames}" if frames else what, params["study"],
                                   params.get("series"), params.get("instance"), True)
    if frames is not None:
        return [(held[0], number) for number in frame_numbers(frames, held[0])]
    images = [(item, None) for item in held if _frame_count(item)]
    if images:
        return images
    if "instance" in params:
        raise NotAcceptable(f"instance {held[0].sop_instance_uid} has no pixel data, so no rendered "
                            "representation or thumbnail; retrieve it as application/dicom, or its metadata")
    raise NotAcceptable("nothing here has pixel data, so no rendered representation or thumbnail (reports and "
                        "documents have none); retrieve them as application/dicom, or their metadata")


def _frame_count(item: Held) -> int:
    return len(orjson.loads(item.layout)["frames"])


async def _single(archive: Archive, item: Held, number: int | None, rendering: Rendering) -> Response:
    return Response(await _rendered(archive, item, number, rendering), media_type=rendering.media_type)


async def _related(request: Request, archive: Archive, images: list[tuple[Held, int | None]],
                   rendering: Rendering) -> Response:
    """PS3.18 8.6: several rendered images (instances' first frames, or the frames numbered) as
    multipart/related, each part with the Content-Location of its own rendered resource. An
    image that cannot be rendered is left out, its location missing from the parts; if none
    can, the answer is 406. Parts stream, one rendering in memory at a time."""
    root = service_root(request, request.path_params["org"])
    pending = iter(images)
    first, failure = None, None
    for item, number in pending:
        try:
            first = (item, number, await _rendered(archive, item, number, rendering))
            break
        except NotAcceptable as exc:
            failure = failure or exc
    if first is None:
        raise failure
    boundary = new_boundary()

    async def body() -> AsyncIterator[bytes]:
        yield _part_head(boundary, root, first[0], first[1], rendering, True) + first[2]
        for item, number in pending:
            try:
                data = await _rendered(archive, item, number, rendering)
            except (NotAcceptable, BadRequest):  # past the 200: an image that cannot be shown is left out
                continue
            yield _part_head(boundary, root, item, number, rendering, False) + data
        yield closing(boundary)

    return StreamingResponse(body(), media_type=related_content_type(rendering.media_type, boundary))


def _part_head(boundary: str, root: str, item: Held, number: int | None, rendering: Rendering,
               first: bool) -> bytes:
    location = root + INSTANCE.format(study=item.study_uid, series=item.series_uid, instance=item.sop_instance_uid)
    if number is not None:
        location += f"/frames/{number}"
    return part_head(boundary, {"Content-Type": rendering.media_type, "Content-Location": f"{location}/rendered"},
                     first=first)


async def _rendered(archive: Archive, item: Held, number: int | None, rendering: Rendering) -> bytes:
    """Frame `number` (the first if None) of `item`, rendered, from the cache if it is there."""
    index = (number or 1) - 1
    key = (item.blob_key, index, rendering)
    body = CACHE.get(key)
    if body is None:
        deflated = orjson.loads(item.layout)["deflated"]
        try:
            body = await decoding(_render_blob, archive, item.blob_key, index, rendering, deflated)
        except CannotRender as exc:
            raise NotAcceptable(f"instance {item.sop_instance_uid} cannot be rendered: {exc}; retrieve it as "
                                "application/dicom with transfer-syntax=* instead") from exc
        except RegionOutsideImage as exc:
            raise BadRequest(str(exc)) from exc
        CACHE.put(key, body, len(body))
    return body


def _render_blob(archive: Archive, key: str, index: int, rendering: Rendering, deflated: bool) -> bytes:
    with archive.open_blob(key) as handle:
        return render(handle, index, rendering, deflated)


# -- query parameters (PS3.18 8.3.3.1, 8.3.5.1) ---------------------------------------------------

def _media_type(request: Request) -> str:
    """The best acceptable rendered media type, from the `accept` query parameter or the Accept
    header (q-values ranked); */* and image/* mean the default, image/jpeg."""
    for choice in accepted(request, DEFAULT_MEDIA_TYPE):
        if choice.part_type in MEDIA_TYPES:
            return choice.part_type
        if choice.part_type == "image/*":
            return DEFAULT_MEDIA_TYPE
    raise NotAcceptable("rendered images are served as image/jpeg (the default), image/png or image/gif: "
                        "name one in the Accept header or the accept query parameter")


def _quality(request: Request) -> int:
    text = request.query_params.get("quality")
    if text is None:
        return DEFAULT_QUALITY
    try:
        quality = int(text)
    except ValueError:
        quality = 0
    if not 1 <= quality <= 100:
        raise BadRequest(f"quality '{text}' must be a whole number from 1 to 100 (PS3.18 8.3.5.1.2)")
    return quality


def _window(request: Request) -> Window | None:
    """PS3.18 8.3.5.1.4: window=center,width,function; the function may be left out (linear)."""
    text = request.query_params.get("window")
    if text is None:
        return None
    usage = (f"window '{text}' must be center,width,function with a function of linear, linear-exact "
             "or sigmoid (PS3.18 8.3.5.1.4), e.g. window=40,400,linear")
    pieces = [piece.strip() for piece in text.split(",")]
    if len(pieces) not in (2, 3):
        raise BadRequest(usage)
    function = WINDOW_FUNCTIONS.get((pieces[2] if len(pieces) == 3 else "linear").lower().replace("_", "-"))
    try:
        center, width = float(pieces[0]), float(pieces[1])
    except ValueError:
        raise BadRequest(usage) from None
    if function is None:
        raise BadRequest(usage)
    try:
        return Window(center, width, function)
    except ValueError as exc:
        raise BadRequest(f"window '{text}': {exc}") from None


def _viewport(request: Request) -> Viewport | None:
    """PS3.18 8.3.5.1.3: viewport=vw,vh[,sx,sy,sw,sh], sizes in pixels; sx, sy, sw, sh may be
    left empty (0, 0, and the rest of the image), and a negative sw or sh flips the region."""
    text = request.query_params.get("viewport")
    if text is None:
        return None
    usage = (f"viewport '{text}' must be vw,vh or vw,vh,sx,sy,sw,sh in pixels (PS3.18 8.3.5.1.3), "
             "e.g. viewport=256,256")
    pieces = [piece.strip() for piece in text.split(",")]
    if len(pieces) not in (2, 6):
        raise BadRequest(usage)
    try:
        numbers = [round(float(piece)) if piece else None for piece in pieces]
    except (ValueError, OverflowError):
        raise BadRequest(usage) from None
    width, height, *source = numbers
    if width is None or height is None:
        raise BadRequest(usage)
    region = None
    if source:
        x, y, region_width, region_height = source
        if (x or 0) < 0 or (y or 0) < 0 or region_width == 0 or region_height == 0:
            raise BadRequest(f"{usage}; sx and sy are not negative and sw and sh are not 0")
        region = Region(x or 0, y or 0, region_width, region_height)
    try:
        return Viewport(width, height, region)
    except ValueError as exc:
        raise BadRequest(f"viewport '{text}': {exc}") from None


ROUTES = [
    Route(STUDY + "/rendered", retrieve_rendered, methods=["GET"]),
    Route(SERIES + "/rendered", retrieve_rendered, methods=["GET"]),
    Route(INSTANCE + "/rendered", retrieve_rendered, methods=["GET"]),
    Route(INSTANCE + "/frames/{frames}/rendered", retrieve_rendered, methods=["GET"]),
    Route(STUDY + "/thumbnail", retrieve_thumbnail, methods=["GET"]),
    Route(SERIES + "/thumbnail", retrieve_thumbnail, methods=["GET"]),
    Route(INSTANCE + "/thumbnail", retrieve_thumbnail, methods=["GET"]),
    Route(INSTANCE + "/frames/{frames}/thumbnail", retrieve_thumbnail, methods=["GET"]),
]
