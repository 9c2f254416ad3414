"""The real DICOM files the tests store: pydicom's test files (test_files/, charset_files/) and
the pydicom-data package. A file takes part if pydicom reads it with a file meta Transfer
Syntax UID and a SOP Instance UID; the deliberately broken ones are named below, with why."""

from __future__ import annotations

import io
import os
import warnings
from collections import defaultdict
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pydicom
import pydicom.data
from pydicom.uid import generate_uid

PYDICOM_DATA = Path(os.path.dirname(pydicom.data.__file__))

# Deliberately broken files of the corpora: the server refuses them (0xC000), and rightly.
KNOWN_BAD = {
    "pydicom/MR_truncated.dcm": "its Pixel Data is cut short: the value runs past the end of the file",
    "pydicom/rtplan_truncated.dcm": "truncated inside an element value",
    "pydicom-data/emri_small_jpeg_2k_lossless_too_short.dcm": "encapsulated Pixel Data without its end",
}


def corpus_roots() -> dict[str, Path]:
    import data_store

    return {
        "pydicom": PYDICOM_DATA / "test_files",
        "pydicom-charset": PYDICOM_DATA / "charset_files",
        "pydicom-data": Path(os.path.dirname(data_store.__file__)) / "data",
    }


@dataclass(frozen=True)
class CorpusFile:
    name: str  # "<corpus>/<path in it>"
    path: Path
    transfer_syntax: str
    sop_class_uid: str
    sop_instance_uid: str
    study_uid: str
    series_uid: str
    number_of_frames: int
    has_pixel_data: bool
    # The file lacks Study/Series Instance UID, so the server refuses it as it is; the corpus
    # stores a copy with them added (same transfer syntax, same Pixel Data bytes).
    completed: bool = False

    @property
    def data(self) -> bytes:
        return _file_bytes(self)

    def dataset(self) -> pydicom.Dataset:
        return pydicom.dcmread(io.BytesIO(self.data))


@cache
def _file_bytes(item: CorpusFile) -> bytes:
    raw = item.path.read_bytes()
    if not item.completed:
        return raw
    dataset = pydicom.dcmread(io.BytesIO(raw))
    dataset.StudyInstanceUID = item.study_uid
    dataset.SeriesInstanceUID = item.series_uid
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@dataclass(frozen=True)
class Unusable:
    name: str
    reason: str


@cache
def scan() -> tuple[tuple[CorpusFile, ...], tuple[Unusable, ...]]:
    usable: list[CorpusFile] = []
    unusable: list[Unusable] = []
    for corpus, root in corpus_roots().items():
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            name = f"{corpus}/{path.relative_to(root).as_posix()}"
            if name in KNOWN_BAD:
                unusable.append(Unusable(name, KNOWN_BAD[name]))
                continue
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    dataset = pydicom.dcmread(path, stop_before_pixels=False)
            except Exception as exc:  # not DICOM at all (README, .json, .gz) or no file meta
                unusable.append(Unusable(name, f"pydicom cannot read it: {type(exc).__name__}"))
                continue
            syntax = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
            sop_instance = dataset.get("SOPInstanceUID")
            if not syntax or not sop_instance:
                unusable.append(Unusable(name, "no file meta Transfer Syntax UID or no SOP Instance UID"))
                continue
            study, series = dataset.get("StudyInstanceUID"), dataset.get("SeriesInstanceUID")
            completed = not study or not series
            usable.append(CorpusFile(
                name=name, path=path, transfer_syntax=str(syntax),
                sop_class_uid=str(dataset.get("SOPClassUID", "")), sop_instance_uid=str(sop_instance),
                study_uid=str(study or generate_uid(entropy_srcs=[str(sop_instance), "study"])),
                series_uid=str(series or generate_uid(entropy_srcs=[str(sop_instance), "series"])),
                number_of_frames=_frames(dataset),
                has_pixel_data="PixelData" in dataset, completed=completed,
            ))
    return tuple(usable), tuple(unusable)


def _frames(dataset: pydicom.Dataset) -> int:
    try:
        return int(dataset.get("NumberOfFrames") or 1)
    except ValueError:  # badVR.dcm: deliberately invalid values
        return 1


def corpus_files() -> tuple[CorpusFile, ...]:
    return scan()[0]


def by_name(name: str) -> CorpusFile:
    for item in corpus_files():
        if item.name == name:
            return item
    raise KeyError(name)


def layers(files: tuple[CorpusFile, ...]) -> list[list[CorpusFile]]:
    """Files grouped so that no layer holds two files with one SOP Instance UID: many corpus
    files are the same image in several transfer syntaxes, under the same UID."""
    groups: dict[str, list[CorpusFile]] = defaultdict(list)
    for item in files:
        groups[item.sop_instance_uid].append(item)
    depth = max(len(group) for group in groups.values())
    return [[group[level] for group in groups.values() if len(group) > level] for level in range(depth)]
