"""issue 6, the audit and admin pages, driven in Debian's Chromium against a live server: the
audit trail filtered and downloaded as CSV (the audit API's format), API keys created (shown
once) and revoked, a role changed, forwarding rules and webhooks added and removed, retention
set, usage charted; each page checked with axe-core (no serious or critical WCAG 2.1 AA
violation) and kept as a screenshot. Every change is audited as the API's are."""

from __future__ import annotations

import csv
import io

import httpx
import pytest

from exchange.audit_formats import CSV_COLUMNS
from tests.browser import screenshot_and_check
from tests.dicomweb_requests import stow
from tests.portal.conftest import Portal
from tests.real_files import by_name
from tests.servers import run_cli

HTTP_TIMEOUT = 30
ADMIN_PAGES = ("", "/keys", "/forwarding", "/webhooks", "/usage", "/patient-access")


@pytest.fixture(scope="module")
def sent(portal: Portal) -> str:
    """A sends B a real study through its outbox service root: a transfer for the usage chart."""
    key = run_cli(["key", "create", "--org", portal.a, "--role", "sender"], portal.cli_env()).stdout.strip()
    item = by_name("pydicom/CT_small.dcm")
    with httpx.Client(base_url=portal.base_url, timeout=HTTP_TIMEOUT,
                      headers={"Authorization": f"Bearer {key}"}) as http:
        stored = stow(http, f"/dicomweb/{portal.a}/outbox/{portal.b}", [item.data])
        assert stored.status_code == 200, stored.text[:300]
    return item.study_uid


def test_every_admin_page_is_accessible(portal, sent, signed_in, request):
    page = signed_in("b-admin")
    for suffix in ADMIN_PAGES:
        response = page.goto(f"/orgs/{portal.b}/admin{suffix}")
        assert response.status == 200, suffix
        screenshot_and_check(page, request.node.nodeid, "admin" + suffix.replace("/", "-"))


def test_only_admins_reach_the_admin_and_audit_pages(portal, signed_in, browser):
    viewer = signed_in("b-viewer")
    for path in (f"/orgs/{portal.b}/admin", f"/orgs/{portal.b}/admin/keys", f"/orgs/{portal.b}/audit"):
        assert viewer.goto(path).status == 403
    # Another organisation's admin is not an admin here.
    assert signed_in("a-admin").goto(f"/orgs/{portal.b}/admin").status == 403
    with httpx.Client(base_url=portal.base_url, timeout=HTTP_TIMEOUT) as http:
        anonymous = http.get(f"/orgs/{portal.b}/admin/keys")
        assert anonymous.status_code == 303 and anonymous.headers["location"].startswith("/login?next=")


def test_audit_page_filters_and_downloads_the_csv(portal, signed_in, request):
    """The filter narrows the events; the CSV has the audit API's columns and the same selection."""
    signed_in("b-viewer")  # a sign-in: an authenticate event of B
    page = signed_in("b-admin")
    page.goto(f"/orgs/{portal.b}/audit")
    screenshot_and_check(page, request.node.nodeid, "audit")
    viewer = portal.accounts["b-viewer"].username
    page.select_option("#audit-action", "authenticate")
    page.fill("#audit-actor", viewer)
    page.select_option("#audit-outcome", "success")
    page.click("form[aria-label='Filter the audit trail'] button[type=submit]")
    page.wait_for_url("**action=authenticate**")
    rows = page.locator("tbody tr")
    assert rows.count() >= 1
    for index in range(rows.count()):
        text = rows.nth(index).inner_text()
        assert "authenticate" in text and viewer in text and "success" in text, text
    with page.expect_download() as download:
        page.click("text=Download CSV")
    lines = list(csv.reader(io.StringIO(download.value.path().read_text(encoding="utf-8"))))
    assert tuple(lines[0]) == CSV_COLUMNS
    assert len(lines) - 1 == rows.count()
    column = {name: index for index, name in enumerate(CSV_COLUMNS)}
    assert all(line[column["action"]] == "authenticate" and line[column["actor"]] == viewer
               and line[column["outcome"]] == "0" for line in lines[1:])
    # Failures only: the b-viewer signed in successfully, so none of theirs is left.
    page.select_option("#audit-outcome", "failure")
    page.click("form[aria-label='Filter the audit trail'] button[type=submit]")
    page.wait_for_url("**outcome=failure**")
    assert page.inner_text("#audit-total").startswith("0 events")
    # Reading the trail is itself audited (PS3.15 A.5.3.2 Audit Log Used).
    page.goto(f"/orgs/{portal.b}/audit?action=audit-log-used")
    assert "portal csv" in page.inner_text("tbody")


