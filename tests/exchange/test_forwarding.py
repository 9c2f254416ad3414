"""Auto-forwarding (issue "The exchange"), the service on a real index (SQLite file or PostgreSQL)
and blob store, with a PACS in the test process that reads every instance as it streams: which
transfers a rule forwards, per-instance outcomes, retries that resend only what is pending, a
re-run that sends nothing new, and rules that cannot be added. tests/exchange/
test_forwarding_live.py does the same against a real Orthanc."""

from __future__ import annotations

import io
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from dicomweb.checks import PartToCheck, check_parts
from exchange.access import ActorKind, Principal, Requester, Role
from exchange.archive import Archive, Incoming
from exchange.audit import AuditAction, AuditTrail
from exchange.forwarding import (
    FORWARD_JOB,
    Forwarding,
    InstanceRefusal,
    InvalidForwardingRule,
    OutgoingInstance,
    PacsRefused,
    PacsUnavailable,
    RuleMatch,
    StoreOutcome,
)
from exchange.jobs import Backoff, JobRunner
from exchange.organisations import OrganisationDirectory
from exchange.transfers import Step, Transfers, Urgency
from storage.blobs import FileBlobStore
from storage.forwarding import ForwardingTable
from storage.instances import InstanceIndex
from storage.jobs import Job, JobQueue, JobState
from storage.organisations import OrganisationTable
from storage.transfers import TransferFilter, TransferTable

SENDER, DESTINATION, OTHER = "RYJ", "RJ1", "RRV"
PACS_ROOT = "https://pacs.rj1.example.nhs.uk/dicom-web"
ADMIN = Requester(Principal("asha", ActorKind.USER, {DESTINATION: Role.ADMIN}), client_address="10.1.2.3")
SENDING = Requester(Principal("ben", ActorKind.USER, {SENDER: Role.SENDER}))


# -- a PACS in the test process -----------------------------------------------------------------

@dataclass
class Request:
    url: str
    sop_instance_uids: list[str]
    headers: dict[str, str]


@dataclass
class ScriptedPacs:
    """Stores what it is sent, keyed by SOP Instance UID, after reading each instance's bytes as
    they stream; each request takes the next entry of `script`: an exception to raise, or a
    {SOP Instance UID: InstanceRefusal} of instances to refuse."""

    script: list = field(default_factory=list)
    held: dict[str, bytes] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)

    def store_instances(self, studies_url: str, instances: Sequence[OutgoingInstance], headers) -> StoreOutcome:
        self.requests.append(Request(studies_url, [i.sop_instance_uid for i in instances], dict(headers)))
        step = self.script.pop(0) if self.script else {}
        if isinstance(step, Exception):
            raise step
        stored, refused = set(), {}
        for instance in instances:
            data = b"".join(instance.chunks())
            assert pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID == instance.sop_instance_uid
            if instance.sop_instance_uid in step:
                refused[instance.sop_instance_uid] = step[instance.sop_instance_uid]
            else:
                self.held[instance.sop_instance_uid] = data
                stored.add(instance.sop_instance_uid)
        return StoreOutcome(frozenset(stored), refused)

    def sent(self) -> list[str]:
        return [uid for request in self.requests for uid in request.sop_instance_uids]


# -- the exchange around it ---------------------------------------------------------------------

@dataclass
class Exchange:
    archive: Archive
    transfers: Transfers
    forwarding: Forwarding
    queue: JobQueue
    runner: JobRunner
    audit: AuditTrail
    pacs: ScriptedPacs


@pytest.fixture
def exchange(database, tmp_path) -> Iterator[Exchange]:
    directory = OrganisationDirectory(OrganisationTable(database))
    for slug in (SENDER, DESTINATION, OTHER):
        directory.add(slug, f"Trust {slug}")
    audit = AuditTrail(database)
    archive = Archive(directory, InstanceIndex(database), FileBlobStore(tmp_path / "blobs"), audit)
    transfers = Transfers(TransferTable(database), archive, directory, audit)
    queue = JobQueue(database)
    pacs = ScriptedPacs()
    forwarding = Forwarding(ForwardingTable(database), queue, archive, transfers, audit, pacs, batch_instances=4,
                            max_attempts=5)
    transfers.notify = lambda connection, event, transfer: (
        forwarding.on_delivered(connection, transfer) if event == "transfer.delivered" else None)
    runner = JobRunner(queue, forwarding.handlers, backoff=Backoff(first=timedelta(0), jitter=0))
    yield Exchange(archive, transfers, forwarding, queue, runner, audit, pacs)
    audit.stop()


