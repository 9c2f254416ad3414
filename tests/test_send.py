"""`oix send` (issue The exchange, "Sending (three ways, one model)"): folders of DICOM files sent
to another organisation through its outbox service root, the transfers delivered at the end, a
report made from a PDF or text file, and a send cut off part way resumed without sending again
what the destination acknowledged. The real `oix` console script against a real `oix serve`."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import EncapsulatedPDFStorage, generate_uid

from exchange.reports import encapsulated_document
from tests.cutoff_proxy import cutoff_proxy
from tests.dicomweb_requests import stow
from tests.exchange.test_transfers_live import Party
from tests.pdf_documents import minimal_pdf
from tests.servers import OixServer, oix_command, start_server, stop_server

SEND_TIMEOUT_SECONDS = 120.0
WAIT_SECONDS = 60.0
CT_PATIENT, MR_PATIENT = "1CT1", "4MR1"  # the Patient IDs of pydicom's CT_small.dcm and MR_small.dcm


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[OixServer]:
    running = start_server(tmp_path_factory.mktemp("send") / "data", auth=True)
    try:
        yield running
    finally:
        stop_server(running)


@pytest.fixture
def parties(server) -> Iterator[tuple[Party, Party]]:
    made = (Party(server, "district"), Party(server, "tertiary"))
    yield made
    for party in made:
        party.http.close()


def new_instance(source: str, study_uid: str, series_uid: str) -> pydicom.Dataset:
    """pydicom's test file `source` as a new instance of the given study and series."""
    dataset = pydicom.dcmread(get_testdata_file(source))
    dataset.StudyInstanceUID, dataset.SeriesInstanceUID = study_uid, series_uid
    dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    return dataset


@pytest.fixture
def folder(tmp_path) -> Path:
    """Six DICOM files in nested folders, of two patients and three studies, and a text file:
    CT_small.dcm and MR_small.dcm as they are, and four new CT instances of a second CT study."""
    root = tmp_path / "outgoing"
    (root / "ct" / "follow-up").mkdir(parents=True)
    (root / "mr").mkdir()
    shutil.copy(get_testdata_file("CT_small.dcm"), root / "ct" / "CT_small.dcm")
    shutil.copy(get_testdata_file("MR_small.dcm"), root / "mr" / "MR_small.dcm")
    study, series = generate_uid(), generate_uid()
    for number in range(1, 5):
        new_instance("CT_small.dcm", study, series).save_as(root / "ct" / "follow-up" / f"image-{number}.dcm",
                                                            enforce_file_format=True)
    (root / "README.txt").write_text("Images for the tertiary centre.\n")
    return root


def sop_uids(folder: Path) -> set[str]:
    return {str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID) for path in folder.rglob("*.dcm")}


def oix_send(cwd: Path, *args: str, server: str, token: str, **popen) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if not key.startswith("OIX_")}
    return subprocess.run([*oix_command(), "send", *args, "--server", server, "--token", token], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=SEND_TIMEOUT_SECONDS, **popen)


def journal_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def received(party: Party) -> set[str]:
    """The SOP Instance UIDs `party` holds, found by QIDO-RS with its own key."""
    studies = party.http.get(f"/dicomweb/{party.slug}/studies").json()
    found = set()
    for study in studies:
        uid = study["0020000D"]["Value"][0]
        instances = party.http.get(f"/dicomweb/{party.slug}/studies/{uid}/instances").json()
        found |= {item["00080018"]["Value"][0] for item in instances}
    return found


def instances_in_transfers(party: Party) -> int:
    """The instances the inbox's transfers count: an instance sent twice is counted twice."""
    return sum(study["instances"] for transfer in party.inbox()
               for study in party.transfer(transfer["id"]).json()["studies"])


