"""The DICOM conformance statement of OIX, generated from the code that enforces it: every table
below is read from the module that does the work, so the statement cannot drift from the server.
The one hand-written part is CHOICES: where PS3.18 leaves an alternative, what OIX picked."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache
from importlib import metadata
from typing import Any

from pydicom.datadict import dictionary_keyword, tag_for_keyword
from pydicom.uid import UID, UID_dictionary
from starlette.routing import Route

from dicomweb import checks, qido, stow, wado
from dicomweb import rendered, rendering
from dicomweb.attributes import (
    ATTRIBUTES_OF_LEVEL,
    AVAILABLE_TRANSFER_SYNTAX,
    COUNT_TAGS,
    INSTANCE_AVAILABILITY,
    MODALITIES_IN_STUDY,
    RETRIEVE_URL,
)
from dicomweb.context import DicomWebLimits
from dicomweb.errors import FailureReason
from dicomweb.negotiation import EXPLICIT_VR_LITTLE_ENDIAN, NATIVE_FRAME_MEDIA_TYPES
from dicomweb.part10 import DEFLATED_EXPLICIT_LITTLE, PIXEL_DATA_TAGS
from dicomweb.transcode import TARGET_SYNTAXES
from dicomweb import transcode
from dicomweb.negotiation import FRAME_MEDIA_TYPE_SYNTAXES
from storage.query import LEVELS_FROM, MATCHABLE, MatchKind, QueryLevel

SERVICE_ROOT = "/dicomweb/{org}"
AS_STORED = "*"


@dataclass(frozen=True)
class Choice:
    """One place where PS3.18 (or the parts it points to) allows more than one behaviour.
    `ours` may name facts taken from the code in braces: {bulk_threshold}, {max_query_results},
    {default_transfer_syntax}, {duplicate_code}, {study_mismatch_code}. `peers` says which other
    servers do the same, and how the best-known ones differ."""

    topic: str
    section: str
    ours: str
    peers: str


CHOICES: tuple[Choice, ...] = (
    Choice("Empty search result", "PS3.18 10.6.3",
           "200 OK with an empty JSON array [] (the standard also allows 204 No Content).",
           "Orthanc answers 200 []; Azure DICOM answers 204. OHIF and dicomweb-client read both."),
    Choice("Default transfer syntax on retrieve", "PS3.18 8.7.3.5.2",
           "With no transfer-syntax parameter an instance is sent in {default_transfer_syntax} "
           "(Explicit VR Little Endian), transcoded if stored otherwise; transfer-syntax=* sends the "
           "stored bytes unchanged.",
           "Azure DICOM (documented default 1.2.840.10008.1.2.1)."),
    Choice("Person Name matching", "PS3.4 C.2.2.2.1, PS3.18 8.3.4.1",
           "Case-insensitive, for single value and wild card matching of PN attributes.",
           "Orthanc (CaseSensitivePN false by default), dcm4chee ('literal, case insensitive'), Azure DICOM."),
    Choice("Order of search results", "PS3.18 10.6.3 (no order defined)",
           "Studies newest first (StudyDate, then StudyTime, descending); series by SeriesNumber; "
           "instances by InstanceNumber, within their series.",
           "AWS HealthImaging orders series and instances the same way."),
    Choice("Default and maximum limit", "PS3.18 8.3.4.4",
           "A search returns at most {max_query_results} matches; that is also the default. A larger "
           "limit (or limit=0) is lowered to it without error.",
           "Azure DICOM uses 100 and 200 and refuses a larger limit with 400."),
    Choice("Fuzzy matching", "PS3.18 8.3.4.2",
           "Not supported: fuzzymatching=true performs literal matching and says so in a "
           "Warning: 299 header.",
           "Orthanc (DICOMweb plugin 1.7) ignores the parameter without a Warning."),
    Choice("Storing an SOP Instance UID already held", "PS3.18 10.5.3, PS3.4 B.2.3",
           "The identical object again is idempotent (200, listed as stored). A different object under "
           "a held SOP Instance UID is refused with failure reason {duplicate_code} and the original is "
           "kept; DELETE it first to replace it.",
           "Orthanc keeps the original by default (OverwriteInstances false); Azure DICOM refuses every "
           "duplicate (45070)."),
    Choice("Study Instance UID differs from the request URL", "PS3.18 10.5.3 (names no code)",
           "The instance fails with failure reason {study_mismatch_code}.",
           "dcm4chee uses the same code (0xC409); Azure DICOM uses 43265 (0xA901)."),
    Choice("A store the server could not finish", "PS3.18 10.5.3 (names no status); RFC 9110 15.6.4",
           "When the process reading a request's objects dies or gives no answer, the request is answered "
           "503 Service Unavailable with a message, and nothing of it is kept: the client sends it again. "
           "The process is replaced; other requests are not affected.",
           "—"),
    Choice("Human-readable failure detail", "PS3.18 8.3.5.1 (Warning header field)",
           "Every STOW failure (up to 20) is explained in a Warning: 299 header; error responses carry a "
           "JSON body with the message.",
           "dcm4chee also puts the detail of a failure in a Warning header."),
    Choice("Bulk data in metadata", "PS3.18 F.2.6, F.2.7",
           "Binary values longer than {bulk_threshold} bytes become a BulkDataURI, shorter ones "
           "InlineBinary; Pixel Data is always a BulkDataURI.",
           "Orthanc gives Pixel Data as a BulkDataURI; Azure DICOM leaves binary values out."),
    Choice("Group Length elements", "PS3.5 7.2, PS3.18 Annex F",
           "Group Length (gggg,0000) elements are left out of DICOM JSON.",
           "Orthanc (DicomToJsonFlags_SkipGroupLengths)."),
    Choice("Empty values in multi-valued attributes", "PS3.18 F.2.5",
           "An empty component of a multi-valued attribute is null; an attribute without a value has "
           "no Value member.",
           "pydicom's to_json_dict."),
    Choice("Delete", "not in PS3.18",
           "DELETE of a study, series or instance removes it from the organisation's holdings "
           "(200 with a JSON count).",
           "Azure DICOM (same paths, 204)."),
    Choice("Available Transfer Syntax UID in metadata", "PS3.18 10.4 (metadata), PS3.3 (0008,3002)",
           "Every instance's metadata carries Available Transfer Syntax UID (0008,3002): the syntax it "
           "is stored in, which transfer-syntax=* returns.",
           "—"),
    Choice("Form of Retrieve URL and BulkDataURI", "PS3.18 10.5.3, 10.6.3, F.2.6",
           "Absolute URLs built from the scheme, host and port the client used, so the same holdings "
           "answer on every host name.",
           "Orthanc (from the Host header unless configured otherwise)."),
    Choice("Representation of metadata and search results", "PS3.18 8.7, Annex F",
           "DICOM JSON (application/dicom+json) only; application/dicom+xml is not produced.",
           "Azure DICOM (JSON only)."),
    Choice("Store request payload", "PS3.18 10.5.1",
           "multipart/related; type=\"application/dicom\" of Part 10 objects only; metadata and bulk data "
           "parts (dicom+json, dicom+xml) are refused with 415.",
           "Azure DICOM also accepts a single application/dicom body."),
    Choice("Transcoding on retrieve", "PS3.18 8.7.3",
           "Any stored syntax a decoder reads can be sent as stored or transcoded into any syntax listed as "
           "encoded (uncompressed, RLE, JPEG-LS and JPEG 2000, lossless or lossy), instances and frames, "
           "one object at a time; the SOP Instance UID stays (PS3.18 8.7.3.5). What an encoder cannot "
           "hold (PS3.5 8.2, e.g. 32-bit samples in RLE) is 406 naming what can be sent instead. JPEG "
           "(baseline or lossless) and HTJ2K are served as stored but not encoded.",
           "Orthanc transcodes through DCMTK (JPEG, JPEG-LS, RLE; JPEG 2000 with its GDCM plugin); Azure "
           "DICOM transcodes between JPEG 2000 and Explicit VR Little Endian."),
    Choice("Lossy transcoding", "PS3.18 8.7.3.5.2, PS3.3 C.7.6.1.1.5",
           "Only when the client names a lossy syntax. The peak signal-to-noise ratio over the range of "
           "values the image uses stays at {lossy_psnr} dB or more: JPEG-LS Near-Lossless bounds each "
           "sample's error accordingly, JPEG 2000 aims OpenJPEG's rate allocation at {jpeg2000_psnr} dB. "
           "The result carries Lossy Image Compression 01 and its method and ratio after any earlier ones.",
           "dcm4chee and Orthanc take a fixed quality or ratio from their configuration."),
    Choice("Decoded colour and lossy history", "PS3.5 8.2.1, PS3.3 C.7.6.3.1.2, C.7.6.1.1.5",
           "Colour pixel data decoded from a compressed syntax (YBR_FULL_422 JPEG, YBR_ICT/RCT JPEG 2000) is "
           "sent RGB, colour-by-pixel, as a retrieved instance then says (Photometric Interpretation RGB); "
           "the metadata describes the object as stored. An object stored in a syntax that is always lossy "
           "(JPEG baseline or extended, JPEG-LS near-lossless) that does not say so gets Lossy Image "
           "Compression 01 with the method and ratio when decoded. A frame larger than 8192 x 8192 x 3 "
           "samples of 16 bits, or a whole object over 1 GiB decoded, is not decoded (406): it is served "
           "as stored.",
           "Orthanc decodes through DCMTK, which also converts to RGB; dcm4chee the same."),
    Choice("Transfer syntax of each instance", "PS3.18 8.7.5, 8.7.3.5.2",
           "Accept may list several transfer syntaxes with q-values: each instance comes in the best one "
           "it can be written in (its part's Content-Type says which), so transfer-syntax=* at a lower q "
           "is a fallback for objects a compressed syntax cannot hold. 406 is answered before any part "
           "when an instance has no acceptable syntax at all, or when the first cannot be written.",
           "—"),
    Choice("RLE frame media type", "PS3.18 Table 8.7.3-5",
           "Frames in RLE Lossless are image/dicom-rle, as the current standard names it; image/x-dicom-rle, "
           "which some clients still send, is accepted as the same type.",
           "—"),
    Choice("Authentication", "PS3.18 8.10 (security left to the origin server), RFC 6750",
           "Authorization: Bearer with an OpenID Connect access token (JWT checked against the provider's "
           "JWKS: issuer, audience, expiry, signature) or an OIX API key (oixk_…); or a portal session "
           "cookie. Missing or invalid credentials get 401 with WWW-Authenticate: Bearer and the reason; "
           "a signed-in caller without the role gets 403 naming what is missing. Without authentication "
           "(loopback or a declared demo) every request acts as admin of every organisation.",
           "dcm4chee and OHIF use Keycloak bearer tokens; Google Cloud Healthcare and Azure DICOM take "
           "OAuth 2.0 bearer tokens; Orthanc uses HTTP Basic or an authorization plugin."),
    Choice("Access control", "PS3.15 (security profiles leave roles to the site)",
           "Roles per organisation: viewer (search, retrieve), sender (also store), admin (also delete, "
           "API keys, audit). The organisation in the URL is the one the request acts for.",
           "Azure DICOM's roles (Reader, Writer, Data Owner) are the same three steps."),
    Choice("Audit trail", "PS3.15 A.5 (IHE ATNA), IHE Basic Audit Log Patterns",
           "An event per query, retrieve (instances, metadata, frames, bulk data), store (per study, in "
           "the same transaction as the index), delete, refused permission, admin change and audit read; "
           "user authentication when a credential is refused and the first time a process sees one it "
           "accepts (bearer tokens come with every request). Hash-chained; served to an organisation's "
           "admins for 12 months as JSON, CSV, FHIR AuditEvent or DICOM audit messages; kept 7 years.",
           "dcm4chee sends PS3.15 audit messages to an audit record repository; Google Cloud and Azure "
           "keep platform audit logs."),
    Choice("Sending to another organisation", "PS3.18 10.5 (an additional service root)",
           "Each organisation also has outbox service roots, /dicomweb/ORG/outbox/DEST/ (and .../urgent/, "
           ".../emergency/): a Store Instances request there stores into the destination's holdings and opens "
           "or extends a transfer per patient. The Retrieve URLs in the response point at the destination's "
           "root, which the sender cannot read.",
           "Peers have no equivalent; the national exchange this replaces uses a web upload."),
    Choice("Transport security", "PS3.15 Annex B (secure transport connection profiles)",
           "HTTPS with TLS 1.2 or later when given a certificate and key, with Strict-Transport-Security; "
           "plain HTTP otherwise (behind a TLS-terminating proxy).",
           "Orthanc and dcm4chee serve TLS directly or behind a proxy; cloud DICOM services are TLS only."),
    Choice("Rendered study, series and frame list", "PS3.18 10.4.1.1.7, 8.6",
           "multipart/related of one rendered image per image instance (its first frame), or per frame "
           "named, each part with the Content-Location of its own rendered resource; instances without "
           "pixel data (reports, documents) and images that cannot be decoded are left out, and if nothing "
           "is left the answer is 406. A rendered instance or a single frame is a single image body.",
           "dcm4chee answers multipart/related for a study or series; Orthanc renders only the first "
           "instance (in its own ID order) as one image."),
    Choice("Rendered multi-frame instance", "PS3.18 10.4.1.1.7",
           "The instance's rendered resource is its first frame; the other frames are rendered through "
           "their frames resource (.../frames/N/rendered). No video media types are produced.",
           "Orthanc renders the first frame the same way."),
    Choice("Rendered media types and quality", "PS3.18 8.7.4, 8.3.5.1.2",
           "image/jpeg (the default, for */* and image/*), image/png and image/gif, 8-bit grey or RGB; from "
           "the accept query parameter or the Accept header, ranked by q-value; 406 naming these when none "
           "is acceptable. JPEG quality 90 unless quality=1..100 says otherwise. The annotation, charset "
           "and iccprofile parameters are not supported and are ignored.",
           "Orthanc produces JPEG (quality 90 by default) and PNG."),
    Choice("Rendering of pixel values", "PS3.18 8.3.5.1, PS3.4 N.2, PS3.3 C.11",
           "Grey images: the modality LUT (Rescale Slope and Intercept, or the Modality LUT Sequence; in "
           "enhanced multi-frame objects the frame's functional groups), then the window=center,width,"
           "function parameter (linear, linear-exact or sigmoid, PS3.3 C.11.2.1.2), else the object's "
           "first Window Center and Width with its VOI LUT Function, else its first VOI LUT, else the "
           "frame's own minimum to maximum; MONOCHROME1 is inverted. Colour: palette colour through its "
           "LUTs, YBR as RGB, more than 8 bits scaled down; a window does not apply. Presentation states "
           "are not applied.",
           "Orthanc's DICOMweb plugin applies a requested window after Rescale Slope and Intercept and "
           "inverts MONOCHROME1, but reads no VOI LUT Sequence."),
    Choice("Viewport", "PS3.18 8.3.5.1.3",
           "viewport=vw,vh[,sx,sy,sw,sh]: the source region (all the image by default; a negative sw or sh "
           "flips it) is scaled to fit within vw by vh with its aspect ratio kept, and not padded, so one "
           "side of the image may be shorter than the viewport's. At most {max_viewport} pixels either way.",
           "Orthanc centres the scaled image on a black canvas of exactly vw by vh."),
    Choice("Thumbnails", "PS3.18 10.4.1.1.8",
           "A rendered JPEG (or PNG or GIF) at most {thumbnail_size} pixels on its longest side, never "
           "enlarged, unless viewport=vw,vh asks for another size. A study's or series' thumbnail shows the "
           "first frame of the middle image (by Instance Number) of its series with the most images; an "
           "instance's its first frame.",
           "OHIF's study browser shows the middle image of each series; Orthanc shows the first instance."),
    Choice("Patient access links", "PS3.18 10.4, PS3.10 8, PS3.3 F",
           "A patient's time-limited link (a subject access request, at most 30 days) serves a read-only "
           "subset of WADO-RS under its own service root for just the studies it opens: metadata, frames, "
           "rendered and thumbnail; any other study is 404, an expired or revoked link 410. Its download is "
           "a ZIP holding a DICOM File-set: a DICOMDIR written by pydicom's FileSet and each object as "
           "stored; objects of a SOP Class with no directory record type go in a folder OTHER outside it.",
           "dcm4chee and the cloud DICOM services share studies by a signed URL or a viewer link with "
           "no download; Orthanc exports a DICOMDIR ZIP (/studies/ID/media) to signed-in users only."),
    Choice("Browser viewers on another origin (CORS)", "Fetch standard (CORS protocol); PS3.18 leaves it to HTTP",
           "Only origins named with --cors-origin: preflights answered for any request header (Authorization "
           "included) and a private network, kept 10 minutes; every answer, errors included, carries the "
           "origin and exposes Warning, WWW-Authenticate and X-Request-Id; no credentials mode (viewers "
           "send bearer tokens, not cookies). OHIF's configuration for an organisation is in docs/ohif.md.",
           "Orthanc leaves CORS to a reverse proxy; Google Cloud Healthcare and Azure DICOM answer CORS for "
           "browser viewers such as OHIF (Azure for a list of allowed origins)."),
)

TRANSACTIONS = {
    stow: ("Store Instances", "PS3.18 10.5"),
    qido: ("Search", "PS3.18 10.6"),
    wado: ("Retrieve", "PS3.18 10.4"),
    rendered: ("Retrieve", "PS3.18 10.4"),
}
DELETE_TRANSACTION = ("Delete", "not in PS3.18")
SINGULAR = {"studies": "Study", "series": "Series", "instances": "Instance"}


def conformance_statement(limits: DicomWebLimits | None = None) -> dict[str, Any]:
    """The statement as plain data (JSON-ready), for `limits` as configured (defaults if None)."""
    return _statement(limits or DicomWebLimits())


@lru_cache(maxsize=4)
def _statement(limits: DicomWebLimits) -> dict[str, Any]:
    return {
        "implementation": {
            "name": "OIX, the Open Image Exchange",
            "version": _version(),
            "standard": "DICOM PS3.18 Web Services: Studies Service (STOW-RS, QIDO-RS, WADO-RS)",
            "service_root": SERVICE_ROOT,
        },
        "resources": resources(),
        "media_types": media_types(),
        "storage_sop_classes": [_uid_entry(uid) for uid in sorted(checks.storage_sop_classes(), key=_name_then_uid)],
        "transfer_syntaxes": {
            "store": [_uid_entry(uid) for uid in sorted(store_transfer_syntaxes(), key=_name_then_uid)],
            "retrieve": [{"uid": AS_STORED, "name": "as stored (transfer-syntax=*, or the stored syntax named)"}]
            + [_uid_entry(uid) for uid in TARGET_SYNTAXES],
            "retrieve_default": _uid_entry(EXPLICIT_VR_LITTLE_ENDIAN),
            # What transcoding reads and writes (PS3.18 8.7.3), from the transcoder's own tables.
            "decoded": [_uid_entry(uid) for uid in sorted(transcode.decodable_syntaxes(), key=_name_then_uid)],
            "encoded": [{**_uid_entry(encoding.syntax), "lossless": encoding.lossless, "encoder": encoding.library,
                         "lossy_method": encoding.method} for encoding in transcode.ENCODINGS.values()],
        },
        "frame_media_types": [
            {"transfer_syntax": uid, "name": _name(uid), "media_type": media}
            for uid, media in NATIVE_FRAME_MEDIA_TYPES.items()
        ],
        # PS3.18 8.7.3.3.2: the compressed media types frames can also be transcoded into.
        "frame_media_types_transcoded": [
            {"transfer_syntax": uid, "name": _name(uid), "media_type": media}
            for media, syntaxes in FRAME_MEDIA_TYPE_SYNTAXES.items() for uid in syntaxes if transcode.can_encode(uid)
        ],
        "search": search_capabilities(limits),
        "metadata": {
            "added_attributes": [{"tag": AVAILABLE_TRANSFER_SYNTAX, "keyword": _keyword(AVAILABLE_TRANSFER_SYNTAX)}],
            "bulk_data_uri_above_bytes": limits.bulk_threshold,
            "always_bulk_data_uri": [{"tag": f"{tag:08X}", "keyword": _keyword(f"{tag:08X}")}
                                     for tag in PIXEL_DATA_TAGS],
        },
        "store_failure_reasons": [
            {"code": f"0x{reason.value:04X}", "value": reason.value, "reason": reason.name}
            for reason in FailureReason
        ],
        "limits": asdict(limits),
        "choices": [
            {"topic": c.topic, "section": c.section, "ours": c.ours.format(**_facts(limits)), "peers": c.peers}
            for c in CHOICES
        ],
    }


def store_transfer_syntaxes() -> frozenset[str]:
    """What dicomweb.part10 reads: every transfer syntax in pydicom's dictionary, and deflate."""
    return frozenset(uid for uid in UID_dictionary if UID(uid).is_transfer_syntax) | {DEFLATED_EXPLICIT_LITTLE}