def ct_instances(count: int, patient_id: str = "P-FWD") -> list[bytes]:
    """pydicom's CT_small.dcm as `count` new instances of one new study for `patient_id`."""
    study = generate_uid()
    made = []
    for number in range(count):
        dataset = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        dataset.PatientID, dataset.StudyInstanceUID, dataset.InstanceNumber = patient_id, study, number + 1
        dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        out = io.BytesIO()
        dataset.save_as(out, enforce_file_format=True)
        made.append(out.getvalue())
    return made


def uid_of(data: bytes) -> str:
    return pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID


def deliver(exchange: Exchange, objects: list[bytes], urgency: Urgency = Urgency.ROUTINE,
            sender: str = SENDER) -> str:
    """`objects` sent through the outbox from `sender` to the destination, then completed."""
    incoming = []
    for data in objects:
        writer = exchange.archive.blobs.new_writer()
        writer.write(data)
        writer.close()
        [record] = check_parts([PartToCheck(1, str(writer.path), "application/dicom", writer.key, writer.size)],
                               None, 1024)
        incoming.append(Incoming(writer, record))
    exchange.transfers.receive(sender, DESTINATION, incoming, [], SENDING, urgency)
    _, [transfer] = exchange.transfers.outbox(sender, TransferFilter(state="receiving"), 1, 0, SENDING)
    exchange.transfers.take_step(sender, transfer.id, Step.COMPLETE, SENDING)
    return transfer.id


def forwarding_jobs(exchange: Exchange) -> list[Job]:
    return exchange.queue.of_org(DESTINATION, kinds=[FORWARD_JOB])


def run_once(exchange: Exchange, job_id: int) -> Job:
    """One attempt of job `job_id` (it must be due), and where it went."""
    ran = exchange.runner.run_next()
    assert ran is not None and ran.id == job_id
    return exchange.queue.get(job_id)


def run_to_end(exchange: Exchange, job_id: int, attempts: int = 5) -> Job:
    for _ in range(attempts):
        job = run_once(exchange, job_id)
        if job.state in (JobState.SUCCEEDED, JobState.FAILED):
            return job
    raise AssertionError(f"job {job_id} did not finish in {attempts} attempts: {job}")


def states(exchange: Exchange, transfer_id: str) -> dict[str, str]:
    return {record.sop_instance_uid: record.state
            for record in exchange.forwarding.instances(DESTINATION, transfer_id)}


# -- forwarding -----------------------------------------------------------------------------

def test_a_delivered_transfer_is_stored_in_the_pacs_byte_for_byte_and_marked_imported(exchange):
    exchange.forwarding.add(ADMIN, DESTINATION, PACS_ROOT + "/", name="Main PACS", mark_imported=True,
                            authorization="Bearer pacs-token")
    sent = ct_instances(6)
    transfer_id = deliver(exchange, sent)

    [job] = forwarding_jobs(exchange)
    assert job.payload["transfer"] == transfer_id and job.state is JobState.QUEUED
    assert run_once(exchange, job.id).state is JobState.SUCCEEDED

    assert exchange.pacs.held == {uid_of(data): data for data in sent}
    assert [len(request.sop_instance_uids) for request in exchange.pacs.requests] == [4, 2]  # batches of 4
    assert {request.url for request in exchange.pacs.requests} == {PACS_ROOT + "/studies"}
    assert {request.headers["Authorization"] for request in exchange.pacs.requests} == {"Bearer pacs-token"}
    assert set(states(exchange, transfer_id).values()) == {"sent"}
    view = exchange.transfers.view(DESTINATION, transfer_id)
    assert view.transfer.state == "imported"
    assert (view.history[-1].actor, view.history[-1].org) == ("oix", DESTINATION)


def test_forwarding_is_audited_as_an_export_and_the_import_for_the_destination(exchange):
    exchange.forwarding.add(ADMIN, DESTINATION, PACS_ROOT, mark_imported=True)
    transfer_id = deliver(exchange, ct_instances(2))
    run_to_end(exchange, forwarding_jobs(exchange)[0].id)
    exchange.audit.flush()
    now = datetime.now(timezone.utc)
    events = exchange.audit.search(DESTINATION, now - timedelta(minutes=5), now + timedelta(minutes=1))
    by_action = {record.event.action: record.event for record in events}
    assert "forwarding rule" in by_action[AuditAction.SECURITY_CONFIGURATION_CHANGED].detail
    export = by_action[AuditAction.SEND]
    assert (export.transfer, export.actor) == (transfer_id, "oix")
    assert "2 of 2 instance(s) forwarded to " + PACS_ROOT in export.detail
    assert by_action[AuditAction.IMPORT].transfer == transfer_id


