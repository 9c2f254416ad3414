"""The STOW-RS parser processes (dicomweb/parser_pool.py): real processes reading real files
from pydicom's test corpus. A parser that dies or hangs costs only the request it was reading
(a 503, ParserFailed); it is replaced, and the next request is read as before."""

from __future__ import annotations

import os
import signal
from pathlib import Path

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


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGSTOP], ids=["killed", "hung"])
def test_a_parser_that_dies_or_hangs_fails_its_request_only_and_is_replaced(pool, tmp_path, stop):
    parts = _parts(tmp_path, [CT])
    before = pool.pids()
    for pid in before:
        os.kill(pid, stop)
    with pytest.raises(ParserFailed) as failed:
        pool(parts, None, 1024)
    assert isinstance(failed.value, ServiceUnavailable) and failed.value.status == 503
    assert "send it again" in failed.value.message
    # Every parser was stopped: the next requests find them replaced, one at a time.
    outcomes = []
    for _ in range(4):
        try:
            outcomes.append(pool(parts, None, 1024)[0].sop_instance_uid)
        except ParserFailed:
            outcomes.append("failed")
    assert outcomes.count("failed") <= 1 and outcomes[-1] == by_name(CT).sop_instance_uid
    after = pool.pids()
    assert len(after) == 2 and not set(after) & set(before)


def test_after_shutdown_a_request_is_refused_rather_than_left_waiting(tmp_path):
    stopped = ParserPool(1, timeout=5.0)
    stopped.start()
    stopped.shutdown()
    with pytest.raises(ParserFailed, match="stopping"):
        stopped(_parts(tmp_path, [CT]), None, 1024)


def test_a_live_server_answers_503_when_a_parser_dies_keeps_nothing_and_stores_again(tmp_path):
    """Every parser process of a running server (two workers) is killed: a STOW-RS request that
    meets one is answered 503 with a message, leaves nothing in incoming/ or the index, and the
    replaced parsers store the next requests."""
    import httpx
    import psutil

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
        statuses = []
        with httpx.Client(timeout=60) as http:
            for _ in range(4):  # bounded: each worker fails at most one request
                study = new_uid()
                boundary = new_boundary()
                body = related_body([synthetic_instance(StudySpec(study_uid=study), new_uid(), 1, 1, new_uid())],
                                    boundary)
                response = http.post(f"{server.root()}/studies", content=body,
                                     headers={"Content-Type": stow_content_type(boundary)})
                statuses.append(response.status_code)
                held = http.get(f"{server.root()}/studies", params={"StudyInstanceUID": study})
                if response.status_code == 503:
                    assert "send it again" in response.json()["error"]
                    assert held.status_code in (200, 204) and not (held.content and held.json())
                else:
                    assert response.status_code == 200 and len(referenced_sop_instances(response.json())) == 1
                    assert len(held.json()) == 1
        assert 1 <= statuses.count(503) <= 2 and statuses[-1] == 200
        assert list((server.data_dir / "incoming").iterdir()) == []
    finally:
        stop_server(server)
