"""Retention on a live server (issue The exchange): with the clock advanced past the
destination's retention period, its received copies are gone from its index and, when no one
else references them, from disk; retained transfers, studies it holds for another reason, the
sender's own holdings and a third organisation's data all stay. A dry run changes nothing."""

from __future__ import annotations

import io
import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pydicom
import pytest
from pydicom.uid import generate_uid
from sqlalchemy import update

from storage.content_key import content_key
from storage.database import Database, database_url
from storage.tables import TransferEvent
from tests.dicomweb_requests import stow
from tests.exchange.test_transfers_live import Party, instance
from tests.servers import OixServer

RETENTION_DAYS = 7
ALL_SYNTAXES = {"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}


@pytest.fixture(scope="module")
def server(start_dedicated_server) -> OixServer:
    return start_dedicated_server(auth=True)


@dataclass
class Sent:
    """One study as sent: its UID, the bytes of its one instance, and that blob's key."""

    study_uid: str
    data: bytes

    @property
    def blob_key(self) -> str:
        return content_key(self.data)

    @property
    def path(self) -> str:
        parsed = pydicom.dcmread(io.BytesIO(self.data))
        return f"studies/{parsed.StudyInstanceUID}/series/{parsed.SeriesInstanceUID}/instances/{parsed.SOPInstanceUID}"


def new_study(patient: str, study_uid: str | None = None) -> Sent:
    study_uid = study_uid or generate_uid()
    return Sent(study_uid, instance(patient, study_uid))


def through_outbox(sender: Party, destination: Party, sent: Sent, patient: str) -> str:
    """Send one object through the outbox and complete the stream: the transfer's id."""
    response = stow(sender.http, f"/dicomweb/{sender.slug}/outbox/{destination.slug}", [sent.data])
    assert response.status_code == 200, response.text
    receiving = destination.inbox(patient=patient, state="receiving")
    assert len(receiving) == 1
    assert sender.step(receiving[0]["id"], "complete").json()["state"] == "delivered"
    return receiving[0]["id"]


def from_holdings(sender: Party, destination: Party, study_uid: str) -> str:
    response = sender.http.post(f"/api/orgs/{sender.slug}/transfers",
                                json={"destination": destination.slug, "studies": [study_uid]})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def retention_run(server: OixServer, now: datetime, *flags: str) -> dict:
    return json.loads(server.cli("retention", "run", "--now", now.isoformat(), "--json", *flags))


def expired_for(report: dict, destination: str) -> dict[str, dict]:
    """The report's transfers to `destination` (other tests' organisations share the server)."""
    return {item["transfer"]: item for item in report["expired"] if item["destination"] == destination}


def retrieve(party: Party, sent: Sent):
    return party.http.get(f"/dicomweb/{party.slug}/{sent.path}", headers=ALL_SYNTAXES)


def found_by_qido(party: Party, study_uid: str) -> list:
    response = party.http.get(f"/dicomweb/{party.slug}/studies", params={"StudyInstanceUID": study_uid})
    assert response.status_code in (200, 204), response.text
    return response.json() if response.status_code == 200 else []


@dataclass
class Exchange:
    """A district hospital that sends a tertiary centre studies in every way there is, the
    tertiary centre (retention RETENTION_DAYS) retaining one and forwarding one to a third."""

    district: Party
    tertiary: Party
    third: Party
    own: Sent  # the district's own study, sent from its holdings
    gone: Sent  # sent through the outbox only: no one else references its blob
    onward: Sent  # sent through the outbox, then sent on by the tertiary centre to the third
    kept: Sent  # its transfer is retained
    kept_again: Sent  # more of the kept study, in a later transfer that expires
    annotated: Sent  # received, then the tertiary centre stored an object of its own into it
    annotation: Sent
    expiring: dict[str, str]  # transfer id → what it brought
    retained: str
    forwarded: str  # tertiary → third: the third organisation's retention (30 days) has not passed


@pytest.fixture
def exchange(server) -> Iterator[Exchange]:
    district, tertiary, third = Party(server, "district"), Party(server, "tertiary"), Party(server, "third")
    server.cli("org", "set", tertiary.slug, "--retention-days", str(RETENTION_DAYS))
    patients = {name: f"P{secrets.token_hex(4)}" for name in ("own", "gone", "onward", "kept", "annotated")}
    own, gone, onward, kept = (new_study(patients[name]) for name in ("own", "gone", "onward", "kept"))
    kept_again = new_study(patients["kept"], kept.study_uid)
    annotated = new_study(patients["annotated"])
    annotation = new_study(patients["annotated"], annotated.study_uid)

    assert stow(district.http, f"/dicomweb/{district.slug}", [own.data]).status_code == 200
    expiring = {from_holdings(district, tertiary, own.study_uid): "own",
                through_outbox(district, tertiary, gone, patients["gone"]): "gone",
                through_outbox(district, tertiary, onward, patients["onward"]): "onward"}
    forwarded = from_holdings(tertiary, third, onward.study_uid)
    retained = through_outbox(district, tertiary, kept, patients["kept"])
    retain = tertiary.step(retained, "retain")
    assert retain.status_code == 200 and retain.json()["retained"] is True, retain.text
    expiring[through_outbox(district, tertiary, kept_again, patients["kept"])] = "kept again"
    expiring[through_outbox(district, tertiary, annotated, patients["annotated"])] = "annotated"
    assert stow(tertiary.http, f"/dicomweb/{tertiary.slug}", [annotation.data]).status_code == 200
    yield Exchange(district, tertiary, third, own, gone, onward, kept, kept_again, annotated, annotation, expiring,
                   retained, forwarded)
    for party in (district, tertiary, third):
        party.http.close()


def after_retention() -> datetime:
    return datetime.now(timezone.utc) + timedelta(days=RETENTION_DAYS + 1)


def test_expired_copies_go_from_index_and_disk_and_everything_else_stays(server, exchange):
    ex = exchange
    everything = (ex.own, ex.gone, ex.onward, ex.kept, ex.kept_again, ex.annotated, ex.annotation)
    assert {sent.blob_key for sent in everything} <= server.blob_files()

    report = expired_for(retention_run(server, after_retention()), ex.tertiary.slug)

    assert set(report) == set(ex.expiring)
    removed = {ex.expiring[transfer]: item for transfer, item in report.items()}
    assert [removed[name]["studies"] for name in ("own", "gone", "onward")] == \
        [[ex.own.study_uid], [ex.gone.study_uid], [ex.onward.study_uid]]
    assert removed["kept again"]["studies"] == [] and removed["kept again"]["kept"] == [ex.kept.study_uid]
    assert removed["annotated"]["studies"] == [] and removed["annotated"]["kept"] == [ex.annotated.study_uid]
    assert sum(item["instances"] for item in report.values()) == 3
    assert sum(item["bytes"] for item in report.values()) == len(ex.own.data) + len(ex.gone.data) + len(ex.onward.data)
    assert [removed[name]["blobs"] for name in ("own", "gone", "onward")] == [0, 1, 0]

    # The tertiary centre's expired copies are gone from its index...
    for sent in (ex.own, ex.gone, ex.onward):
        assert found_by_qido(ex.tertiary, sent.study_uid) == []
        assert retrieve(ex.tertiary, sent).status_code == 404
    # ...and from disk where no one else references them.
    blobs = server.blob_files()
    assert ex.gone.blob_key not in blobs
    assert {ex.own.blob_key, ex.onward.blob_key} <= blobs
    # The retained transfer's study, and the study it stored into itself, stay whole.
    for sent in (ex.kept, ex.kept_again, ex.annotated, ex.annotation):
        assert retrieve(ex.tertiary, sent).status_code == 200
        assert sent.blob_key in blobs
    # The sender's own holdings, byte for byte, and the third organisation's copy.
    district_copy = retrieve(ex.district, ex.own)
    assert district_copy.status_code == 200 and ex.own.data in district_copy.content
    third_copy = retrieve(ex.third, ex.onward)
    assert third_copy.status_code == 200 and ex.onward.data in third_copy.content
    assert [study["0020000D"]["Value"][0] for study in ex.third.dicomweb().search_for_studies()] == \
        [ex.onward.study_uid]


def test_expired_transfers_show_expired_to_both_sides_and_are_audited_for_the_destination(server, exchange):
    ex = exchange
    retention_run(server, after_retention())

    inbox = {transfer["id"]: transfer for transfer in ex.tertiary.inbox()}
    outbox = {transfer["id"]: transfer for transfer in ex.district.outbox()}
    for transfer in ex.expiring:
        assert inbox[transfer]["state"] == outbox[transfer]["state"] == "expired"
    assert inbox[ex.retained]["state"] == "delivered"
    assert ex.third.inbox()[0]["state"] == "delivered"  # the third organisation's retention has not passed
    history = ex.district.transfer(next(iter(ex.expiring))).json()["history"]
    assert history[-1]["state"] == "expired" and history[-1]["actor"].startswith("cli:")

    audit = ex.tertiary.http.get(f"/api/orgs/{ex.tertiary.slug}/audit", params={"action": "expire"},
                                 headers={"Authorization": f"Bearer {ex.tertiary.admin}"})
    assert audit.status_code == 200, audit.text
    events = {event["transfer"]: event for event in audit.json()["events"]}
    assert set(events) == set(ex.expiring)
    gone = next(transfer for transfer, name in ex.expiring.items() if name == "gone")
    assert (events[gone]["event_id"], events[gone]["event_action_code"], events[gone]["org"]) == \
        ("110105", "D", ex.tertiary.slug)
    assert ex.gone.study_uid in events[gone]["studies"]
    district_events = ex.district.http.get(f"/api/orgs/{ex.district.slug}/audit", params={"action": "expire"},
                                           headers={"Authorization": f"Bearer {ex.district.admin}"})
    assert district_events.json()["events"] == []


def test_a_dry_run_reports_what_would_go_and_changes_nothing(server, exchange):
    ex = exchange
    blobs = server.blob_files()
    moment = after_retention()

    dry = expired_for(retention_run(server, moment, "--dry-run"), ex.tertiary.slug)

    assert server.blob_files() == blobs
    assert retrieve(ex.tertiary, ex.gone).status_code == 200
    assert all(transfer["state"] == "delivered" for transfer in ex.tertiary.inbox())
    real = expired_for(retention_run(server, moment), ex.tertiary.slug)
    assert dry == real and set(real) == set(ex.expiring)
    assert retrieve(ex.tertiary, ex.gone).status_code == 404


def test_nothing_expires_within_the_retention_period(server, exchange):
    ex = exchange
    report = retention_run(server, datetime.now(timezone.utc) + timedelta(days=RETENTION_DAYS - 1))
    assert expired_for(report, ex.tertiary.slug) == {}
    assert retrieve(ex.tertiary, ex.gone).status_code == 200


def test_a_released_transfer_expires_at_the_next_run(server, exchange):
    ex = exchange
    retention_run(server, after_retention())
    assert retrieve(ex.tertiary, ex.kept).status_code == 200

    released = ex.tertiary.step(ex.retained, "release")
    assert released.status_code == 200 and released.json()["retained"] is False
    report = expired_for(retention_run(server, after_retention()), ex.tertiary.slug)

    assert list(report) == [ex.retained]
    assert sorted(report[ex.retained]["studies"]) == [ex.kept.study_uid]
    assert report[ex.retained]["instances"] == 2  # both transfers' objects of the study
    assert retrieve(ex.tertiary, ex.kept).status_code == 404
    assert ex.kept.blob_key not in server.blob_files() and ex.kept_again.blob_key not in server.blob_files()
    history = ex.tertiary.transfer(ex.retained).json()["history"]
    assert [event["detail"].split(":")[0] for event in history[-3:-1]] == ["retained", "released"]


def test_only_the_destination_retains_and_not_once_expired(server, exchange):
    ex = exchange
    assert ex.district.step(ex.retained, "retain").status_code == 409  # the sender's copies are its own
    assert ex.third.step(ex.retained, "retain").status_code == 404  # another organisation's transfer
    retention_run(server, after_retention())
    expired = next(iter(ex.expiring))
    refused = ex.tertiary.step(expired, "retain")
    assert refused.status_code == 409 and "expired" in refused.json()["error"]


def test_the_server_expires_copies_in_the_background(start_dedicated_server):
    """The server runs retention itself every OIX_RETENTION_INTERVAL_SECONDS. The clock cannot be
    advanced in a running server, so the transfer's delivery is moved back in the index instead."""
    server = start_dedicated_server(auth=True, env={"OIX_RETENTION_INTERVAL_SECONDS": "0.5"})
    district, tertiary = Party(server, "district"), Party(server, "tertiary")
    patient = f"P{secrets.token_hex(4)}"
    sent = new_study(patient)
    transfer = through_outbox(district, tertiary, sent, patient)
    index = Database(database_url(server.database_url, server.data_dir))
    try:
        with index.write() as connection:
            events = TransferEvent.__table__
            connection.execute(update(events).where(events.c.transfer_id == transfer, events.c.state == "delivered")
                               .values(at=datetime.now(timezone.utc) - timedelta(days=31)))
    finally:
        index.dispose()

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and tertiary.transfer(transfer).json()["state"] != "expired":
        time.sleep(0.25)

    assert tertiary.transfer(transfer).json()["state"] == "expired"
    assert tertiary.transfer(transfer).json()["history"][-1]["actor"] == "oix"
    assert retrieve(tertiary, sent).status_code == 404
    assert sent.blob_key not in server.blob_files()
