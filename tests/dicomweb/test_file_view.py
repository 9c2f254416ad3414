"""FileView, the bytes-like view through which the header reader walks a large object it cannot
memory-map (an encrypted blob): the same bytes as the file, and the same parse."""

from __future__ import annotations

import io
import os

import pytest

from conformance.corpus import StudySpec, new_uid, synthetic_instance
from dicomweb import part10
from dicomweb.file_view import FileView
from dicomweb.part10 import read_part10
from storage.encryption import SegmentWriter, open_decrypting
from storage.keyring import Keyring
from tests.real_files import by_name, corpus_files


def test_indexing_and_slicing_give_the_bytes_of_the_file():
    data = os.urandom(10_000)
    view = FileView(io.BytesIO(data), len(data), block_size=512)
    assert len(view) == len(data)
    for key in [slice(0, 0), slice(0, 1), slice(500, 530), slice(511, 1025), slice(9_990, 20_000),
                slice(None), slice(-10, None), slice(3000, 100)]:
        assert view[key] == data[key], key
    assert view[0] == data[0] and view[-1] == data[-1] and view[512] == data[512]
    with pytest.raises(IndexError):
        view[10_000]


def test_the_header_reader_reads_every_corpus_file_the_same_through_a_file_view():
    """Unpacking from slices of a view (it is no buffer) must not change a single attribute,
    bulk data location or frame of any file; small blocks make elements straddle them."""
    for item in corpus_files():
        data = item.data
        try:
            expected = part10._parse(data, 1024, lambda path: path)
        except (part10.Part10Error, ValueError, IndexError):
            continue  # deliberately broken files: the plain read refuses them too
        assert part10._parse(FileView(io.BytesIO(data), len(data), block_size=4096), 1024,
                             lambda path: path) == expected, item.name


def encrypted_copy(tmp_path, data: bytes) -> Keyring:
    ring = Keyring({"k1": os.urandom(32)}, "k1")
    writer = SegmentWriter(tmp_path / "blob", ring)
    writer.write(data)
    writer.close()
    return ring


@pytest.mark.parametrize("source", ["synthetic native, 8 MiB", "pydicom-data/color3d_jpeg_baseline.dcm"])
def test_a_large_encrypted_object_parses_as_its_plaintext_does(tmp_path, source):
    """Over 4 MiB a plain file is memory-mapped; an encrypted one is read through a FileView
    that decrypts only the segments the header reader touches (DESIGN invariant 4)."""
    if source.startswith("synthetic"):
        data = synthetic_instance(StudySpec(rows=512, columns=512, frames=16), new_uid(), 1, 1)
    else:
        data = by_name(source).data
    assert len(data) > 4 << 20
    (tmp_path / "plain").write_bytes(data)
    ring = encrypted_copy(tmp_path, data)
    with open_decrypting(tmp_path / "blob", ring) as handle:
        parsed = read_part10(handle, 1024, lambda path: path)
    assert parsed == read_part10(str(tmp_path / "plain"), 1024, lambda path: path)
    assert len(parsed.frames) > 1
