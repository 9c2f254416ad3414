"""The STOW-RS parser processes (dicomweb/parser_pool.py): real processes reading real files
from pydicom's test corpus. A parser that dies or hangs costs only the request it was reading
(a 503, ParserFailed); it is replaced, and the next request is read as before."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import psutil
import pytest

from dicomweb.checks import Failure, PartToCheck, check_parts
from dicomweb.errors import ServiceUnavailable
from dicomweb.parser_pool import ParserFailed, ParserPool
from storage.records import InstanceRecord
from tests.real_files import by_name

CT = "pydicom/CT_small.dcm"


def _parts(tmp_path: Path, names: list[str]) -> list[PartToCheck]:
    parts = []
    for number, name in enumerate(names, start=1):
        path = tmp_path / f"part-{number}"
        path.write_bytes(by_name(name).data if name else b"not DICOM")
        parts.append(PartToCheck(number, str(path), "application/dicom", f"{number:064x}", path.stat().st_size))
    return parts


@pytest.fixture
def pool():
    opened = ParserPool(2, timeout=5.0)
    opened.start()
    yield opened
    opened.shutdown()


def test_a_parser_process_answers_as_check_parts_does_in_process(pool, tmp_path):
    parts = _parts(tmp_path, [CT, "pydicom/MR_small.dcm", ""])
    answered = pool(parts, None, 1024)
    assert answered == check_parts(parts, None, 1024)
    assert [type(item) for item in answered] == [InstanceRecord, InstanceRecord, Failure]
    assert answered[0].sop_instance_uid == by_name(CT).sop_instance_uid


def _wait_until_gone(pids: list[int]) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if all(not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE for pid in pids):
            return
        time.sleep(0.05)
    raise AssertionError(f"parser processes {pids} still run")


def test_a_parser_found_dead_is_replaced_before_the_request_uses_it(pool, tmp_path):
    """A parser killed while idle (by the kernel for memory, say) costs no request."""
    parts = _parts(tmp_path, [CT])
    before = pool.pids()
    for pid in before:
        os.kill(pid, signal.SIGKILL)
    _wait_until_gone(before)
    time.sleep(0.5)  # the forkserver reaps them and reports their exit
    for _ in range(3):
        assert pool(parts, None, 1024)[0].sop_instance_uid == by_name(CT).sop_instance_uid
    assert len(pool.pids()) == 2 and not set(pool.pids()) & set(before)


@pytest.mark.parametrize("kill", [True, False], ids=["killed while reading", "hung"])
def test_a_parser_that_dies_or_hangs_reading_a_request_fails_it_only_and_is_replaced(tmp_path, kill):
    """The parser is stopped (SIGSTOP: alive, but no answer), then killed while a request waits
    for it, or left hung past the timeout: that request fails with 503 (ParserFailed), and the
    next one is read by a new parser."""
    single = ParserPool(1, timeout=5.0)
    single.start()
    try:
        parts = _parts(tmp_path, [CT])
        (pid,) = single.pids()
        os.kill(pid, signal.SIGSTOP)
        if kill:
            threading.Timer(1.0, os.kill, (pid, signal.SIGKILL)).start()
        with pytest.raises(ParserFailed) as failed:
            single(parts, None, 1024)
        assert isinstance(failed.value, ServiceUnavailable) and failed.value.status == 503
        assert "send it again" in failed.value.message
        assert single(parts, None, 1024)[0].sop_instance_uid == by_name(CT).sop_instance_uid
        assert single.pids() != [pid]
    finally:
        single.shutdown()


def test_after_shutdown_a_request_is_refused_rather_than_left_waiting(tmp_path):
    stopped = ParserPool(1, timeout=5.0)
    stopped.start()
    stopped.shutdown()
    with pytest.raises(ParserFailed, match="stopping"):
        stopped(_parts(tmp_path, [CT]), None, 1024)


def test_a_live_server_replaces_parsers_killed_while_idle_without_failing_a_request(tmp_path):
    """Every parser process of a running server (two workers) is killed while idle: the next
    STOW-RS requests are all stored, by replaced parsers, and nothing is left in incoming/."""
    import httpx

    from conformance.corpus import StudySpec, new_uid, synthetic_instance
    from tests.dicomweb_requests import referenced_sop_instances
    from tests.multipart_body import new_boundary, related_body, stow_content_type
    from tests.servers import start_server, stop_server

    server = start_server(tmp_path / "data", orgs=("RJ1",), env={"OIX_WORKERS": "2", "OIX_PARSE_WORKERS": "1"})
    try:
        supervisor = psutil.Process(server.pid)
        forkservers = [p for p in supervisor.children(recursive=True) if "forkserver" in " ".join(p.cmdline())]
        parsers = [p for p in forkservers if p.parent() in forkservers]
        assert len(parsers) == 2
        for parser in parsers:
            parser.kill()
        with httpx.Client(timeout=60) as http:
            for _ in range(4):
                study = new_uid()
                boundary = new_boundary()
                body = related_body([synthetic_instance(StudySpec(study_uid=study), new_uid(), 1, 1, new_uid())],
                                    boundary)
                response = http.post(f"{server.root()}/studies", content=body,
                                     headers={"Content-Type": stow_content_type(boundary)})
                assert response.status_code == 200 and len(referenced_sop_instances(response.json())) == 1
                assert len(http.get(f"{server.root()}/studies", params={"StudyInstanceUID": study}).json()) == 1
        assert list((server.data_dir / "incoming").iterdir()) == []
        assert not {p.pid for p in parsers} & {p.pid for p in supervisor.children(recursive=True)}
    finally:
        stop_server(server)


def test_a_parser_that_dies_while_starting_is_reported_as_not_started(monkeypatch):
    """A parser process that exits before it is ready (its imports failed, say) is ParserFailed
    (503 for a request that needed it), not an unexplained error."""
    import dicomweb.parser_pool as parser_pool

    monkeypatch.setattr(parser_pool, "_serve", _exit_at_once)
    starting = ParserPool(1, timeout=5.0)
    try:
        with pytest.raises(ParserFailed, match="did not start"):
            starting.start()
    finally:
        starting.shutdown()


def _exit_at_once(connection) -> None:
    connection.close()