def resources() -> list[dict[str, str]]:
    """Every route below the service root, with the PS3.18 transaction and resource it serves."""
    found = []
    for module, transaction in TRANSACTIONS.items():
        for route in module.ROUTES:
            assert isinstance(route, Route)
            for method in sorted(route.methods - {"HEAD"}):
                name, section = DELETE_TRANSACTION if method == "DELETE" else transaction
                found.append({
                    "method": method,
                    "path": SERVICE_ROOT + route.path,
                    "resource": resource_name(route.path),
                    "transaction": name,
                    "section": section,
                    "description": _summary(route.endpoint),
                })
    return found


def resource_name(path: str) -> str:
    """PS3.18's name for the resource at `path`: `/studies/{study}/series` → "Study's Series"."""
    segments = [s for s in path.split("/") if s]
    literals = [s for s in segments if not s.startswith("{")]
    last = segments[-1]
    if last == "rendered":  # PS3.18 Table 10.4.1-3: Rendered Study ... Rendered Frames
        return f"Rendered {SINGULAR.get(literals[-2], 'Frames')}"
    if last == "thumbnail":  # PS3.18 Table 10.4.1-4: Study Thumbnail ... Frame Thumbnail
        return f"{SINGULAR.get(literals[-2], 'Frame')} Thumbnail"
    if last.startswith("{"):
        return SINGULAR.get(literals[-1], literals[-1].capitalize())
    if last in SINGULAR:
        scope = [SINGULAR[s] for s in literals[:-1]]
        if not scope:
            return f"All {last.capitalize()}"
        owner = scope[-1] + ("'" if scope[-1].endswith("s") else "'s")
        return f"{owner} {last.capitalize()}"
    return f"{SINGULAR[literals[-2]]} {last.capitalize()}"