def test_running_a_finished_forwarding_again_sends_nothing_new(exchange):
    exchange.forwarding.add(ADMIN, DESTINATION, PACS_ROOT, mark_imported=True)
    transfer_id = deliver(exchange, ct_instances(5))
    first = forwarding_jobs(exchange)[0]
    run_to_end(exchange, first.id)
    requests = len(exchange.pacs.requests)

    again = exchange.queue.enqueue(FORWARD_JOB, DESTINATION, first.payload, max_attempts=3)
    assert run_once(exchange, again).state is JobState.SUCCEEDED
    assert len(exchange.pacs.requests) == requests
    assert exchange.transfers.view(DESTINATION, transfer_id).transfer.state == "imported"


def test_a_pacs_that_goes_away_mid_way_gets_only_what_it_has_not_stored_when_it_returns(exchange):
    exchange.forwarding.add(ADMIN, DESTINATION, PACS_ROOT, mark_imported=True)
    exchange.pacs.script = [{}, PacsUnavailable("could not reach https://pacs.rj1.example.nhs.uk: ConnectError")]
    sent = ct_instances(7)
    transfer_id = deliver(exchange, sent)
    [job] = forwarding_jobs(exchange)

    retried = run_once(exchange, job.id)
    assert retried.state is JobState.QUEUED and "could not reach" in retried.last_error
    first_batch = exchange.pacs.requests[0].sop_instance_uids
    assert sorted(uid for uid, state in states(exchange, transfer_id).items() if state == "sent") == \
        sorted(first_batch)
    pending = [r for r in exchange.forwarding.instances(DESTINATION, transfer_id) if r.state == "pending"]
    assert len(pending) == 3 and all(r.attempts == 1 and "could not reach" in r.last_error for r in pending)
    assert exchange.transfers.view(DESTINATION, transfer_id).transfer.state == "delivered"

    assert run_once(exchange, job.id).state is JobState.SUCCEEDED
    assert sorted(exchange.pacs.requests[-1].sop_instance_uids) == sorted(r.sop_instance_uid for r in pending)
    # Each instance went once, but those of the request that failed, which went again.
    assert Counter(exchange.pacs.sent()) == {**{uid: 1 for uid in first_batch},
                                             **{r.sop_instance_uid: 2 for r in pending}}
    assert exchange.pacs.held.keys() == {uid_of(data) for data in sent}
    assert exchange.transfers.view(DESTINATION, transfer_id).transfer.state == "imported"


def test_per_instance_refusals_retry_out_of_resources_accept_duplicates_and_give_up_on_the_rest(exchange):
    exchange.forwarding.add(ADMIN, DESTINATION, PACS_ROOT, mark_imported=True)
    objects = ct_instances(4)
    sent = [uid_of(data) for data in objects]
    busy, duplicate, unreadable = sent[0], sent[1], sent[2]
    exchange.pacs.script = [{busy: InstanceRefusal(0xA700, "out of resources"),
                             duplicate: InstanceRefusal(0x0111, "already held"),
                             unreadable: InstanceRefusal(0xC000, "cannot understand")}]
    transfer_id = deliver(exchange, objects)
    [job] = forwarding_jobs(exchange)

    assert run_once(exchange, job.id).state is JobState.QUEUED  # the busy one waits for its retry
    assert states(exchange, transfer_id) == {busy: "pending", duplicate: "sent", unreadable: "failed",
                                             sent[3]: "sent"}
    finished = run_once(exchange, job.id)
    assert exchange.pacs.requests[-1].sop_instance_uids == [busy]
    assert finished.state is JobState.FAILED
    assert "refused 1 of 4 instance(s) for good" in finished.last_error
    assert states(exchange, transfer_id)[busy] == "sent"
    assert exchange.transfers.view(DESTINATION, transfer_id).transfer.state == "delivered"  # not imported


def test_a_pacs_that_refuses_the_whole_request_fails_the_job_at_once(exchange):
    exchange.forwarding.add(ADMIN, DESTINATION, PACS_ROOT)
    exchange.pacs.script = [PacsRefused("https://pacs.rj1.example.nhs.uk answered 401: token expired")]
    transfer_id = deliver(exchange, ct_instances(2))
    failed = run_once(exchange, forwarding_jobs(exchange)[0].id)
    assert failed.state is JobState.FAILED and "401: token expired" in failed.last_error
    assert set(states(exchange, transfer_id).values()) == {"pending"}  # not lost: a new rule can send them


