"""Webhooks (issue "The exchange"): an event POSTed as signed JSON to a real receiver on
127.0.0.1, by a job on the queue of a real SQLite file or PostgreSQL database; retried when the
receiver times out, errs or says later, given up when it refuses, never lost in between; and
URLs that cannot be used refused when the webhook is added."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone

import pytest

from exchange.access import ActorKind, Principal, Requester, Role
from exchange.audit import AuditAction, AuditTrail
from exchange.errors import UnknownOrganisation
from exchange.jobs import Backoff, JobRunner
from exchange.organisations import OrganisationDirectory
from exchange.webhooks import (
    InvalidSignature,
    InvalidWebhook,
    UnknownWebhook,
    WebhookEvent,
    Webhooks,
    signature,
    verify_signature,
)
from storage.jobs import Job, JobQueue, JobState
from storage.organisations import OrganisationTable
from storage.webhooks import WebhookTable
from tests.exchange.webhook_receiver import Answer, receiver
from tests.servers import free_port

CLIENT_TIMEOUT = 0.3  # seconds: the receiver's "slow" is past this
ADMIN = Requester(Principal("asha", ActorKind.USER, {"RJ1": Role.ADMIN}), client_address="10.1.2.3")
EMERGENCY = {"transfer": "tr-7Q2", "from": "RYJ", "urgency": "emergency", "studies": 1,
             "link": "https://oix.example.nhs.uk/portal/RJ1/inbox/tr-7Q2"}


@pytest.fixture
def organisations(database):
    directory = OrganisationDirectory(OrganisationTable(database))
    directory.add("RJ1", "Guy's and St Thomas'")
    directory.add("RYJ", "Imperial College Healthcare")
    return directory


@pytest.fixture
def audit(database, organisations):
    trail = AuditTrail(database)
    yield trail
    trail.stop()


@pytest.fixture
def queue(database):
    return JobQueue(database)


@pytest.fixture
def webhooks(database, queue, audit):
    return Webhooks(WebhookTable(database), queue, audit, timeout=CLIENT_TIMEOUT, max_attempts=4)


@pytest.fixture
def runner(queue, webhooks):
    return JobRunner(queue, webhooks.handlers, workers=2, poll_interval=0.02,
                     backoff=Backoff(first=timedelta(seconds=0.05), factor=2, jitter=0), stop_timeout=5)


def run_until_finished(runner: JobRunner, queue: JobQueue, job_id: int, timeout: float = 5.0) -> Job:
    """Run due jobs in this thread until `job_id` has succeeded or failed (bounded in time)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = queue.get(job_id)
        if job.state in (JobState.SUCCEEDED, JobState.FAILED):
            return job
        if runner.run_next() is None:
            time.sleep(0.01)
    raise AssertionError(f"delivery {job_id} did not finish in {timeout} s: {queue.get(job_id)}")


# -- a delivery, and its signature ------------------------------------------------------------

def test_emergency_is_posted_as_signed_json_that_verify_signature_accepts(webhooks, runner, queue):
    with receiver() as pacs:
        added = webhooks.add(ADMIN, "RJ1", pacs.url, [WebhookEvent.TRANSFER_EMERGENCY])
        runner.start()
        try:
            [delivery] = webhooks.notify("RJ1", WebhookEvent.TRANSFER_EMERGENCY, EMERGENCY)
            [request] = pacs.wait_for(1)
        finally:
            runner.stop()

    headers = request.headers
    assert request.path == "/oix-events"
    assert headers["content-type"] == "application/json"
    assert headers["x-oix-event"] == "transfer.emergency"
    assert headers["x-oix-delivery"] == str(delivery)
    sent = json.loads(request.body)
    assert sent["data"] == EMERGENCY
    assert (sent["event"], sent["org"], sent["delivery"]) == ("transfer.emergency", "RJ1", delivery)
    now = datetime.now(timezone.utc)
    verify_signature(added.secret, headers["x-oix-signature"], request.body, now)  # accepted: no exception
    assert queue.get(delivery).state is JobState.SUCCEEDED


