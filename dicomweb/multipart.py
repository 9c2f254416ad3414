"""multipart/related bodies (RFC 2387, PS3.18 8.6.1.2): a streaming reader for STOW-RS
requests and a writer for WADO-RS responses and for clients."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field

CRLF = b"\r\n"
MAX_PART_HEADER_BYTES = 16 * 1024


class MultipartError(ValueError):
    """The body is not well-formed multipart/related."""


@dataclass
class MediaType:
    """A parsed media type such as `multipart/related; type="application/dicom"`."""

    type: str
    params: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> MediaType:
        pieces = split_unquoted(text, ";")
        media = pieces[0].strip().lower()
        params: dict[str, str] = {}
        for piece in pieces[1:]:
            name, sep, value = piece.partition("=")
            if not sep:
                continue
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            params[name.strip().lower()] = value
        return cls(media, params)


def split_unquoted(text: str, sep: str) -> list[str]:
    """Split on `sep` outside double quotes (Accept headers, media type parameters)."""
    if '"' not in text:
        return text.split(sep)
    pieces, current, quoted = [], [], False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == sep and not quoted:
            pieces.append("".join(current))
            current = []
        else:
            current.append(char)
    pieces.append("".join(current))
    return pieces


class PartSink:
    """Receives one part's bytes; `open_part` makes one per part. Awaitable, so a sink may hand
    slow work (files) to a thread without holding up the event loop."""

    async def write(self, chunk: bytes) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    async def close(self) -> None:  # pragma: no cover - interface
        raise NotImplementedError


async def read_parts(
    chunks: AsyncIterator[bytes],
    boundary: str,
    open_part,
) -> int:
    """Stream a multipart body into sinks: `open_part(headers)` returns a PartSink for each
    part, which receives the part's bytes as they arrive. Returns the number of parts."""
    delimiter = b"--" + boundary.encode("latin-1")
    next_delimiter = CRLF + delimiter
    buffer = bytearray()
    stream = chunks.__aiter__()
    exhausted = False

    async def fill() -> bool:
        nonlocal exhausted
        if exhausted:
            return False
        try:
            buffer.extend(await stream.__anext__())
        except StopAsyncIteration:
            exhausted = True
            return False
        return True

    # Preamble: everything up to the first delimiter is ignored (RFC 2046 5.1.1).
    while True:
        start = buffer.find(delimiter)
        if start == 0 or (start > 0 and buffer[start - 2 : start] == CRLF):
            del buffer[: start + len(delimiter)]
            break
        if start > 0:  # the boundary text inside a line is not a delimiter: look past it
            del buffer[: start + 1]
            continue
        if len(buffer) > len(delimiter) + 2:  # keep a tail that may hold a split delimiter
            del buffer[: len(buffer) - len(delimiter) - 2]
        if not await fill():
            raise MultipartError(f"no multipart boundary {boundary!r} found in the body")

    count = 0
    while True:
        # After a delimiter: "--" closes the body, otherwise CRLF then the part headers.
        while len(buffer) < 2:
            if not await fill():
                raise MultipartError("the body ends inside a boundary line")
        if buffer[:2] == b"--":
            return count
        while (end := buffer.find(CRLF + CRLF)) < 0:
            if len(buffer) > MAX_PART_HEADER_BYTES:
                raise MultipartError("part headers longer than 16 KiB")
            if not await fill():
                raise MultipartError("the body ends inside part headers")
        headers = _parse_headers(bytes(buffer[:end]))
        del buffer[: end + 4]
        sink = open_part(headers)
        count += 1
        keep = len(next_delimiter) - 1
        try:
            while True:
                found = buffer.find(next_delimiter)
                if found >= 0:
                    await sink.write(_take(buffer, found, len(next_delimiter)))
                    break
                if len(buffer) > keep:
                    await sink.write(_take(buffer, len(buffer) - keep))
                if not await fill():
                    raise MultipartError("the body ends inside a part (no closing boundary)")
        finally:
            await sink.close()


def _take(buffer: bytearray, length: int, skip: int = 0) -> bytes:
    """The first `length` bytes of `buffer`, copied once, removed with `skip` bytes after them."""
    view = memoryview(buffer)
    try:
        taken = bytes(view[:length])
    finally:
        view.release()
    del buffer[: length + skip]
    return taken


def _parse_headers(block: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in block.split(CRLF):
        if not line.strip():
            continue
        name, sep, value = line.decode("latin-1").partition(":")
        if not sep:
            raise MultipartError(f"malformed part header line {line[:80]!r}")
        headers[name.strip().lower()] = value.strip()
    return headers


def new_boundary() -> str:
    return "oix-" + os.urandom(12).hex()


def related_content_type(part_type: str, boundary: str, transfer_syntax: str | None = None) -> str:
    value = f'multipart/related; type="{part_type}"; boundary={boundary}'
    if transfer_syntax:
        value += f"; transfer-syntax={transfer_syntax}"
    return value


def part_head(boundary: str, headers: dict[str, str], first: bool) -> bytes:
    lines = [("" if first else "\r\n") + f"--{boundary}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def closing(boundary: str) -> bytes:
    return f"\r\n--{boundary}--\r\n".encode("latin-1")


def encode_related(parts: Iterable[bytes], part_type: str, boundary: str) -> Iterator[bytes]:
    """A whole multipart/related body of `parts`, each of media type `part_type`."""
    for index, part in enumerate(parts):
        yield part_head(boundary, {"Content-Type": part_type}, first=index == 0)
        yield part
    yield closing(boundary)