def test_rules_forward_only_the_urgencies_modalities_and_senders_they_name(exchange):
    forwarding = exchange.forwarding
    every = forwarding.add(ADMIN, DESTINATION, PACS_ROOT, name="everything")
    emergencies = forwarding.add(ADMIN, DESTINATION, PACS_ROOT, match=RuleMatch(urgencies=("emergency",)))
    ct_from_sender = forwarding.add(ADMIN, DESTINATION, PACS_ROOT,
                                    match=RuleMatch(modalities=("ct",), senders=(SENDER,)))
    forwarding.add(ADMIN, DESTINATION, PACS_ROOT, match=RuleMatch(modalities=("MR",)))
    forwarding.add(ADMIN, DESTINATION, PACS_ROOT, match=RuleMatch(senders=(OTHER,)))

    routine = deliver(exchange, ct_instances(1, "P-ROUTINE"))
    emergency = deliver(exchange, ct_instances(1, "P-EMERGENCY"), Urgency.EMERGENCY)
    queued = {(job.payload["transfer"], job.payload["rule"]) for job in forwarding_jobs(exchange)}
    assert queued == {(routine, every.id), (routine, ct_from_sender.id),
                      (emergency, every.id), (emergency, emergencies.id), (emergency, ct_from_sender.id)}


def test_a_removed_rule_queues_nothing_more_and_its_queued_job_gives_up(exchange):
    rule = exchange.forwarding.add(ADMIN, DESTINATION, PACS_ROOT)
    deliver(exchange, ct_instances(1))
    [job] = forwarding_jobs(exchange)
    exchange.forwarding.remove(ADMIN, DESTINATION, rule.id)
    assert run_once(exchange, job.id).state is JobState.FAILED
    deliver(exchange, ct_instances(1))
    assert len(forwarding_jobs(exchange)) == 1 and exchange.pacs.requests == []
    assert exchange.forwarding.of_org(DESTINATION) == []
    assert exchange.forwarding.of_org(DESTINATION, include_removed=True)[0].disabled_at is not None


def test_a_rejected_transfer_is_not_forwarded(exchange):
    exchange.forwarding.add(ADMIN, DESTINATION, PACS_ROOT)
    transfer_id = deliver(exchange, ct_instances(1))
    exchange.transfers.take_step(DESTINATION, transfer_id, Step.REJECT, ADMIN, reason="wrong patient")
    assert run_once(exchange, forwarding_jobs(exchange)[0].id).state is JobState.FAILED
    assert exchange.pacs.requests == []


def test_listing_says_whether_an_authorization_is_sent_but_never_what_it_is(exchange):
    exchange.forwarding.add(ADMIN, DESTINATION, PACS_ROOT, authorization="Basic c2VjcmV0OnNlY3JldA==")
    [listed] = exchange.forwarding.of_org(DESTINATION)
    assert listed.has_authorization and "c2VjcmV0" not in repr(listed)


@pytest.mark.parametrize(("url", "authorization", "match", "message"), [
    ("", "", RuleMatch(), "needs the PACS's DICOMweb service root"),
    ("ftp://pacs.example/dicom-web", "", RuleMatch(), "https://"),
    ("https://user:secret@pacs.example/dicom-web", "", RuleMatch(), "carries credentials"),
    ("https://pacs.example/dicom-web?token=1", "", RuleMatch(), "no ?query"),
    ("https://pacs.example/dicom-web", "Bearer x\r\nX-Injected: 1", RuleMatch(), "printable ASCII"),
    ("https://pacs.example/dicom-web", "", RuleMatch(urgencies=("soon",)), "'soon' is not an urgency"),
    ("https://pacs.example/dicom-web", "", RuleMatch(modalities=("C T",)), "is not a modality"),
    ("https://pacs.example/dicom-web", "", RuleMatch(senders=("NOPE",)), "no organisation 'NOPE'"),
])
def test_a_rule_that_cannot_work_is_refused_saying_why(exchange, url, authorization, match, message):
    with pytest.raises(InvalidForwardingRule, match=message.replace("?", r"\?")):
        exchange.forwarding.add(ADMIN, DESTINATION, url, authorization=authorization, match=match)
    assert exchange.forwarding.of_org(DESTINATION, include_removed=True) == []


def test_the_runner_forwards_in_the_background(exchange):
    exchange.forwarding.add(ADMIN, DESTINATION, PACS_ROOT, mark_imported=True)
    transfer_id = deliver(exchange, ct_instances(3))
    exchange.runner.poll_interval = 0.02
    exchange.runner.start()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and \
                exchange.transfers.view(DESTINATION, transfer_id).transfer.state != "imported":
            time.sleep(0.02)
    finally:
        exchange.runner.stop()
    assert len(exchange.pacs.held) == 3
    [job] = exchange.forwarding.jobs(DESTINATION)
    assert (job.state, job.instances) == (JobState.SUCCEEDED, {"pending": 0, "sent": 3, "failed": 0})