def test_tampered_body_other_secret_or_old_timestamp_is_refused():
    secret, body = "whsec_receiver-knows-this", b'{"event":"transfer.delivered"}'
    now = datetime.now(timezone.utc).replace(microsecond=0)
    header = signature(secret, body, int(now.timestamp()))
    verify_signature(secret, header, body, now)

    with pytest.raises(InvalidSignature, match="body was altered or the secret is not this webhook's"):
        verify_signature(secret, header, body.replace(b"delivered", b"emergency"), now)
    with pytest.raises(InvalidSignature, match="body was altered or the secret is not this webhook's"):
        verify_signature("whsec_someone-else", header, body, now)
    with pytest.raises(InvalidSignature, match="600 s old, beyond the 300 s tolerance"):
        verify_signature(secret, header, body, now + timedelta(minutes=10))
    replayed = signature(secret, body, int((now - timedelta(hours=1)).timestamp()))
    with pytest.raises(InvalidSignature, match="replay"):
        verify_signature(secret, replayed, body, now)
    with pytest.raises(InvalidSignature, match="no single t="):
        verify_signature(secret, header.replace("t=", "x="), body, now)


def test_each_attempt_is_signed_afresh_with_the_same_delivery_id_and_body(webhooks, runner, queue):
    with receiver(Answer(503)) as pacs:
        added = webhooks.add(ADMIN, "RJ1", pacs.url, ["transfer.delivered"])
        [delivery] = webhooks.notify("RJ1", "transfer.delivered", {"transfer": "tr-1"})
        run_until_finished(runner, queue, delivery)
        first, second = pacs.wait_for(2)

    assert first.body == second.body
    assert first.headers["x-oix-delivery"] == second.headers["x-oix-delivery"] == str(delivery)
    for request in (first, second):
        verify_signature(added.secret, request.headers["x-oix-signature"], request.body, datetime.now(timezone.utc))


# -- what the receiver's answer means ---------------------------------------------------------

def test_receiver_that_times_out_is_retried_and_the_delivery_kept_until_it_answers(webhooks, runner, queue):
    with receiver(Answer(200, delay=CLIENT_TIMEOUT + 1.0)) as pacs:
        webhooks.add(ADMIN, "RJ1", pacs.url, ["transfer.emergency"])
        [delivery] = webhooks.notify("RJ1", "transfer.emergency", EMERGENCY)

        assert runner.run_next().id == delivery
        kept = queue.get(delivery)
        assert (kept.state, kept.attempts) == (JobState.QUEUED, 1)
        origin = pacs.url.removesuffix("/oix-events")  # the path is never quoted: it may hold a token
        assert kept.last_error.startswith(f"{origin} did not answer within {CLIENT_TIMEOUT:g} s")

        done = run_until_finished(runner, queue, delivery)
        assert len(pacs.wait_for(2)) == 2

    assert (done.state, done.attempts) == (JobState.SUCCEEDED, 2)


def test_500_then_200_is_retried_and_delivered(webhooks, runner, queue):
    with receiver(Answer(500, body=b"database is down\n")) as pacs:
        webhooks.add(ADMIN, "RJ1", pacs.url, ["transfer.delivered"])
        [delivery] = webhooks.notify("RJ1", "transfer.delivered", {"transfer": "tr-2"})

        runner.run_next()
        failed_once = queue.get(delivery)
        done = run_until_finished(runner, queue, delivery)

    assert failed_once.state is JobState.QUEUED
    assert failed_once.last_error.endswith("answered 500 Internal Server Error: database is down")
    assert (done.state, done.attempts) == (JobState.SUCCEEDED, 2)


def test_410_gives_up_at_once(webhooks, runner, queue):
    with receiver(Answer(410, body=b"this endpoint was retired")) as pacs:
        webhooks.add(ADMIN, "RJ1", pacs.url, ["transfer.delivered"])
        [delivery] = webhooks.notify("RJ1", "transfer.delivered", {"transfer": "tr-3"})
        done = run_until_finished(runner, queue, delivery)
        time.sleep(0.2)  # backoff x 4: time enough for a retry that must not come
        assert len(pacs.requests) == 1

    assert (done.state, done.attempts) == (JobState.FAILED, 1)
    assert done.last_error.endswith("answered 410 Gone: this endpoint was retired; of the refusals only 408, 429 "
                                    "and 5xx are retried")