def media_types() -> dict[str, dict[str, list[str]]]:
    dicom, octets, json = wado.DICOM, wado.OCTET_STREAM, wado.DICOM_JSON
    syntaxes = ", ".join([AS_STORED, *TARGET_SYNTAXES])
    return {
        "Store Instances": {
            "request": [f'multipart/related; type="{stow.DICOM}"'],
            "response": [json],
        },
        "Search": {"request": [], "response": [json]},
        "Retrieve instances": {
            "request": [],
            "response": [f'multipart/related; type="{dicom}"; transfer-syntax={{{syntaxes}}}'],
        },
        "Retrieve metadata": {"request": [], "response": [json]},
        "Retrieve frames": {
            "request": [],
            "response": [f'multipart/related; type="{octets}"; transfer-syntax={{{AS_STORED}, '
                         f'{EXPLICIT_VR_LITTLE_ENDIAN}}}']
            + [f'multipart/related; type="{media}"' for media in sorted(set(NATIVE_FRAME_MEDIA_TYPES.values()))],
        },
        "Retrieve bulk data": {"request": [], "response": [f'multipart/related; type="{octets}"']},
        # PS3.18 8.7.4: one image for an instance or a frame; multipart/related for several
        "Retrieve rendered": {"request": [], "response": [*rendering.MEDIA_TYPES] + [
            f'multipart/related; type="{media}"' for media in rendering.MEDIA_TYPES]},
        "Retrieve thumbnail": {"request": [], "response": [*rendering.MEDIA_TYPES]},
    }


