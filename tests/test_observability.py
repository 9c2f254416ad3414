"""Operations: /healthz, Prometheus metrics at /metrics with bounded labels, a request id on
every response, and one structured log line per request."""

from __future__ import annotations

import asyncio
import logging
import re

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from oix.observability import logged_path, route_label
from tests.dicomweb_requests import make_study, stow


def metrics(http) -> dict[tuple[str, tuple], float]:
    response = http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_healthz_answers_ok(server, http):
    response = http.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_metrics_count_requests_by_route_without_uids_or_organisations(server, org, http):
    """Labels name the route's shape, so their number stays bounded whatever is stored."""
    study = make_study(instances_per_series=1)
    key = ("oix_http_requests_total", (("method", "GET"), ("route", "/dicomweb/{org}/studies/{study}/series"),
                                       ("status", "200")))
    before = metrics(http).get(key, 0)
    for _ in range(3):
        assert http.get(f"{server.root(org)}/studies/{study.study_uid}/series").status_code == 200
    after = metrics(http)
    assert after[key] == before + 3
    labels = " ".join(value for _, pairs in after for _, value in pairs)
    assert org not in labels and study.study_uid not in labels


def test_metrics_report_instances_and_bytes_held(server, org, http):
    """The holdings gauges follow what the index holds."""
    study = make_study(instances_per_series=3)
    before = metrics(http)
    assert stow(http, server.root(org), study.parts).status_code == 200
    after = metrics(http)
    assert after[("oix_instances_held", ())] == before[("oix_instances_held", ())] + 3
    assert after[("oix_held_bytes", ())] == before[("oix_held_bytes", ())] + sum(map(len, study.parts))
    received = ("oix_http_received_bytes_total", (("route", "/dicomweb/{org}/studies"),))
    assert after[received] - before.get(received, 0) >= sum(map(len, study.parts))


def test_every_response_carries_a_request_id(server, http):
    """A client's X-Request-Id is echoed (at most 64 characters); otherwise one is made."""
    assert http.get("/healthz", headers={"X-Request-Id": "trace-123"}).headers["x-request-id"] == "trace-123"
    assert http.get("/healthz", headers={"X-Request-Id": "x" * 100}).headers["x-request-id"] == "x" * 64
    made = http.get("/healthz").headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", made)
    assert made != http.get("/healthz").headers["x-request-id"]


@pytest.mark.parametrize(("path", "label"), [
    ("/dicomweb/RJ1/studies", "/dicomweb/{org}/studies"),
    ("/dicomweb/RJ1/studies/1.2.3/metadata", "/dicomweb/{org}/studies/{study}/metadata"),
    ("/dicomweb/RJ1/studies/1.2/series/1.3/instances/1.4/frames/1,2",
     "/dicomweb/{org}/studies/{study}/series/{series}/instances/{instance}/frames/{frames}"),
    ("/dicomweb/RJ1/studies/1.2/series/1.3/instances/1.4/bulkdata/00540016/0/00181078",
     "/dicomweb/{org}/studies/{study}/series/{series}/instances/{instance}/bulkdata/{path}"),
    ("/healthz", "/healthz"),
    ("/", "/"),
])
def test_route_labels_replace_identifiers_by_their_role(path, label):
    assert route_label({"path": path}) == label


@pytest.mark.parametrize(("path", "logged"), [
    ("/access/s3cr3t-t0ken", "/access/{token}"),
    ("/access/s3cr3t-t0ken/download", "/access/{token}/download"),
    ("/access/s3cr3t-t0ken/dicomweb/studies/1.2/metadata", "/access/{token}/dicomweb/studies/1.2/metadata"),
    ("/dicomweb/RJ1/studies", "/dicomweb/RJ1/studies"),
])
def test_a_patient_access_token_never_reaches_the_request_log(path, logged):
    """The token of a patient access link is its credential; only its hash is kept (PS3.15)."""
    assert logged_path({"path": path}) == logged


def test_each_request_writes_one_structured_log_line(tmp_path, caplog):
    """One JSON line per request: id, method, path, status, time and bytes each way."""
    from oix.app import create_app
    from oix.settings import Settings

    app = create_app(Settings.from_environment(data_dir=str(tmp_path), parse_workers=0, auth_required=False))

    async def requests() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://oix.test") as client:
            await client.get("/healthz", headers={"X-Request-Id": "log-me"})
            await client.get("/dicomweb/nobody/studies")

    with caplog.at_level(logging.INFO, logger="oix.access"):
        asyncio.run(requests())
    app.state.services.database.dispose()
    lines = [orjson.loads(record.getMessage()) for record in caplog.records if record.name == "oix.access"]
    assert [(line["path"], line["status"]) for line in lines] == [("/healthz", 200), ("/dicomweb/nobody/studies", 404)]
    first = lines[0]
    assert first["request_id"] == "log-me" and first["method"] == "GET"
    assert first["sent"] == len(b'{"status":"ok"}') and first["received"] == 0 and first["ms"] >= 0