def test_a_folder_sent_arrives_whole_and_its_transfers_are_delivered_with_note_and_urgency(parties, folder, server):
    district, tertiary = parties
    sent = oix_send(folder.parent, str(folder), "--to", tertiary.slug, "--urgency", "emergency",
                    "--note", "Trauma CT, please review now", server=server.base_url, token=district.sender)

    assert sent.returncode == 0, sent.stderr
    assert "sent 6 instance(s)" in sent.stdout and "1 not DICOM" in sent.stdout
    assert received(tertiary) == sop_uids(folder)
    inbox = tertiary.inbox()
    assert sorted(t["patient_id"] for t in inbox) == [CT_PATIENT, MR_PATIENT]  # one transfer per patient
    for transfer in inbox:
        assert (transfer["state"], transfer["urgency"], transfer["note"], transfer["sender"]) == \
            ("delivered", "emergency", "Trauma CT, please review now", district.slug)
        history = tertiary.transfer(transfer["id"]).json()["history"]
        assert [event["state"] for event in history] == ["receiving", "delivered"]
        assert history[-1]["actor"] != "oix"  # completed by the sender, not by the idle time
        assert f"transfer {transfer['id']}: delivered" in sent.stdout
    assert instances_in_transfers(tertiary) == 6
    assert "\r" not in sent.stderr  # no progress line drawn when standard error is not a terminal
    journal = journal_lines(folder.parent / f".oix-send-{tertiary.slug}.jsonl")
    assert journal[0]["destination"] == tertiary.slug and journal[0]["org"] == district.slug
    assert {entry["sop"] for entry in journal[1:]} == sop_uids(folder)


def test_a_pdf_report_is_sent_in_the_study_of_the_first_file_and_flags_its_transfer(parties, folder, server):
    district, tertiary = parties
    pdf = minimal_pdf("CT head: no acute abnormality.")
    (folder.parent / "Outside report.pdf").write_bytes(pdf)
    arguments = (str(folder), "--to", tertiary.slug, "--org", district.slug, "--report",
                 str(folder.parent / "Outside report.pdf"), "--author", "Dr A Sender")
    sent = oix_send(folder.parent, *arguments, server=server.base_url, token=district.sender)

    assert sent.returncode == 0, sent.stderr
    assert "sent 7 instance(s)" in sent.stdout
    transfers = {t["patient_id"]: t for t in tertiary.inbox()}
    assert transfers[CT_PATIENT]["has_report"] is True and transfers[MR_PATIENT]["has_report"] is False
    reports = tertiary.http.get(f"/api/orgs/{tertiary.slug}/transfers/{transfers[CT_PATIENT]['id']}/reports")
    assert [(r["title"], r["sop_class_uid"]) for r in reports.json()["reports"]] == \
        [("Outside report", EncapsulatedPDFStorage)]
    assert "no acute abnormality" in reports.json()["reports"][0]["text"]
    first_study = str(pydicom.dcmread(folder / "ct" / "CT_small.dcm", stop_before_pixels=True).StudyInstanceUID)
    report_uid = reports.json()["reports"][0]["sop_instance_uid"]
    retrieved = tertiary.dicomweb().retrieve_instance(first_study, _series_of(tertiary, first_study, report_uid),
                                                      report_uid)
    assert encapsulated_document(retrieved) == pdf
    assert str(retrieved.ContentCreatorName) == "Dr A Sender"

    again = oix_send(folder.parent, *arguments, server=server.base_url, token=district.sender)
    assert again.returncode == 0, again.stderr
    assert "sent 0 instance(s)" in again.stdout and "7 already acknowledged" in again.stdout
    assert len(tertiary.http.get(f"/dicomweb/{tertiary.slug}/instances",
                                 params={"SOPClassUID": EncapsulatedPDFStorage}).json()) == 1


def _series_of(party: Party, study: str, sop: str) -> str:
    instances = party.http.get(f"/dicomweb/{party.slug}/studies/{study}/instances",
                               params={"SOPInstanceUID": sop}).json()
    return instances[0]["0020000E"]["Value"][0]


