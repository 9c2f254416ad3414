"""The journal of `oix send`: acknowledgements survive a crash mid-write, and a journal of one
send is never taken for another's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from oix.send_journal import Acknowledgement, FileIdentity, JournalMismatch, SendJournal, SendTarget

TARGET = SendTarget("https://oix.example", "RJ1", "RGT")


def acknowledgement(tmp_path: Path, name: str) -> Acknowledgement:
    path = tmp_path / name
    path.write_bytes(b"x" * 10)
    return Acknowledgement(f"1.2.3.{len(name)}", "1.2.3", FileIdentity.of(path))


def test_recorded_acknowledgements_are_read_back_by_the_next_run(tmp_path):
    ack = acknowledgement(tmp_path, "a.dcm")
    SendJournal(tmp_path / "journal", TARGET).record([ack])

    again = SendJournal(tmp_path / "journal", TARGET)
    assert again.holds_file(FileIdentity.of(tmp_path / "a.dcm")) and again.holds_instance(ack.sop)
    assert again.studies() == {"1.2.3"}


def test_a_file_changed_since_it_was_acknowledged_is_not_taken_as_sent(tmp_path):
    SendJournal(tmp_path / "journal", TARGET).record([acknowledgement(tmp_path, "a.dcm")])
    (tmp_path / "a.dcm").write_bytes(b"y" * 11)

    assert not SendJournal(tmp_path / "journal", TARGET).holds_file(FileIdentity.of(tmp_path / "a.dcm"))


def test_a_line_cut_short_by_a_crash_is_ignored_and_the_next_record_starts_a_new_line(tmp_path):
    journal_path = tmp_path / "journal"
    SendJournal(journal_path, TARGET).record([acknowledgement(tmp_path, "a.dcm")])
    with open(journal_path, "ab") as journal:
        journal.write(b'{"sop": "1.2.9", "stu')  # the crash

    resumed = SendJournal(journal_path, TARGET)
    assert not resumed.holds_instance("1.2.9")
    resumed.record([acknowledgement(tmp_path, "bb.dcm")])

    read = SendJournal(journal_path, TARGET)
    assert [ack.sop for ack in read.acknowledged] == ["1.2.3.5", "1.2.3.6"]
    assert json.loads(journal_path.read_text().splitlines()[-1])["sop"] == "1.2.3.6"


def test_a_header_cut_short_by_a_crash_is_written_again(tmp_path):
    journal_path = tmp_path / "journal"
    journal_path.write_bytes(b'{"oix_send": 1, "ser')
    SendJournal(journal_path, TARGET).record([acknowledgement(tmp_path, "a.dcm")])

    assert [ack.sop for ack in SendJournal(journal_path, TARGET).acknowledged] == ["1.2.3.5"]


def test_a_journal_of_another_destination_or_a_file_that_is_no_journal_is_refused(tmp_path):
    SendJournal(tmp_path / "journal", TARGET).record([acknowledgement(tmp_path, "a.dcm")])
    with pytest.raises(JournalMismatch, match="records a send to RGT from RJ1"):
        SendJournal(tmp_path / "journal", SendTarget(TARGET.server, TARGET.org, "RJZ"))
    (tmp_path / "image.dcm").write_bytes(b"\0" * 128 + b"DICM")
    with pytest.raises(JournalMismatch, match="not an `oix send` journal"):
        SendJournal(tmp_path / "image.dcm", TARGET)
