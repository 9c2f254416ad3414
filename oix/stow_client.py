"""A streaming STOW-RS client (PS3.18 10.5): a multipart/related request body read from Part 10
files in chunks, so memory does not grow with the files, and the Store Instances Response read
back per instance."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson

from dicomweb.multipart import closing, new_boundary, part_head, related_content_type

DICOM = "application/dicom"
CHUNK_BYTES = 1024 * 1024

# PS3.18 Table 10.5.3-1, PS3.4 Annex B.2.3: the attributes of the Store Instances Response.
FAILED_SOP_SEQUENCE = "00081198"
REFERENCED_SOP_SEQUENCE = "00081199"
REFERENCED_SOP_INSTANCE_UID = "00081155"
FAILURE_REASON = "00081197"

# RFC 7234 5.5: warn-code warn-agent "warn-text"; PS3.18 8.3.5.1 lets a server explain failures so.
WARNING_VALUE = re.compile(r'\d{3} \S+ "((?:[^"\\]|\\.)*)"')


class Part10:
    """One object to store: its size, and its bytes in chunks."""

    size: int

    def chunks(self) -> Iterator[bytes]:  # pragma: no cover - interface
        raise NotImplementedError


@dataclass(frozen=True)
class Part10File(Part10):
    """A file on disk, read as it is sent; `size` is what it held when it was found."""

    path: Path
    size: int

    def chunks(self) -> Iterator[bytes]:
        left = self.size
        with open(self.path, "rb") as source:
            while left > 0:
                chunk = source.read(min(CHUNK_BYTES, left))
                if not chunk:
                    raise FileChanged(self.path, self.size)
                left -= len(chunk)
                yield chunk


@dataclass(frozen=True)
class Part10Bytes(Part10):
    """An object made in memory (a report)."""

    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)

    def chunks(self) -> Iterator[bytes]:
        yield self.data


class FileChanged(OSError):
    def __init__(self, path: Path, size: int):
        super().__init__(f"{path} became shorter than the {size} bytes it held when it was found")


@dataclass(frozen=True)
class InstanceFailure:
    """A FailedSOPSequence item: the instance (None when the server could not read one), the
    Failure Reason (PS3.4 Annex B.2.3), and the server's words for it, if it gave any."""

    sop_instance_uid: str | None
    reason: int | None
    message: str

    def describe(self) -> str:
        code = f"failure reason 0x{self.reason:04X}" if self.reason is not None else "failed"
        return f"{code}: {self.message}" if self.message else code


@dataclass(frozen=True)
class StoreResponse:
    """The Store Instances Response: 200 all stored, 202 some failed, 409 none stored (PS3.18 10.5.3)."""

    status: int
    stored: frozenset[str]
    failed: tuple[InstanceFailure, ...]


class StoreRefused(Exception):
    """The server refused the request as a whole (4xx other than a Store Instances Response):
    sending it again would be refused again."""

    def __init__(self, status: int, message: str):
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class ServerUnavailable(Exception):
    """A 5xx: the request may succeed later."""

    def __init__(self, status: int, message: str):
        super().__init__(f"the server answered {status}: {message}")
        self.status = status


def related_body(parts: Sequence[Part10], boundary: str,
                 on_bytes: Callable[[int], None] | None = None) -> tuple[int, Iterator[bytes]]:
    """The multipart/related body of `parts` (PS3.18 8.6.1.2) and its exact length, so that it
    goes with a Content-Length rather than chunked."""
    heads = [part_head(boundary, {"Content-Type": DICOM}, first=index == 0) for index in range(len(parts))]
    end = closing(boundary)
    length = sum(len(head) + part.size for head, part in zip(heads, parts)) + len(end)

    def body() -> Iterator[bytes]:
        for head, part in zip(heads, parts):
            yield head
            for chunk in part.chunks():
                yield chunk
                if on_bytes:
                    on_bytes(len(chunk))
        yield end

    return length, body()


def store_instances(client: httpx.Client, url: str, parts: Sequence[Part10], headers: dict[str, str | bytes],
                    on_bytes: Callable[[int], None] | None = None) -> StoreResponse:
    """POST `parts` as one Store Instances request to `url` (a `…/studies` resource). Raises
    StoreRefused for a refusal of the whole request, ServerUnavailable for a 5xx, and httpx's
    TransportError when the connection fails."""
    boundary = new_boundary()
    length, body = related_body(parts, boundary, on_bytes)
    response = client.post(url, content=body, headers={
        **headers, "Content-Type": related_content_type(DICOM, boundary), "Content-Length": str(length),
        "Accept": "application/dicom+json"})
    if response.status_code >= 500:
        raise ServerUnavailable(response.status_code, error_message(response))
    document = _json(response)
    if response.status_code in (200, 202, 409) and isinstance(document, dict) \
            and (FAILED_SOP_SEQUENCE in document or REFERENCED_SOP_SEQUENCE in document):
        return _store_response(response.status_code, document, warnings(response.headers.get_list("warning")))
    raise StoreRefused(response.status_code, error_message(response))


def _store_response(status: int, document: dict, messages: list[str]) -> StoreResponse:
    stored = frozenset(uid for item in _items(document, REFERENCED_SOP_SEQUENCE)
                       if (uid := _value(item, REFERENCED_SOP_INSTANCE_UID)))
    failed = []
    # The server's Warning values follow the order of the FailedSOPSequence (OIX sends the first 20).
    for index, item in enumerate(_items(document, FAILED_SOP_SEQUENCE)):
        reason = _value(item, FAILURE_REASON)
        failed.append(InstanceFailure(_value(item, REFERENCED_SOP_INSTANCE_UID),
                                      reason if isinstance(reason, int) else None,
                                      messages[index] if index < len(messages) else ""))
    return StoreResponse(status, stored, tuple(failed))


def warnings(values: list[str]) -> list[str]:
    """The warn-text of each Warning header value, in order."""
    return [match.group(1).replace('\\"', '"') for value in values for match in WARNING_VALUE.finditer(value)]


def error_message(response: httpx.Response) -> str:
    """What the server said was wrong: OIX's {"error": …}, or the start of whatever else it sent."""
    document = _json(response)
    if isinstance(document, dict) and isinstance(document.get("error"), str):
        return document["error"]
    return response.text.strip()[:300] or response.reason_phrase or "no detail"


def _json(response: httpx.Response):
    try:
        return orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return None


def _items(document: dict, tag: str) -> list[dict]:
    element = document.get(tag)
    values = element.get("Value", []) if isinstance(element, dict) else []
    return [item for item in values if isinstance(item, dict)]


def _value(item: dict, tag: str):
    element = item.get(tag)
    values = element.get("Value") if isinstance(element, dict) else None
    return values[0] if isinstance(values, list) and values else None
