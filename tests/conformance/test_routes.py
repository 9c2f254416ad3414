"""The statement is served by OIX itself: /conformance as HTML, /conformance.json as JSON."""

from __future__ import annotations

from html import escape

import httpx
import orjson

from conformance.statement import conformance_statement


def test_conformance_json_serves_the_statement_for_the_running_limits(oix_server):
    response = httpx.get(f"{oix_server}/conformance.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == orjson.loads(orjson.dumps(conformance_statement()))


def test_conformance_page_is_html_naming_sop_classes_and_choices(oix_server):
    response = httpx.get(f"{oix_server}/conformance")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    assert "CT Image Storage" in page
    for choice in conformance_statement()["choices"]:
        assert escape(choice["topic"]) in page
    assert "<script" not in page
