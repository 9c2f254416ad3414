"""QIDO-RS, Search (PS3.18 10.6): parse the query parameters into the index's query model,
and render matches as DICOM JSON with the attributes of PS3.18 Tables 10.6.3-3/4/5."""

from __future__ import annotations

import re
from datetime import date
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from dicomweb.attributes import (
    ATTRIBUTES_OF_LEVEL,
    COUNT_TAGS,
    INSTANCE_AVAILABILITY,
    MODALITIES_IN_STUDY,
    RETRIEVE_URL,
    UnknownAttribute,
    resolve,
)
from oix.access import requester_of
from dicomweb.context import context_of, require_organisation, service_root
from dicomweb.records import with_service_root
from dicomweb.errors import BadRequest, NotAcceptable
from dicomweb.negotiation import accepts_dicom_json
from storage.query import AttributeMatch, MatchKind, Query, QueryLevel, matchable_at

CONTROL_PARAMETERS = {"limit", "offset", "includefield", "fuzzymatching", "accept", "charset"}
WILDCARD_VRS = {"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"}
DATE_VALUE = {"DA": re.compile(r"^\d{8}$"), "TM": re.compile(r"^\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?$")}
BINARY_KEYS = ("InlineBinary", "BulkDataURI")


def parse_query(request: Request, level: QueryLevel, max_results: int) -> tuple[Query, set[str] | None, list[str]]:
    """The query, the extra tags to include (None for `all`), and warnings for the client."""
    params = request.query_params
    path = request.path_params
    query = Query(level=level, study_uid=path.get("study"), series_uid=path.get("series"))
    query.limit = _non_negative(params.get("limit"), "limit", max_results)
    if query.limit == 0 or query.limit > max_results:
        query.limit = max_results
    query.offset = _non_negative(params.get("offset"), "offset", 0)
    warnings = []
    if params.get("fuzzymatching", "false").lower() == "true":
        # PS3.18 10.6.3.2 (Table 10.6.3-1): say so when fuzzy matching is not performed.
        warnings.append("The fuzzymatching parameter is not supported. Only literal matching has been performed.")
    include: set[str] | None = set()
    for value in params.getlist("includefield"):
        for name in value.split(","):
            if not name.strip():
                continue
            if name.strip().lower() == "all":
                include = None
                continue
            try:
                tag = resolve(name)[1]
            except UnknownAttribute as exc:
                raise BadRequest(f"includefield: {exc}") from None
            if include is not None:
                include.add(tag)
    matchable = matchable_at(level)
    for name, value in params.multi_items():
        if name in CONTROL_PARAMETERS:
            continue
        try:
            keyword, tag = resolve(name)
        except UnknownAttribute as exc:
            raise BadRequest(f"unknown query key: {exc}") from None
        if keyword not in matchable:
            raise BadRequest(
                f"'{name}' is not a matching key at the {level.name.lower()} level; this server matches on "
                + ", ".join(sorted(matchable)))
        query.matches.append(_match(keyword, matchable[keyword], value))
        if include is not None:
            include.add(tag)
    return query, include, warnings


def _non_negative(text: str | None, name: str, default: int) -> int:
    if text is None or text == "":
        return default
    if not text.isdigit():
        raise BadRequest(f"{name} must be a non-negative integer, not '{text}'")
    return int(text)


def _match(keyword: str, vr: str, value: str) -> AttributeMatch:
    """PS3.4 C.2.2.2: which kind of matching a value asks for."""
    if value == "" or value == "*":
        return AttributeMatch(keyword, MatchKind.UNIVERSAL)
    if vr == "UI" or keyword == "ModalitiesInStudy":
        values = tuple(v.strip() for v in re.split(r"[,\\]", value) if v.strip())
        if len(values) > 1:
            return AttributeMatch(keyword, MatchKind.UID_LIST, values)
    if vr in DATE_VALUE:
        if "-" in value:
            low, _, high = value.partition("-")
            for bound in (low, high):
                if bound and not _valid(vr, bound):
                    raise BadRequest(f"{keyword}: '{bound}' is not a valid {vr} value in range '{value}'")
            return AttributeMatch(keyword, MatchKind.RANGE, (low, high))
        if not _valid(vr, value):
            raise BadRequest(f"{keyword}: '{value}' is not a valid {vr} value (dates are YYYYMMDD)")
    if vr == "IS" and not value.lstrip("+-").isdigit():
        raise BadRequest(f"{keyword}: '{value}' is not an integer")
    if ("*" in value or "?" in value) and (vr in WILDCARD_VRS or keyword == "ModalitiesInStudy"):
        return AttributeMatch(keyword, MatchKind.WILDCARD, (value,))
    return AttributeMatch(keyword, MatchKind.SINGLE_VALUE, (value,))