def search_capabilities(limits: DicomWebLimits) -> dict[str, Any]:
    computed = {
        QueryLevel.STUDY: [MODALITIES_IN_STUDY, COUNT_TAGS["NumberOfStudyRelatedSeries"],
                           COUNT_TAGS["NumberOfStudyRelatedInstances"]],
        QueryLevel.SERIES: [COUNT_TAGS["NumberOfSeriesRelatedInstances"]],
        QueryLevel.INSTANCE: [],
    }
    levels = {}
    for level in QueryLevel:
        levels[level.name] = {
            "matching_keys": [
                {"keyword": keyword, "tag": _tag(keyword), "vr": vr, "level": upper.name}
                for upper in LEVELS_FROM[level] for keyword, vr in MATCHABLE[upper].items()
            ],
            "return_attributes": [
                {"tag": tag, "keyword": _keyword(tag)}
                for tag in (*ATTRIBUTES_OF_LEVEL[level], *computed[level], RETRIEVE_URL, INSTANCE_AVAILABILITY)
            ],
        }
    return {
        "levels": levels,
        "matching": [kind.value for kind in MatchKind],
        "control_parameters": sorted(qido.CONTROL_PARAMETERS),
        "wildcard_vrs": sorted(qido.WILDCARD_VRS),
        "limit": {"default": limits.max_query_results, "maximum": limits.max_query_results},
    }


