"""Acceptance: STOW-RS streams (DESIGN invariant 4). Storing a 1 GiB request of 128 MiB objects
grows the server's resident memory, its parser processes included, by less than one object,
with encryption at rest off and on. The request is generated as it is sent, so the test does
not hold it in memory either."""

from __future__ import annotations

import base64
import io
import os
import struct
import time

import httpx
import pydicom
import pytest

from bench.peak_rss import PeakRssSampler
from conformance.corpus import StudySpec, new_uid, synthetic_instance
from tests.dicomweb_requests import referenced_sop_instances
from tests.multipart_body import new_boundary, stow_content_type
from tests.servers import start_server, stop_server

OBJECTS = 8
ROWS = COLUMNS = 1024
FRAMES = 64  # 1024 x 1024 x 64 frames x 2 bytes = 128 MiB of Pixel Data per object
PIXEL_BYTES = ROWS * COLUMNS * FRAMES * 2
CHUNK = 1 << 20
GROWTH_LIMIT = PIXEL_BYTES  # less than one object's pixel data: no object is held in memory
SAMPLE_SECONDS = 0.05


def big_instance_header(study_uid: str, series_uid: str, number: int) -> tuple[str, bytes]:
    """A Part 10 object's bytes up to and including the Pixel Data element header; the
    PIXEL_BYTES of Pixel Data are streamed after it."""
    sop = new_uid()
    small = synthetic_instance(StudySpec(study_uid=study_uid, rows=1, columns=1), series_uid, 1, number, sop)
    dataset = pydicom.dcmread(io.BytesIO(small))
    dataset.Rows, dataset.Columns, dataset.NumberOfFrames = ROWS, COLUMNS, FRAMES
    del dataset.PixelData
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return sop, buffer.getvalue() + b"\xe0\x7f\x10\x00OW\x00\x00" + struct.pack("<L", PIXEL_BYTES)


def body(boundary: str, headers: list[bytes]):
    block = os.urandom(CHUNK)
    for number, header in enumerate(headers):
        yield f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + header
        for index in range(PIXEL_BYTES // CHUNK):
            yield struct.pack("<LL", number, index) + block[8:]  # every chunk, and object, differs
        yield b"\r\n"
    yield f"--{boundary}--\r\n".encode()


@pytest.fixture(params=["plaintext", "encrypted"])
def memory_server(request, tmp_path):
    env = {"OIX_ENCRYPTION_KEY": base64.b64encode(os.urandom(32)).decode()} if request.param == "encrypted" else {}
    server = start_server(tmp_path / "data", orgs=("memory",), env=env)
    try:
        yield server
    finally:
        stop_server(server)


@pytest.mark.timeout(180)
def test_stow_of_a_1_gib_request_grows_memory_by_less_than_one_object(memory_server):
    """DESIGN invariant 4 (bytes go through, not into memory) and PS3.18 10.5: 8 objects of
    128 MiB in one request are stored while the server's RSS grows by less than 128 MiB."""
    server = memory_server
    with PeakRssSampler(server.pid, interval=SAMPLE_SECONDS) as idle:
        time.sleep(0.5)
    baseline = idle.peak_bytes
    study_uid, series_uid = new_uid(), new_uid()
    made = [big_instance_header(study_uid, series_uid, number) for number in range(1, OBJECTS + 1)]
    boundary = new_boundary()
    started = time.monotonic()
    with PeakRssSampler(server.pid, interval=SAMPLE_SECONDS) as rss, httpx.Client(timeout=300) as http:
        response = http.post(f"{server.root()}/studies", content=body(boundary, [h for _, h in made]),
                             headers={"Content-Type": stow_content_type(boundary)})
    elapsed = time.monotonic() - started
    assert response.status_code == 200, response.text[:500]
    assert sorted(referenced_sop_instances(response.json())) == sorted(sop for sop, _ in made)
    assert rss.samples > 10
    growth = rss.peak_bytes - baseline
    print(f"RSS of server and parser processes storing 1 GiB: {baseline / 2**20:.0f} MiB idle, "
          f"{rss.peak_bytes / 2**20:.0f} MiB at peak")
    assert growth < GROWTH_LIMIT, (f"RSS grew {growth / 2**20:.0f} MiB (from {baseline / 2**20:.0f} MiB) "
                                   f"over {elapsed:.1f} s")
    with httpx.Client(timeout=60) as http:
        rows = http.get(f"{server.root()}/studies/{study_uid}/instances").json()
        assert len(rows) == OBJECTS
        total = sum(path.stat().st_size for path in (server.data_dir / "blobs").rglob("*") if path.is_file())
        assert total > OBJECTS * PIXEL_BYTES
        assert http.delete(f"{server.root()}/studies/{study_uid}").status_code == 200