def test_a_text_report_is_sent_as_a_basic_text_sr(parties, tmp_path, server):
    district, tertiary = parties
    shutil.copy(get_testdata_file("MR_small.dcm"), tmp_path / "MR_small.dcm")
    (tmp_path / "opinion.txt").write_text("No fracture. Follow up in clinic.\n")
    sent = oix_send(tmp_path, str(tmp_path / "MR_small.dcm"), "--to", tertiary.slug, "--report",
                    str(tmp_path / "opinion.txt"), server=server.base_url, token=district.sender)

    assert sent.returncode == 0, sent.stderr
    transfer = tertiary.inbox()[0]
    assert transfer["has_report"] is True
    reports = tertiary.http.get(f"/api/orgs/{tertiary.slug}/transfers/{transfer['id']}/reports").json()["reports"]
    assert "No fracture. Follow up in clinic." in reports[0]["text"]


def test_a_send_cut_off_part_way_resumes_without_sending_again_what_was_acknowledged(parties, folder, server):
    district, tertiary = parties
    with cutoff_proxy(server.base_url, forward_posts=2, cutoff="drop") as proxy:
        arguments = (str(folder), "--to", tertiary.slug, "--batch", "1", "--retries", "1")
        cut = oix_send(folder.parent, *arguments, server=proxy.url, token=district.sender)

        assert cut.returncode == 1, cut.stdout + cut.stderr
        assert "run the same command again" in cut.stderr
        assert proxy.counts() == (2, 2)  # two stored, then the third tried twice
        journal = folder.parent / f".oix-send-{tertiary.slug}.jsonl"
        first = {entry["sop"] for entry in journal_lines(journal)[1:]}
        assert len(first) == 2 and first <= received(tertiary)
        assert all(t["state"] == "receiving" for t in tertiary.inbox())  # not delivered half sent

        proxy.forward_everything()
        resumed = oix_send(folder.parent, *arguments, server=proxy.url, token=district.sender)

        assert resumed.returncode == 0, resumed.stderr
        assert proxy.counts()[0] == 2 + 4  # only the four not acknowledged were sent
        assert "sent 4 instance(s)" in resumed.stdout and "2 already acknowledged" in resumed.stdout
    assert received(tertiary) == sop_uids(folder)
    assert instances_in_transfers(tertiary) == 6  # nothing stored twice into a transfer
    assert all(t["state"] == "delivered" for t in tertiary.inbox())
    entries = [entry["sop"] for entry in journal_lines(journal)[1:]]
    assert sorted(entries) == sorted(sop_uids(folder))  # each acknowledgement once


def test_a_send_killed_mid_request_resumes_from_its_journal(parties, folder, server):
    district, tertiary = parties
    journal = folder.parent / f".oix-send-{tertiary.slug}.jsonl"
    with cutoff_proxy(server.base_url, forward_posts=3, cutoff="hold") as proxy:
        arguments = [str(folder), "--to", tertiary.slug, "--batch", "1"]
        env = {key: value for key, value in os.environ.items() if not key.startswith("OIX_")}
        process = subprocess.Popen([*oix_command(), "send", *arguments, "--server", proxy.url,
                                    "--token", district.sender], cwd=folder.parent, env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            assert proxy.holding.wait(WAIT_SECONDS), "the fourth request never came"
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=WAIT_SECONDS)
        first = [entry["sop"] for entry in journal_lines(journal)[1:]]
        assert len(first) == 3

        proxy.forward_everything()
        resumed = oix_send(folder.parent, *arguments, server=proxy.url, token=district.sender)

        assert resumed.returncode == 0, resumed.stderr
        assert proxy.counts()[0] == 3 + 3
        assert "sent 3 instance(s)" in resumed.stdout
    assert received(tertiary) == sop_uids(folder)
    assert instances_in_transfers(tertiary) == 6
    assert sorted(entry["sop"] for entry in journal_lines(journal)[1:]) == sorted(sop_uids(folder))