def _facts(limits: DicomWebLimits) -> dict[str, Any]:
    return {
        "bulk_threshold": limits.bulk_threshold,
        "max_query_results": limits.max_query_results,
        "default_transfer_syntax": EXPLICIT_VR_LITTLE_ENDIAN,
        "duplicate_code": f"0x{FailureReason.DUPLICATE_SOP_INSTANCE:04X}",
        "study_mismatch_code": f"0x{FailureReason.STUDY_UID_MISMATCH:04X}",
        "max_viewport": rendering.MAX_VIEWPORT,
        "thumbnail_size": rendered.THUMBNAIL_SIZE,
        "lossy_psnr": f"{transcode.LOSSY_PSNR_DB:g}",
        "jpeg2000_psnr": f"{transcode.JPEG2000_PSNR_DB:g}",
    }


def _uid_entry(uid: str) -> dict[str, str]:
    return {"uid": uid, "name": _name(uid)}


def _name(uid: str) -> str:
    entry = UID_dictionary.get(uid)
    return entry[0] if entry else uid


def _keyword(tag: str) -> str:
    return dictionary_keyword(int(tag, 16))


def _tag(keyword: str) -> str:
    tag = tag_for_keyword(keyword)
    return f"{tag:08X}" if tag is not None else ""


def _summary(endpoint) -> str:
    doc = (getattr(endpoint, "__doc__", None) or "").strip()
    return " ".join(doc.split("\n\n")[0].split())


def _version() -> str:
    try:
        return metadata.version("open-image-exchange")
    except metadata.PackageNotFoundError:
        return "unknown"


def _name_then_uid(uid: str) -> tuple[str, str]:
    return _name(uid), uid
