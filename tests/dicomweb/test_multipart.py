"""multipart/related (RFC 2046 5.1, RFC 2387, PS3.18 8.6.1.2): the streaming reader STOW-RS
uses, the writer WADO-RS uses, and media type parameters, checked against the tests' own codec."""

from __future__ import annotations

import asyncio
import os

import pytest

from dicomweb.multipart import MediaType, MultipartError, encode_related, read_parts, split_unquoted
from tests.multipart_body import new_boundary, related_body, split_related


class Collected:
    def __init__(self):
        self.parts: list[tuple[dict[str, str], bytearray]] = []
        self.closed = 0

    def open_part(self, headers: dict[str, str]):
        body = bytearray()
        self.parts.append((headers, body))
        collected = self

        class Sink:
            async def write(self, chunk: bytes) -> None:
                body.extend(chunk)

            async def close(self) -> None:
                collected.closed += 1

        return Sink()


def read(body: bytes, boundary: str, chunk_size: int) -> Collected:
    async def chunks():
        for start in range(0, len(body), chunk_size):
            yield body[start:start + chunk_size]

    collected = Collected()
    count = asyncio.run(read_parts(chunks(), boundary, collected.open_part))
    assert count == len(collected.parts) == collected.closed
    return collected


PARTS = [b"", b"\r\n", b"--not-the-boundary\r\n", os.urandom(5000), b"ends with CR\r", b"x" * 70]


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 7, 64, 1 << 20])
def test_read_parts_splits_a_body_in_any_chunking(chunk_size):
    """RFC 2046 5.1.1: the delimiter is CRLF--boundary wherever network reads split it; part
    bodies may hold CRLF, dashes and the boundary's prefix."""
    boundary = new_boundary()
    collected = read(related_body(PARTS, boundary), boundary, chunk_size)
    assert [bytes(body) for _, body in collected.parts] == PARTS
    assert all(headers == {"content-type": "application/dicom"} for headers, _ in collected.parts)


def test_read_parts_ignores_preamble_and_epilogue_and_reads_headers():
    boundary = "b0undary"
    body = (b"preamble --b0undaryX is not a delimiter\r\n--b0undary\r\nContent-Type: application/dicom\r\n"
            b"Content-Location: one\r\n\r\nFIRST\r\n--b0undary\r\n\r\nSECOND\r\n--b0undary--\r\nepilogue")
    collected = read(body, boundary, 5)
    assert [bytes(b) for _, b in collected.parts] == [b"FIRST", b"SECOND"]
    assert collected.parts[0][0] == {"content-type": "application/dicom", "content-location": "one"}
    assert collected.parts[1][0] == {}


@pytest.mark.parametrize(("body", "message"), [
    (b"no delimiter anywhere", "no multipart boundary"),
    (b"--B\r\nContent-Type: application/dicom\r\n\r\nunterminated", "no closing boundary"),
    (b"--B\r\nContent-Type: application/dicom", "inside part headers"),
    (b"--B\r\nNo colon here\r\n\r\nx\r\n--B--", "malformed part header"),
    (b"--B", "ends inside a boundary line"),
])
def test_read_parts_refuses_malformed_bodies(body, message):
    with pytest.raises(MultipartError, match=message):
        read(body, "B", 3)


def test_read_parts_refuses_endless_part_headers():
    body = b"--B\r\n" + b"X-Long: " + b"a" * (20 * 1024)
    with pytest.raises(MultipartError, match="16 KiB"):
        read(body, "B", 1024)


def test_encode_related_is_read_back_by_an_independent_reader():
    """PS3.18 8.6.1.2: what WADO-RS writes is multipart/related any reader can split."""
    boundary = new_boundary()
    body = b"".join(encode_related(PARTS, "application/dicom", boundary))
    parts = split_related(f'multipart/related; type="application/dicom"; boundary={boundary}', body)
    assert [part.content for part in parts] == PARTS
    assert all(part.content_type == "application/dicom" for part in parts)


def test_encode_related_round_trips_through_read_parts():
    boundary = new_boundary()
    body = b"".join(encode_related(PARTS, "application/octet-stream", boundary))
    assert [bytes(b) for _, b in read(body, boundary, 11).parts] == PARTS


@pytest.mark.parametrize(("text", "media_type", "params"), [
    ('multipart/related; type="application/dicom"; boundary=abc',
     "multipart/related", {"type": "application/dicom", "boundary": "abc"}),
    ("Multipart/Related;Type=application/dicom;BOUNDARY=AbC", "multipart/related",
     {"type": "application/dicom", "boundary": "AbC"}),
    ('multipart/related; boundary="a;b=c"; start="<1@x>"', "multipart/related",
     {"boundary": "a;b=c", "start": "<1@x>"}),
    ("application/dicom+json", "application/dicom+json", {}),
    ("", "", {}),
])
def test_media_type_parameters_are_read_with_quotes_and_any_case(text, media_type, params):
    """RFC 9110 8.3.1: type and parameter names are case-insensitive; values may be quoted."""
    parsed = MediaType.parse(text)
    assert parsed.type == media_type and parsed.params == params


def test_split_unquoted_keeps_quoted_separators():
    assert split_unquoted('a, "b, c", d', ",") == ["a", ' "b, c"', " d"]


def test_read_parts_finds_every_delimiter_however_the_chunks_fall():
    """Part bodies made of the delimiter's own prefixes ("\\r", "\\r\\n-", "\\r\\n--boundar"…), cut
    into chunks of random sizes: every part comes back byte for byte (RFC 2046 5.1.1)."""
    import random

    chooser = random.Random(20261207)
    boundary = new_boundary()
    delimiter = ("\r\n--" + boundary).encode()
    pieces = [delimiter[:n] for n in range(1, len(delimiter))] + [b"x", b"\n", b"-", os.urandom(300)]
    for _ in range(200):
        parts = [b"".join(chooser.choice(pieces) for _ in range(chooser.randrange(0, 8)))
                 for _ in range(chooser.randrange(1, 5))]
        body = related_body(parts, boundary)
        cuts = sorted(chooser.sample(range(1, len(body)), min(len(body) - 1, chooser.randrange(0, 12))))
        chunks = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)])]

        async def stream():
            for chunk in chunks:
                yield chunk

        collected = Collected()
        assert asyncio.run(read_parts(stream(), boundary, collected.open_part)) == len(parts)
        assert [bytes(body) for _, body in collected.parts] == parts
