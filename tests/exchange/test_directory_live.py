"""The organisations directory (issue The exchange): code, name, kind, contact, retention and
identity domain; a sender finds a destination by code or name; only an admin changes them."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.servers import OixServer, new_org_slug, start_server, stop_server


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[OixServer]:
    running = start_server(tmp_path_factory.mktemp("directory") / "data", auth=True)
    try:
        yield running
    finally:
        stop_server(running)


def test_an_organisation_carries_its_details_and_is_found_by_code_or_name(server):
    code = new_org_slug("RGT")
    server.cli("org", "add", code, "Cambridge University Hospitals", "--kind", "trust", "--contact",
               "pacs@cuh.example", "--retention-days", "14", "--identity-domain", "CUH-MRN")
    key = server.cli("key", "create", "--org", code, "--role", "viewer").strip()
    with httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as http:
        by_name = http.get("/api/orgs", params={"q": "cambridge"}).json()["organisations"]
        assert {"code": code, "name": "Cambridge University Hospitals", "kind": "trust",
                "contact": "pacs@cuh.example", "retention_days": 14, "identity_domain": "CUH-MRN"} in by_name
        assert [o["code"] for o in http.get("/api/orgs", params={"q": code.lower()}).json()["organisations"]] == [code]
        assert http.get(f"/api/orgs/{code}").json()["retention_days"] == 14


def test_only_an_admin_changes_the_details_and_bad_values_are_refused(server):
    code = new_org_slug("tele")
    server.cli("org", "add", code, "Night Hawk Teleradiology", "--kind", "teleradiology")
    admin = server.cli("key", "create", "--org", code, "--role", "admin").strip()
    viewer = server.cli("key", "create", "--org", code, "--role", "viewer").strip()
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        changed = http.patch(f"/api/orgs/{code}", json={"retention_days": 60, "contact": "ops@nighthawk.example"},
                             headers={"Authorization": f"Bearer {admin}"})
        assert changed.status_code == 200 and changed.json()["retention_days"] == 60
        assert http.patch(f"/api/orgs/{code}", json={"retention_days": 1},
                          headers={"Authorization": f"Bearer {viewer}"}).status_code == 403
        for bad in ({"kind": "hospital"}, {"retention_days": 0}, {"colour": "blue"}):
            refused = http.patch(f"/api/orgs/{code}", json=bad, headers={"Authorization": f"Bearer {admin}"})
            assert refused.status_code == 400, bad
        assert http.get(f"/api/orgs/{code}", headers={"Authorization": f"Bearer {viewer}"}).json()["retention_days"] == 60