def test_429_retry_after_is_honoured(webhooks, runner, queue):
    with receiver(Answer(429, headers={"Retry-After": "3"})) as pacs:
        webhooks.add(ADMIN, "RJ1", pacs.url, ["transfer.delivered"])
        [delivery] = webhooks.notify("RJ1", "transfer.delivered", {"transfer": "tr-4"})
        before = datetime.now(timezone.utc)
        runner.run_next()

    waiting = queue.get(delivery)
    assert waiting.state is JobState.QUEUED
    assert "answered 429 Too Many Requests" in waiting.last_error
    # 3 s as the receiver asked, not the 0.05 s backoff.
    assert timedelta(seconds=2.9) <= waiting.run_after - before <= timedelta(seconds=4)


def test_redirect_is_not_followed_and_gives_up(webhooks, runner, queue):
    with receiver(Answer(301, headers={"Location": "http://127.0.0.1:1/elsewhere"})) as pacs:
        webhooks.add(ADMIN, "RJ1", pacs.url, ["transfer.delivered"])
        [delivery] = webhooks.notify("RJ1", "transfer.delivered", {"transfer": "tr-5"})
        done = run_until_finished(runner, queue, delivery)

    assert done.state is JobState.FAILED
    assert "redirects are not followed: change the webhook's URL" in done.last_error


def test_unreachable_receiver_is_retried_then_given_up_after_the_last_attempt(webhooks, runner, queue):
    nowhere = f"http://127.0.0.1:{free_port()}/oix-events"  # nothing listens there
    webhooks.add(ADMIN, "RJ1", nowhere, ["transfer.delivered"])
    [delivery] = webhooks.notify("RJ1", "transfer.delivered", {"transfer": "tr-6"})

    done = run_until_finished(runner, queue, delivery)

    assert (done.state, done.attempts) == (JobState.FAILED, 4)
    assert done.last_error.startswith("gave up after 4 attempts: could not reach http://127.0.0.1:")
    assert "ConnectError" in done.last_error


# -- subscriptions ----------------------------------------------------------------------------

def test_notify_queues_one_delivery_per_subscribed_webhook_of_the_organisation(webhooks, queue):
    emergencies = webhooks.add(ADMIN, "RJ1", "https://pacs.rj1.example.nhs.uk/events", ["transfer.emergency"])
    both = webhooks.add(ADMIN, "RJ1", "https://ris.rj1.example.nhs.uk/events",
                        ["transfer.emergency", "transfer.delivered"])
    webhooks.add(ADMIN, "RJ1", "https://archive.rj1.example.nhs.uk/events", ["transfer.delivered"])
    webhooks.add(ADMIN, "RYJ", "https://pacs.ryj.example.nhs.uk/events", ["transfer.emergency"])
    removed = webhooks.add(ADMIN, "RJ1", "https://old.rj1.example.nhs.uk/events", ["transfer.emergency"])
    webhooks.remove(ADMIN, "RJ1", removed.subscription.id)

    deliveries = webhooks.notify("RJ1", "transfer.emergency", EMERGENCY)

    assert sorted(queue.get(job_id).payload["webhook"] for job_id in deliveries) == [
        emergencies.subscription.id, both.subscription.id]
    assert {queue.get(job_id).org for job_id in deliveries} == {"RJ1"}
    assert [(item.id, item.event, item.state) for item in webhooks.deliveries("RJ1")] == [
        (job_id, "transfer.emergency", JobState.QUEUED) for job_id in sorted(deliveries, reverse=True)]
    assert webhooks.deliveries("RYJ") == []


def test_notify_inside_a_rolled_back_transaction_queues_nothing(database, webhooks, queue):
    webhooks.add(ADMIN, "RJ1", "https://pacs.rj1.example.nhs.uk/events", ["transfer.delivered"])

    with pytest.raises(RuntimeError, match="the transfer's commit failed"):
        with database.write() as connection:
            assert len(webhooks.notify("RJ1", "transfer.delivered", {"transfer": "tr-8"}, connection=connection)) == 1
            raise RuntimeError("the transfer's commit failed")

    assert webhooks.deliveries("RJ1") == []


def test_delivery_to_a_webhook_removed_meanwhile_is_given_up(webhooks, runner, queue):
    with receiver() as pacs:
        added = webhooks.add(ADMIN, "RJ1", pacs.url, ["transfer.delivered"])
        [delivery] = webhooks.notify("RJ1", "transfer.delivered", {"transfer": "tr-9"})
        webhooks.remove(ADMIN, "RJ1", added.subscription.id)
        done = run_until_finished(runner, queue, delivery)
        assert pacs.requests == []

    assert done.state is JobState.FAILED
    assert done.last_error == f"webhook {added.subscription.id} was removed before this delivery was made"


