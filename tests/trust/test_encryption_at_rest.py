"""Acceptance (issue "Trust", transport and storage security): with encryption at rest on, no
file in the data directory (blobs, uploads in flight, the SQLite index and its WAL) holds a
PatientName or a run of pixel bytes, while STOW, QIDO, WADO-RS retrieve and frames still give
byte-exact data; `oix keys rotate` moves every blob to a new key under a running server; and a
data directory refuses to open with the wrong keys."""

from __future__ import annotations

import io
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pydicom
import pytest
from pydicom.encaps import generate_frames
from pydicom.pixels.utils import get_expected_length

from conformance.corpus import Patient, StudySpec, new_uid, synthetic_instance
from storage.encryption import header_of
from tests.dicomweb.test_wado import little_endian_pixel_data
from tests.dicomweb_requests import ANY_SYNTAX, instance_url, retrieve, stow
from tests.multipart_body import new_boundary, split_related, stow_content_type
from tests.real_files import by_name, layers
from tests.servers import OixServer, ServerStartError, oix_command, run_cli, start_server, stop_server

# Real files of every kind the frames path reads: native single- and multi-frame, big endian,
# RLE, JPEG 2000, JPEG baseline (6 MiB: parsed through a FileView, not read whole), deflated.
REAL_FILES = ("pydicom/CT_small.dcm", "pydicom-data/emri_small.dcm", "pydicom-data/emri_small_big_endian.dcm",
              "pydicom-data/emri_small_jpeg_2k_lossless.dcm", "pydicom/SC_rgb_rle_2frame.dcm",
              "pydicom-data/color3d_jpeg_baseline.dcm", "pydicom/image_dfl.dcm")
CANARY_NAME = "Canary^Encrypted^AtRest"
PIXEL_RUN = 48  # bytes: a run this long of real pixel data does not turn up by chance
OCTET_ANY = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'


@dataclass
class Stored:
    """One object as uploaded: where it is held and its exact bytes."""

    name: str
    org: str
    data: bytes

    @property
    def dataset(self) -> pydicom.Dataset:
        return pydicom.dcmread(io.BytesIO(self.data))

    def url(self, server: OixServer) -> str:
        ds = self.dataset
        return instance_url(server.root(self.org), ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)


def large_synthetic_instance(patient_name: str = CANARY_NAME) -> bytes:
    """An 8 MiB native multi-frame object (over the 4 MiB a parser reads whole) with a
    PatientName that appears nowhere else."""
    spec = StudySpec(patient=Patient(name=patient_name), rows=512, columns=512, frames=16)
    return synthetic_instance(spec, new_uid(), 1, 1)


def keys_env(data_dir: Path, key_file: Path) -> dict[str, str]:
    env = dict(os.environ, OIX_DATA_DIR=str(data_dir), OIX_ENCRYPTION_KEY_FILE=str(key_file))
    env.pop("OIX_DATABASE_URL", None)
    env.pop("OIX_ENCRYPTION_KEY", None)
    return env


