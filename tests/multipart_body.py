"""multipart/related as the tests write and read it (RFC 2046 5.1, PS3.18 8.6.1.2), written
here rather than borrowed from `dicomweb.multipart` so the server's codec is checked by a
second, independent one."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

DICOM = "application/dicom"


def new_boundary() -> str:
    return f"test-{secrets.token_hex(8)}"


def stow_content_type(boundary: str, part_type: str = DICOM, quoted: bool = True) -> str:
    type_value = f'"{part_type}"' if quoted else part_type
    return f"multipart/related; type={type_value}; boundary={boundary}"


def related_body(parts: Iterable[bytes], boundary: str, part_type: str | None = DICOM) -> bytes:
    return b"".join(iter_related_body(parts, boundary, part_type))


def iter_related_body(parts: Iterable[bytes], boundary: str, part_type: str | None = DICOM) -> Iterator[bytes]:
    """The body, part by part; `part_type` None leaves the parts without a Content-Type."""
    delimiter = f"--{boundary}".encode("latin-1")
    for part in parts:
        yield delimiter + b"\r\n"
        if part_type is not None:
            yield f"Content-Type: {part_type}\r\n".encode("latin-1")
        yield b"\r\n"
        yield part
        yield b"\r\n"
    yield delimiter + b"--\r\n"


@dataclass
class Part:
    headers: dict[str, str]
    content: bytes

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")


def boundary_of(content_type: str) -> str:
    match = re.search(r'boundary="?([^";]+)"?', content_type, re.IGNORECASE)
    if not match:
        raise AssertionError(f"no boundary in Content-Type {content_type!r}")
    return match.group(1)


def split_related(content_type: str, body: bytes) -> list[Part]:
    """The parts of a multipart/related response, checked for a closing delimiter."""
    assert content_type.lower().startswith("multipart/related"), content_type
    delimiter = b"--" + boundary_of(content_type).encode("latin-1")
    assert body.startswith(delimiter), body[:80]
    close = body.rfind(b"\r\n" + delimiter + b"--")
    assert close >= 0, "the response has no closing delimiter"
    pieces = body[len(delimiter):close].split(b"\r\n" + delimiter)
    parts = []
    for piece in pieces:
        assert piece.startswith(b"\r\n"), piece[:40]
        head, separator, content = piece[2:].partition(b"\r\n\r\n")
        assert separator, "a part without a blank line after its headers"
        headers = {}
        for line in head.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        parts.append(Part(headers, content))
    return parts
