"""Usage metering on a live server (issue The exchange): per organisation and calendar month,
the transfers sent and received and the studies, instances and bytes they carried, exact to the
byte; by month through the API and `oix usage`; unchanged when retention removes the copies."""

from __future__ import annotations

import json
import secrets
from datetime import datetime, timedelta, timezone

import pytest
from pydicom.uid import generate_uid

from exchange.usage import Month
from tests.dicomweb_requests import stow
from tests.exchange.test_transfers_live import Party, instance
from tests.servers import OixServer

NOTHING = {"transfers": 0, "studies": 0, "instances": 0, "bytes": 0}


@pytest.fixture(scope="module")
def server(start_dedicated_server) -> OixServer:
    return start_dedicated_server(auth=True)


def usage(party: Party, **params) -> dict:
    response = party.http.get(f"/api/orgs/{party.slug}/usage", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def test_usage_counts_exactly_what_each_side_sent_and_received_in_the_month(server):
    district, tertiary, bystander = Party(server, "district"), Party(server, "tertiary"), Party(server, "bystander")
    patient, first, second, held = f"P{secrets.token_hex(4)}", generate_uid(), generate_uid(), generate_uid()
    streamed = [instance(patient, first), instance(patient, first), instance(patient, second)]
    own = [instance(patient, held), instance(patient, held)]
    assert stow(district.http, f"/dicomweb/{district.slug}", own).status_code == 200
    # One outbox stream of two studies (three objects).
    assert stow(district.http, f"/dicomweb/{district.slug}/outbox/{tertiary.slug}", streamed).status_code == 200
    outbox = tertiary.inbox()[0]["id"]
    assert district.step(outbox, "complete").status_code == 200
    # The district's own study from its holdings, and the tertiary centre's reply from its holdings.
    for sender, destination, study in ((district, tertiary, held), (tertiary, district, first)):
        response = sender.http.post(f"/api/orgs/{sender.slug}/transfers",
                                    json={"destination": destination.slug, "studies": [study]})
        assert response.status_code == 201, response.text
    month = str(Month.of(datetime.fromisoformat(tertiary.inbox()[0]["created_at"])))

    sent_by_district = {"transfers": 2, "studies": 3, "instances": 5,
                        "bytes": sum(map(len, streamed)) + sum(map(len, own))}
    sent_by_tertiary = {"transfers": 1, "studies": 1, "instances": 2, "bytes": sum(map(len, streamed[:2]))}
    assert usage(district, **{"from": month, "to": month})["months"] == \
        [{"month": month, "sent": sent_by_district, "received": sent_by_tertiary}]
    assert usage(tertiary, **{"from": month, "to": month})["months"] == \
        [{"month": month, "sent": sent_by_tertiary, "received": sent_by_district}]
    assert usage(bystander, **{"from": month, "to": month})["months"] == \
        [{"month": month, "sent": NOTHING, "received": NOTHING}]

    # Metered when sent: retention removing the received copies changes nothing.
    server.cli("retention", "run", "--now", (datetime.now(timezone.utc) + timedelta(days=400)).isoformat())
    assert usage(tertiary, **{"from": month, "to": month})["months"][0]["received"] == sent_by_district

    table = server.cli("usage", "--org", district.slug, "--month", month).splitlines()
    assert table[0].split()[:4] == ["month", "organisation", "transfers", "sent"]
    assert table[1].split() == [month, district.slug, *map(str, [*sent_by_district.values(),
                                                                   *sent_by_tertiary.values()])]
    as_json = json.loads(server.cli("usage", "--org", bystander.slug, "--month", month, "--json"))
    assert as_json == [{"org": bystander.slug, "month": month, "sent": NOTHING, "received": NOTHING}]


def test_usage_is_by_calendar_month(server):
    district, tertiary = Party(server, "district"), Party(server, "tertiary")
    stow(district.http, f"/dicomweb/{district.slug}/outbox/{tertiary.slug}",
         [instance(f"P{secrets.token_hex(4)}", generate_uid())])
    this = Month.of(datetime.fromisoformat(tertiary.inbox()[0]["created_at"]))
    before, after = this.minus(1), this.next()

    answered = usage(tertiary, **{"from": str(before), "to": str(after)})

    assert (answered["from"], answered["to"]) == (str(before), str(after))
    assert [(month["month"], month["received"]["transfers"]) for month in answered["months"]] == \
        [(str(before), 0), (str(this), 1), (str(after), 0)]
    assert [month["month"] for month in usage(tertiary)["months"]] == \
        [str(Month.of(datetime.now(timezone.utc)).minus(back)) for back in range(11, -1, -1)]
    assert usage(tertiary, **{"from": "2020-01", "to": "2020-01"})["months"][0]["received"] == NOTHING


def test_usage_refuses_a_period_it_cannot_read(server):
    district = Party(server, "district")
    for params in ({"from": "2026-13"}, {"from": "November"}, {"from": "2026-06", "to": "2026-01"},
                   {"from": "2000-01", "to": "2026-01"}):
        response = district.http.get(f"/api/orgs/{district.slug}/usage", params=params)
        assert response.status_code == 400, (params, response.text)