def oix(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([*oix_command(), *args], env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def encrypted(tmp_path_factory) -> Iterator[tuple[OixServer, Path, list[Stored]]]:
    """A server with encryption at rest on (a key file made by `oix keys generate`), holding the
    real files and the large synthetic object, one organisation per layer of shared UIDs."""
    root = tmp_path_factory.mktemp("encrypted")
    key_file, data_dir = root / "keys", root / "data"
    env = keys_env(data_dir, key_file)
    run_cli(["keys", "generate", "--file", str(key_file)], env)
    assert key_file.stat().st_mode & 0o777 == 0o600
    files = [by_name(name) for name in REAL_FILES]
    grouped = layers(tuple(files))
    orgs = tuple(f"enc{number}" for number in range(len(grouped)))
    server = start_server(data_dir, orgs=orgs, env={"OIX_ENCRYPTION_KEY_FILE": str(key_file)})
    try:
        stored = [Stored(item.name, org, item.data) for org, layer in zip(orgs, grouped) for item in layer]
        stored.append(Stored("synthetic large", orgs[0], large_synthetic_instance()))
        with httpx.Client(timeout=120) as http:
            for org in orgs:
                response = stow(http, server.root(org), [item.data for item in stored if item.org == org])
                assert response.status_code == 200, (response.status_code, response.text[:500])
        yield server, key_file, stored
    finally:
        stop_server(server)


def every_file(data_dir: Path) -> list[Path]:
    return [path for path in data_dir.rglob("*") if path.is_file()]


def pixel_runs(item: Stored) -> list[bytes]:
    """A few runs of the object's pixel bytes that are not padding (not one repeated byte)."""
    pixels = item.dataset.PixelData
    runs = []
    for start in range(0, len(pixels) - PIXEL_RUN, max(PIXEL_RUN, len(pixels) // 5)):
        run = pixels[start:start + PIXEL_RUN]
        if len(set(run)) > 8:
            runs.append(run)
    return runs


def test_no_stored_file_holds_a_patient_name_or_pixel_bytes(encrypted):
    """Acceptance: blobs, incoming/, index.sqlite3 and its -wal/-shm hold no plaintext."""
    server, _key_file, stored = encrypted
    secrets = {CANARY_NAME.encode()}
    for item in stored:
        name = str(item.dataset.get("PatientName", "")).encode()
        if len(name) >= 6:
            secrets.add(name)
        secrets.update(pixel_runs(item))
    files = every_file(server.data_dir)
    names = {path.name for path in files}
    assert {"index.sqlite3", "index.sqlite3-wal"} <= names  # the index is there, and its log
    assert len(list((server.data_dir / "blobs").rglob("*/*/*"))) >= len(stored)
    for path in files:
        content = path.read_bytes()
        leaked = [secret[:24] for secret in secrets if secret in content]
        assert not leaked, f"{path.relative_to(server.data_dir)} holds plaintext {leaked}"


def test_qido_still_matches_on_patient_name(encrypted):
    """The encrypted index answers queries as before (PS3.18 10.6)."""
    server, _key_file, stored = encrypted
    response = httpx.get(f"{server.root(stored[-1].org)}/studies", params={"PatientName": "Canary*"})
    assert response.status_code == 200
    assert [study["00100010"]["Value"][0]["Alphabetic"] for study in response.json()] == [CANARY_NAME]


def test_an_upload_in_flight_is_encrypted_in_incoming(encrypted):
    """Nothing readable on disk includes what is being received: the spool file of a STOW
    still streaming in holds neither its PatientName nor its pixel bytes."""
    server, _key_file, stored = encrypted
    data = large_synthetic_instance("Inflight^Canary")
    secrets = [b"Inflight^Canary", *pixel_runs(Stored("in flight", stored[0].org, data))[:2]]
    half, resume = threading.Event(), threading.Event()
    boundary = new_boundary()

    def body():
        yield f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        for start in range(0, len(data), 1 << 20):
            if start >= len(data) // 2 and not half.is_set():
                half.set()
                assert resume.wait(timeout=60)
            yield data[start:start + (1 << 20)]
        yield f"\r\n--{boundary}--\r\n".encode()

    result = {}

    def send():
        with httpx.Client(timeout=120) as http:
            result["status"] = http.post(f"{server.root(stored[0].org)}/studies", content=body(),
                                         headers={"Content-Type": stow_content_type(boundary)}).status_code

    sender = threading.Thread(target=send)
    sender.start()
    try:
        assert half.wait(timeout=60)
        deadline = time.monotonic() + 30
        while not any(p.stat().st_size > len(data) // 3 for p in (server.data_dir / "incoming").iterdir()):
            assert time.monotonic() < deadline, "the upload never reached incoming/"
            time.sleep(0.05)
        for path in (server.data_dir / "incoming").iterdir():
            content = path.read_bytes()
            assert not any(secret in content for secret in secrets), path.name
    finally:
        resume.set()
        sender.join(timeout=120)
    assert result["status"] == 200


def assert_retrieves_byte_exact(server: OixServer, stored: list[Stored]) -> None:
    with httpx.Client(timeout=60) as http:
        for item in stored:
            syntax = item.dataset.file_meta.TransferSyntaxUID
            for accept in (ANY_SYNTAX, f'multipart/related; type="application/dicom"; transfer-syntax={syntax}'):
                [part] = retrieve(http, item.url(server), accept)
                assert part.content == item.data, (item.name, accept)


def test_wado_retrieves_every_instance_byte_exact(encrypted):
    """PS3.18 10.4.1.1.3 and 8.7.3.5.2: as stored (transfer-syntax=* and the stored syntax)."""
    server, _key_file, stored = encrypted
    assert_retrieves_byte_exact(server, stored)


def expected_frames(item: Stored) -> list[bytes]:
    """The frames as read from the uploaded file, unencrypted: fragments of compressed data
    (PS3.5 A.4), slices of native Pixel Data (little endian, PS3.18 8.7.3.5.2)."""
    dataset = item.dataset
    count = int(dataset.get("NumberOfFrames") or 1)
    if dataset.file_meta.TransferSyntaxUID.is_encapsulated:
        return list(generate_frames(dataset.PixelData, number_of_frames=count))
    pixels = little_endian_pixel_data(dataset)
    size = get_expected_length(dataset, unit="bytes") // count
    return [pixels[i * size:(i + 1) * size] for i in range(count)]


def frames(http: httpx.Client, url: str, numbers: list[int]) -> list[bytes]:
    response = http.get(f"{url}/frames/{','.join(map(str, numbers))}", headers={"Accept": OCTET_ANY})
    assert response.status_code == 200, (url, response.status_code, response.text[:200])
    return [part.content for part in split_related(response.headers["content-type"], response.content)]


def assert_frames_exact(server: OixServer, stored: list[Stored]) -> None:
    with httpx.Client(timeout=60) as http:
        for item in stored:
            expected = expected_frames(item)
            numbers = sorted({1, len(expected) // 2 + 1, len(expected)})
            assert frames(http, item.url(server), numbers) == [expected[n - 1] for n in numbers], item.name


def test_frames_equal_those_of_the_unencrypted_file(encrypted):
    """PS3.18 10.4.1.1.6: frames (single and multi-frame, native and compressed) read by
    decrypting only their segments equal the frames of the uploaded file."""
    server, _key_file, stored = encrypted
    assert_frames_exact(server, stored)


def test_frames_decoded_from_an_encrypted_blob_equal_pydicom(encrypted):
    """PS3.18 8.7.3.5.2: a compressed frame asked for uncompressed is decoded from the
    decrypting reader just as from a plain file."""
    server, _key_file, stored = encrypted
    [item] = [s for s in stored if s.name == "pydicom-data/emri_small_jpeg_2k_lossless.dcm"]
    response = httpx.get(f"{item.url(server)}/frames/2", headers={"Accept": "multipart/related; "
                                                                           "type=\"application/octet-stream\""})
    assert response.status_code == 200, response.text
    [part] = split_related(response.headers["content-type"], response.content)
    assert part.content == item.dataset.pixel_array[1].astype("<u2").tobytes()


def test_rotation_under_a_running_server_moves_every_blob_to_the_new_key(encrypted):
    """`oix keys generate` then `oix keys rotate`, the server running throughout: every blob
    ends under the new key id and the server still serves every byte and frame exactly."""
    server, key_file, stored = encrypted
    env = keys_env(server.data_dir, key_file)
    blobs = list((server.data_dir / "blobs").rglob("*/*/*"))
    before = {header_of(path).key_id for path in blobs}
    generated = oix("keys", "generate", "--file", str(key_file), env=env)
    assert generated.returncode == 0, generated.stderr
    new_id = key_file.read_text().split()[-2]
    assert before and new_id not in before

    rotated = oix("keys", "rotate", env=env)
    assert rotated.returncode == 0, rotated.stderr
    assert f"blobs re-encrypted under {new_id}: {len(blobs)}" in rotated.stdout
    assert {header_of(path).key_id for path in (server.data_dir / "blobs").rglob("*/*/*")} == {new_id}
    assert_retrieves_byte_exact(server, stored)
    assert_frames_exact(server, stored)

    again = oix("keys", "rotate", env=env)
    assert f"re-encrypted under {new_id}: 0" in again.stdout and f"already under it: {len(blobs)}" in again.stdout


# -- refusing the wrong keys ----------------------------------------------------------------------

def test_a_server_refuses_an_encrypted_data_dir_without_its_key(tmp_path):
    key_file = tmp_path / "keys"
    env = keys_env(tmp_path / "data", key_file)
    assert oix("keys", "generate", "--file", str(key_file), env=env).returncode == 0
    assert oix("org", "add", "ENC", "Encrypted", env=env).returncode == 0
    with pytest.raises(ServerStartError, match="is encrypted at rest"):
        start_server(tmp_path / "data")


def test_a_data_dir_refuses_a_keyring_that_lacks_one_of_its_keys(tmp_path):
    key_file = tmp_path / "keys"
    env = keys_env(tmp_path / "data", key_file)
    assert oix("keys", "generate", "--file", str(key_file), env=env).returncode == 0
    assert oix("org", "add", "ENC", "Encrypted", env=env).returncode == 0
    first_id = key_file.read_text().split()[0]
    other = tmp_path / "other-keys"
    assert oix("keys", "generate", "--file", str(other), env=env).returncode == 0
    refused = oix("org", "list", env=keys_env(tmp_path / "data", other))
    assert refused.returncode == 1
    assert f"key '{first_id}'" in refused.stderr and "lacks" in refused.stderr


def test_a_key_file_readable_by_others_is_refused(tmp_path):
    key_file = tmp_path / "keys"
    env = keys_env(tmp_path / "data", key_file)
    assert oix("keys", "generate", "--file", str(key_file), env=env).returncode == 0
    key_file.chmod(0o644)
    refused = oix("org", "list", env=env)
    assert refused.returncode == 1 and "chmod 600" in refused.stderr


def test_a_plaintext_data_dir_is_refused_until_rotate_encrypts_it(tmp_path):
    """Encryption turned on for a data directory that has plaintext: refused, and then
    `oix keys rotate --index` encrypts its blobs and its index in place."""
    data_dir, key_file = tmp_path / "data", tmp_path / "keys"
    plain = start_server(data_dir, orgs=("PLAIN",))
    try:
        item = by_name("pydicom/CT_small.dcm")
        with httpx.Client(timeout=60) as http:
            assert stow(http, plain.root(), [item.data]).status_code == 200
    finally:
        stop_server(plain)
    env = keys_env(data_dir, key_file)
    assert oix("keys", "generate", "--file", str(key_file), env=env).returncode == 0
    refused = oix("org", "list", env=env)
    assert refused.returncode == 1 and "stored without encryption" in refused.stderr

    rotated = oix("keys", "rotate", "--index", env=env)
    assert rotated.returncode == 0, rotated.stderr
    assert "1 from plaintext" in rotated.stdout and "index re-encrypted" in rotated.stdout
    name = str(item.dataset().PatientName).encode()
    for path in every_file(data_dir):
        assert name not in path.read_bytes(), path
    listed = oix("org", "list", env=env)
    assert listed.returncode == 0 and listed.stdout.startswith("PLAIN\t")
    server = start_server(data_dir, env={"OIX_ENCRYPTION_KEY_FILE": str(key_file)})
    try:
        server.orgs.append("PLAIN")
        stored = Stored(item.name, "PLAIN", item.data)
        assert_retrieves_byte_exact(server, [stored])
    finally:
        stop_server(server)