def _valid(vr: str, value: str) -> bool:
    """PS3.5 6.2: DA is a real calendar date YYYYMMDD; TM is HH[MM[SS[.F{1,6}]]] in range."""
    if not DATE_VALUE[vr].match(value):
        return False
    if vr == "DA":
        try:
            date(int(value[:4]), int(value[4:6]), int(value[6:8]))
        except ValueError:
            return False
        return True
    return int(value[:2]) < 24 and (len(value) < 4 or int(value[2:4]) < 60) and (len(value) < 6 or int(value[4:6]) < 61)


def render(request: Request, org: str, query: Query, rows, include: set[str] | None,
           representatives: dict) -> list[dict[str, Any]]:
    root = service_root(request, org)
    results = []
    for row in rows:
        result: dict[str, Any] = {}
        for attributes in row.attributes:
            result.update(orjson.loads(attributes))
        source = representatives.get((row.study_uid, None if query.level is QueryLevel.STUDY else row.series_uid))
        if source is not None:
            extra = orjson.loads(source)
            wanted = extra.keys() if include is None else include
            for tag in wanted:
                element = extra.get(tag)
                if element is not None and tag not in result and not any(k in element for k in BINARY_KEYS):
                    result[tag] = element
        url = f"{root}/studies/{row.study_uid}"
        if query.level is not QueryLevel.STUDY:
            url += f"/series/{row.series_uid}"
        if query.level is QueryLevel.INSTANCE:
            url += f"/instances/{row.sop_instance_uid}"
        result[RETRIEVE_URL] = {"vr": "UR", "Value": [url]}
        result[INSTANCE_AVAILABILITY] = {"vr": "CS", "Value": ["ONLINE"]}
        for name, count in row.counts.items():
            result[COUNT_TAGS[name]] = {"vr": "IS", "Value": [count]}
        if query.level is QueryLevel.STUDY:
            result[MODALITIES_IN_STUDY] = {"vr": "CS", "Value": row.modalities} if row.modalities else {"vr": "CS"}
        results.append(result)
    return results


def _search(level: QueryLevel):
    async def search(request: Request) -> Response:
        context = context_of(request)
        org = request.path_params["org"]
        await require_organisation(context, org)
        if not accepts_dicom_json(request):
            raise NotAcceptable("search results are served as application/dicom+json only")
        query, include, warnings = parse_query(request, level, context.limits.max_query_results)
        wanted = query.limit
        query.limit = wanted + 1  # one more tells whether the results were cut
        rows = await run_in_threadpool(context.archive.search, org, query, requester_of(request),
                                       f"{level.value} {request.url.query}".strip())
        query.limit = wanted
        if len(rows) > wanted:
            rows = rows[:wanted]
            if wanted == context.limits.max_query_results:
                # PS3.18 10.6.3.3: say so when the server's maximum cut the results short.
                warnings.append("The number of results exceeded the maximum supported by the server. "
                                "Additional results can be requested.")
        defaults = set(ATTRIBUTES_OF_LEVEL[level])
        needs_more = include is None or bool(include - defaults - set(COUNT_TAGS.values()))
        representatives = {}
        if needs_more and rows:
            keys = {(row.study_uid, row.series_uid) for row in rows}
            representatives = await run_in_threadpool(context.archive.representative_json, org, level, keys)
        results = render(request, org, query, rows, include, representatives)
        headers = {"Warning": ", ".join(f'299 oix "{w}"' for w in warnings)} if warnings else None
        # An empty result is 200 with [] (PS3.18 allows 204; OHIF and dicomweb-client read both).
        body = orjson.dumps(results, option=orjson.OPT_SORT_KEYS)
        if representatives:  # an included sequence may hold bulk data: its URIs become absolute
            body = with_service_root(body, service_root(request, org).encode())
        return Response(body, media_type="application/dicom+json", headers=headers)

    return search


ROUTES = [
    Route("/studies", _search(QueryLevel.STUDY), methods=["GET"]),
    Route("/series", _search(QueryLevel.SERIES), methods=["GET"]),
    Route("/studies/{study}/series", _search(QueryLevel.SERIES), methods=["GET"]),
    Route("/instances", _search(QueryLevel.INSTANCE), methods=["GET"]),
    Route("/studies/{study}/instances", _search(QueryLevel.INSTANCE), methods=["GET"]),
    Route("/studies/{study}/series/{series}/instances", _search(QueryLevel.INSTANCE), methods=["GET"]),
]
