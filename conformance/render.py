"""The conformance statement as one plain HTML page: headings and tables, no scripts, no
external assets, readable printed or in a text browser."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from html import escape
from typing import Any

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 72rem; margin: 2rem auto; padding: 0 1rem; color: #111; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; width: 100%; }
th, td { border: 1px solid #bbb; padding: 0.25rem 0.5rem; text-align: left; vertical-align: top; }
th { background: #eee; }
code { font-size: 0.95em; }
nav li { display: inline; margin-right: 1rem; }
"""


def statement_html(statement: dict[str, Any]) -> str:
    """The whole page for a statement made by `conformance.statement.conformance_statement`."""
    implementation = statement["implementation"]
    sections = [
        ("resources", "Transactions and resources", _resources(statement["resources"])),
        ("media-types", "Media types", _media_types(statement["media_types"])),
        ("choices", "Choices where PS3.18 allows alternatives", _choices(statement["choices"])),
        ("search", "Search (QIDO-RS)", _search(statement["search"])),
        ("metadata", "Metadata (DICOM JSON)", _metadata(statement["metadata"])),
        ("transfer-syntaxes", "Transfer syntaxes", _transfer_syntaxes(statement["transfer_syntaxes"],
                                                                       statement["frame_media_types"])),
        ("failure-reasons", "Store failure reasons", _table(
            ("Code", "Reason"), [(_code(r["code"]), escape(r["reason"])) for r in statement["store_failure_reasons"]])),
        ("limits", "Limits", _table(
            ("Limit", "Value"), [(escape(name), escape(str(value))) for name, value in statement["limits"].items()])),
        ("sop-classes", "Storage SOP classes", _table(
            ("SOP Class", "UID"), [(escape(c["name"]), _code(c["uid"])) for c in statement["storage_sop_classes"]])),
    ]
    title = f"{implementation['name']} — DICOM conformance statement"
    body = [
        f"<h1>{escape(title)}</h1>",
        f"<p>Version {escape(implementation['version'])}. {escape(implementation['standard'])}. "
        f"Each organisation has its own service root, <code>{escape(implementation['service_root'])}</code>. "
        "This page is generated from the server's code; the same statement is at "
        '<a href="conformance.json">conformance.json</a>.</p>',
        "<nav><ul>" + "".join(f'<li><a href="#{anchor}">{escape(heading)}</a></li>'
                              for anchor, heading, _ in sections) + "</ul></nav>",
    ]
    for anchor, heading, content in sections:
        body.append(f'<h2 id="{anchor}">{escape(heading)}</h2>\n{content}')
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
        + "\n".join(body) + "\n</body>\n</html>\n"
    )


def _resources(resources: list[dict[str, str]]) -> str:
    return _table(("Method", "Path", "Resource", "Transaction", "Section"), [
        (escape(r["method"]), _code(r["path"]), escape(r["resource"]), escape(r["transaction"]),
         escape(r["section"]))
        for r in resources
    ])


def _media_types(media: dict[str, dict[str, list[str]]]) -> str:
    rows = []
    for transaction, directions in media.items():
        for direction, types in directions.items():
            rows.extend((escape(transaction), escape(direction), _code(t)) for t in types)
    return _table(("Transaction", "Direction", "Media type"), rows)


def _choices(choices: list[dict[str, str]]) -> str:
    return _table(("Topic", "Section", "What OIX does", "Peers"), [
        (escape(c["topic"]), escape(c["section"]), escape(c["ours"]), escape(c["peers"])) for c in choices
    ])


def _search(search: dict[str, Any]) -> str:
    parts = [
        f"<p>Matching: {escape(', '.join(search['matching']))} (PS3.4 C.2.2.2). Wild cards apply to the VRs "
        f"{escape(', '.join(search['wildcard_vrs']))}. Control parameters: "
        f"{', '.join(_code(p) for p in search['control_parameters'])}. "
        f"Default limit {search['limit']['default']}, maximum {search['limit']['maximum']}.</p>"
    ]
    for level, content in search["levels"].items():
        parts.append(f"<h3>{escape(level.capitalize())} level: matching keys</h3>")
        parts.append(_table(("Keyword", "Tag", "VR", "Defined at level"), [
            (escape(k["keyword"]), _code(k["tag"]), escape(k["vr"]), escape(k["level"]))
            for k in content["matching_keys"]
        ]))
        parts.append(f"<h3>{escape(level.capitalize())} level: attributes returned by default</h3>")
        parts.append(_table(("Keyword", "Tag"), [
            (escape(a["keyword"]), _code(a["tag"])) for a in content["return_attributes"]
        ]))
    return "\n".join(parts)


def _metadata(metadata: dict[str, Any]) -> str:
    added = ", ".join(f"{escape(a['keyword'])} {_code(a['tag'])}" for a in metadata["added_attributes"])
    bulk = ", ".join(f"{escape(a['keyword'])} {_code(a['tag'])}" for a in metadata["always_bulk_data_uri"])
    return (f"<p>Binary values longer than {metadata['bulk_data_uri_above_bytes']} bytes are given as a "
            f"BulkDataURI, shorter ones as InlineBinary. Always a BulkDataURI: {bulk}. "
            f"Added to every instance: {added}.</p>")


def _transfer_syntaxes(syntaxes: dict[str, Any], frames: list[dict[str, str]]) -> str:
    default = syntaxes["retrieve_default"]
    return "\n".join([
        "<h3>Accepted on store</h3>",
        _table(("Transfer syntax", "UID"), [(escape(s["name"]), _code(s["uid"])) for s in syntaxes["store"]]),
        "<h3>Produced on retrieve</h3>",
        f"<p>Default when the client names none: {escape(default['name'])} {_code(default['uid'])}.</p>",
        _table(("Transfer syntax", "UID"), [(escape(s["name"]), _code(s["uid"])) for s in syntaxes["retrieve"]]),
        "<h3>Frames in their stored (compressed) form</h3>",
        _table(("Transfer syntax", "UID", "Media type"), [
            (escape(f["name"]), _code(f["transfer_syntax"]), _code(f["media_type"])) for f in frames
        ]),
    ])


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A table of cells that are already HTML (escape text before passing it)."""
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>\n" for row in rows)
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody>\n</table>"


def _code(text: str) -> str:
    return f"<code>{escape(text)}</code>"