def test_secret_is_shown_once_and_never_listed(webhooks):
    added = webhooks.add(ADMIN, "RJ1", "https://pacs.rj1.example.nhs.uk/events", ["transfer.emergency"],
                         description="PACS emergency pager")

    assert added.secret.startswith("whsec_") and len(added.secret) > 40
    [listed] = webhooks.of_org("RJ1")
    assert listed == added.subscription
    assert added.secret not in repr(listed)
    assert (listed.url, listed.events, listed.created_by) == (
        "https://pacs.rj1.example.nhs.uk/events", (WebhookEvent.TRANSFER_EMERGENCY,), "asha")
    assert webhooks.add(ADMIN, "RJ1", "https://pacs.rj1.example.nhs.uk/events",
                        ["transfer.emergency"]).secret != added.secret


def test_adding_and_removing_a_webhook_is_audited_without_its_secret_or_path(webhooks, audit):
    added = webhooks.add(ADMIN, "RJ1", "https://hooks.example.com/T0KEN-IN-PATH", ["transfer.emergency"])
    webhooks.remove(ADMIN, "RJ1", added.subscription.id)
    audit.flush()

    records = audit.search("RJ1", datetime.now(timezone.utc) - timedelta(hours=1),
                           datetime.now(timezone.utc) + timedelta(hours=1))
    details = [record.event.detail for record in reversed(records)]
    assert details == [f"webhook {added.subscription.id} added: https://hooks.example.com for transfer.emergency",
                       f"webhook {added.subscription.id} removed"]
    assert {record.event.action for record in records} == {AuditAction.SECURITY_CONFIGURATION_CHANGED}
    assert {(record.event.actor, record.event.client_address) for record in records} == {("asha", "10.1.2.3")}


def test_removing_another_organisations_webhook_is_refused(webhooks):
    theirs = webhooks.add(ADMIN, "RYJ", "https://pacs.ryj.example.nhs.uk/events", ["transfer.emergency"])

    with pytest.raises(UnknownWebhook, match=f"organisation 'RJ1' has no webhook {theirs.subscription.id}"):
        webhooks.remove(ADMIN, "RJ1", theirs.subscription.id)
    assert webhooks.of_org("RYJ") == [theirs.subscription]


@pytest.mark.parametrize(("url", "message"), [
    ("ftp://pacs.example.nhs.uk/events", r"starts with https:// \(or http://\), not 'ftp:'"),
    ("pacs.example.nhs.uk/events", r"starts with https:// \(or http://\), not 'no scheme'"),
    ("https://oix:s3cret@pacs.example.nhs.uk/events", r"carries credentials \(user:password@host\): remove them"),
    ("https:///events", "has no host"),
    ("https://pacs.example.nhs.uk:99999/events", "cannot be parsed"),
    ("https://pacs.example.nhs.uk/events#top", "#fragment, which is never sent"),
    ("https://pacs.example.nhs.uk/my events", "spaces or control characters"),
    ("", "a webhook needs a URL"),
])
def test_unusable_url_is_refused_on_add_with_a_clear_message(webhooks, url, message):
    with pytest.raises(InvalidWebhook, match=message) as refused:
        webhooks.add(ADMIN, "RJ1", url, ["transfer.emergency"])

    assert "s3cret" not in str(refused.value)
    assert webhooks.of_org("RJ1") == []


def test_unknown_event_or_organisation_is_refused_on_add(webhooks):
    with pytest.raises(InvalidWebhook, match="'study.deleted' is not a webhook event: choose from "
                                             "transfer.emergency, transfer.delivered"):
        webhooks.add(ADMIN, "RJ1", "https://pacs.example.nhs.uk/events", ["study.deleted"])
    with pytest.raises(InvalidWebhook, match="at least one event"):
        webhooks.add(ADMIN, "RJ1", "https://pacs.example.nhs.uk/events", [])
    with pytest.raises(UnknownOrganisation):
        webhooks.add(ADMIN, "NOPE", "https://pacs.example.nhs.uk/events", ["transfer.emergency"])