def test_an_instance_the_destination_refuses_is_named_with_its_reason_and_the_rest_arrive(parties, tmp_path, server):
    district, tertiary = parties
    clash = new_instance("CT_small.dcm", generate_uid(), generate_uid())
    clash.save_as(tmp_path / "a-clash.dcm", enforce_file_format=True)
    clash.PatientName = "OTHER^CONTENT"  # the same SOP Instance UID, already held with other bytes
    held = io.BytesIO()
    clash.save_as(held, enforce_file_format=True)
    assert stow(tertiary.http, f"/dicomweb/{tertiary.slug}", [held.getvalue()]).status_code == 200
    shutil.copy(get_testdata_file("MR_small.dcm"), tmp_path / "b-fine.dcm")

    sent = oix_send(tmp_path, str(tmp_path), "--to", tertiary.slug, server=server.base_url, token=district.sender)

    assert sent.returncode == 1
    assert f"failed: {tmp_path / 'a-clash.dcm'}: failure reason 0x0111: SOP Instance {clash.SOPInstanceUID} " \
           "is already held with different content" in sent.stdout
    assert "sent 1 instance(s)" in sent.stdout
    assert all(t["state"] == "receiving" for t in tertiary.inbox())  # not delivered while something failed
    journal = journal_lines(tmp_path / f".oix-send-{tertiary.slug}.jsonl")
    assert [Path(entry["path"]).name for entry in journal[1:]] == ["b-fine.dcm"]


def test_an_unknown_destination_is_refused_before_anything_is_sent(parties, folder, server):
    district, _ = parties
    sent = oix_send(folder.parent, str(folder), "--to", "NOSUCHORG", server=server.base_url, token=district.sender)

    assert sent.returncode == 2
    assert "unknown destination NOSUCHORG" in sent.stderr
    assert not (folder.parent / ".oix-send-NOSUCHORG.jsonl").exists()
    assert district.outbox() == []


def test_a_folder_without_dicom_files_is_refused_with_a_clear_message(parties, tmp_path, server):
    district, tertiary = parties
    (tmp_path / "notes.txt").write_text("no images here")
    (tmp_path / "short.dcm").write_bytes(b"DICM")  # a name is not enough: Part 10 has "DICM" after 128 bytes
    sent = oix_send(tmp_path, str(tmp_path), "--to", tertiary.slug, server=server.base_url, token=district.sender)

    assert sent.returncode == 2
    assert "no DICOM files" in sent.stderr and "2 file(s) found" in sent.stderr


def test_a_token_the_server_does_not_know_is_refused(parties, folder, server):
    _, tertiary = parties
    unknown_key = "oixk_00000000deadbeef_" + "x" * 43  # the form of an API key, but none the server issued
    sent = oix_send(folder.parent, str(folder), "--to", tertiary.slug, "--org", "anything", server=server.base_url,
                    token=unknown_key)

    assert sent.returncode == 2
    assert "the server refused the token" in sent.stderr


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_progress_line_is_drawn_on_a_terminal_only():
    from oix.send import Progress

    ticks = iter([0.0, 1.0, 2.0, 2.0, 2.0])
    terminal = Terminal()
    progress = Progress(terminal, files=2, size=4_000_000, clock=lambda: next(ticks))
    progress.streamed(1_000_000)
    progress.acknowledged(1, 2_000_000)
    assert terminal.getvalue().endswith("\r\x1b[K1/2 files  2.0/4.0 MB  1.0 MB/s")

    piped = io.StringIO()
    Progress(piped, files=2, size=4_000_000).acknowledged(1, 2_000_000)
    assert piped.getvalue() == ""


def test_a_key_that_may_not_send_is_refused_with_the_servers_reason(parties, folder, server):
    district, tertiary = parties
    viewer = server.cli("key", "create", "--org", district.slug, "--role", "viewer").strip()
    sent = oix_send(folder.parent, str(folder), "--to", tertiary.slug, server=server.base_url, token=viewer)

    assert sent.returncode == 1
    assert "the token may not send for this organisation" in sent.stderr and "403" in sent.stderr
    assert "sent 0 instance(s)" in sent.stdout
    assert tertiary.inbox() == []