def test_admin_creates_a_key_shown_once_and_revokes_it(portal, signed_in, request):
    page = signed_in("b-admin")
    page.goto(f"/orgs/{portal.b}/admin/keys")
    page.fill("#key-name", "Reporting PACS")
    page.select_option("#key-role", "viewer")
    page.click("text=Create key")
    secret = page.input_value("#issued-secret")
    screenshot_and_check(page, request.node.nodeid, "key-created")
    key_id = secret.split("_")[1]
    with httpx.Client(base_url=portal.base_url, timeout=HTTP_TIMEOUT,
                      headers={"Authorization": f"Bearer {secret}"}) as http:
        assert http.get(f"/dicomweb/{portal.b}/studies").status_code == 200
        page.goto(f"/orgs/{portal.b}/admin/keys")
        assert secret not in page.content()  # shown once
        page.click(f"button:has-text('Revoke key {key_id}')")
        page.wait_for_selector("text=The API key was revoked")
        assert http.get(f"/dicomweb/{portal.b}/studies").status_code == 401


def test_admin_changes_a_members_role(portal, signed_in):
    page = signed_in("b-admin")
    member = portal.accounts["b-viewer"].username
    page.goto(f"/orgs/{portal.b}/admin")
    row = page.locator("tbody tr", has_text=member)
    assert row.locator("td.role").inner_text() == "viewer"
    row.locator("select").select_option("sender")
    row.locator("button").click()
    page.wait_for_selector("text=The role was changed")
    assert page.locator("tbody tr", has_text=member).locator("td.role").inner_text() == "sender"
    page.goto(f"/orgs/{portal.b}/audit?action=roles-changed")
    assert f"{member} given the sender role" in page.inner_text("tbody")
    # An account that does not exist cannot be given a role.
    page.goto(f"/orgs/{portal.b}/admin")
    page.fill("#grant-username", "nobody-by-this-name")
    page.click("text=Give the role")
    assert "no account named" in page.inner_text("[role=alert]")


def test_admin_adds_and_removes_forwarding_rules_and_webhooks(portal, signed_in):
    page = signed_in("b-admin")
    page.goto(f"/orgs/{portal.b}/admin/forwarding")
    page.fill("#rule-url", "http://127.0.0.1:9/dicom-web")
    page.fill("#rule-name", "Main PACS")
    page.fill("#rule-modality", "CT MR")
    page.check("input[name=urgency][value=emergency]")
    page.click("text=Add rule")
    assert "Main PACS" in page.inner_text("tbody") and "CT, MR" in page.inner_text("tbody")
    page.click("button:has-text('Remove')")
    page.wait_for_selector("text=The forwarding rule was removed")
    assert "Main PACS" not in page.inner_text("tbody")

    page.goto(f"/orgs/{portal.b}/admin/webhooks")
    page.fill("#webhook-url", "http://127.0.0.1:9/oix-events")
    page.fill("#webhook-description", "RIS")
    page.click("text=Add webhook")
    assert page.input_value("#webhook-secret")
    assert "http://127.0.0.1:9/oix-events" in page.inner_text("tbody")
    page.click("button:has-text('Remove')")
    page.wait_for_selector("text=The webhook was removed")
    assert "oix-events" not in page.inner_text("tbody")


def test_admin_sets_retention(portal, signed_in):
    page = signed_in("b-admin")
    page.goto(f"/orgs/{portal.b}/admin")
    page.fill("#retention-days", "45")
    page.click("form[action$='/retention'] button")
    page.wait_for_selector("text=The retention period was changed")
    assert page.input_value("#retention-days") == "45"
    page.fill("#retention-days", "0")
    page.eval_on_selector("#retention-days", "input => input.removeAttribute('min')")
    page.click("form[action$='/retention'] button")
    assert "retention_days" in page.inner_text("[role=alert]")


def test_usage_page_charts_sent_and_received(portal, sent, signed_in, request):
    page = signed_in("a-admin")
    page.goto(f"/orgs/{portal.a}/admin/usage")
    chart = page.locator("svg[role=img]")
    assert chart.count() == 1
    assert page.locator("svg rect.bar.sent").count() == 12
    sent_bars = page.eval_on_selector_all("svg rect.bar.sent", "bars => bars.map(b => +b.getAttribute('height'))")
    assert max(sent_bars) > 0  # this month's transfer to B
    table = page.locator("table.usage-table tbody tr")
    assert table.count() == 12
    assert table.last.locator("td").first.inner_text() == "1"
    screenshot_and_check(page, request.node.nodeid, "usage")
