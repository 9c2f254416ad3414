"""Content negotiation for WADO-RS (PS3.18 8.7): read the Accept header (or the `accept`
query parameter, which takes precedence, 8.3.3.1) into ranked choices of media type and
transfer syntax."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from dicomweb.multipart import MediaType, split_unquoted

EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
ANY_TRANSFER_SYNTAX = "*"

# PS3.18 Table 8.7.3-5: the media types of compressed frames, each with its transfer syntaxes,
# the default (with no transfer-syntax parameter) first.
FRAME_MEDIA_TYPE_SYNTAXES = {
    "image/jpeg": ("1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51",
                   "1.2.840.10008.1.2.4.57"),
    "image/dicom-rle": ("1.2.840.10008.1.2.5",),
    "image/jls": ("1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"),
    "image/jp2": ("1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91"),
    "image/jpx": ("1.2.840.10008.1.2.4.92", "1.2.840.10008.1.2.4.93"),
    "image/jphc": ("1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.4.203"),
}
# Names clients send for the same media types: the RLE one from before PS3.18 dropped the x-.
MEDIA_TYPE_ALIASES = {"image/x-dicom-rle": "image/dicom-rle"}

# The media type a frame has in each compressed transfer syntax.
NATIVE_FRAME_MEDIA_TYPES = {syntax: media for media, syntaxes in FRAME_MEDIA_TYPE_SYNTAXES.items()
                            for syntax in syntaxes}


@dataclass(frozen=True)
class Choice:
    """One acceptable representation: the media type of each part, and a transfer syntax
    (None where the client named none, so the standard's default applies)."""

    part_type: str
    transfer_syntax: str | None
    quality: float


def accepted(request: Request, default_part_type: str) -> list[Choice]:
    """The client's acceptable representations, best first. Each is a part media type:
    `multipart/related; type="X"` counts as X, a bare `X` as X too, and `*/*` as the default."""
    text = request.query_params.get("accept") or request.headers.get("accept") or "*/*"
    choices: list[tuple[float, int, Choice]] = []
    for position, entry in enumerate(split_unquoted(text, ",")):
        if not entry.strip():
            continue
        media = MediaType.parse(entry)
        try:
            quality = float(media.params.get("q", "1"))
        except ValueError:
            quality = 1.0
        if media.type == "multipart/related":
            part_type = media.params.get("type", default_part_type).lower()
        elif media.type in ("*/*", "multipart/*"):
            part_type = default_part_type
        else:
            part_type = media.type
        part_type = MEDIA_TYPE_ALIASES.get(part_type, part_type)
        choices.append((-quality, position, Choice(part_type, media.params.get("transfer-syntax"), quality)))
    return [choice for _, _, choice in sorted(choices) if choice.quality > 0]


def transfer_syntaxes(choices: list[Choice], part_types: tuple[str, ...]) -> list[str]:
    """The transfer syntaxes the client accepts parts of `part_types` in, best first, each once;
    `*` for any (PS3.18 8.7.3.5.2). With no transfer-syntax parameter the default is Explicit
    VR Little Endian (PS3.18 Table 8.7.3-2)."""
    ranked: list[str] = []
    for choice in choices:
        if choice.part_type in part_types:
            syntax = choice.transfer_syntax or EXPLICIT_VR_LITTLE_ENDIAN
            if syntax not in ranked:
                ranked.append(syntax)
    return ranked


DICOM_JSON = "application/dicom+json"


def accepts_dicom_json(request: Request) -> bool:
    """Whether the client takes DICOM JSON (PS3.18 8.7.3.3): the only representation of
    metadata and search results served here."""
    return any(choice.part_type in (DICOM_JSON, "application/json", "*/*", "application/*")
               for choice in accepted(request, DICOM_JSON))
