"""Failures at the HTTP edge: one table maps every failure kind to its HTTP status, and the
DICOM failure reasons STOW-RS reports per instance (PS3.18 10.5.3, PS3.4 Annex B.2.3)."""

from __future__ import annotations

from enum import IntEnum

import orjson
from starlette.requests import Request
from starlette.responses import Response

from exchange.errors import (
    AuthenticationFailed,
    DuplicateOrganisation,
    ExchangeError,
    InvalidCredentialRequest,
    InvalidOrganisation,
    NotHeld,
    TransferStepRefused,
    UnknownCredential,
    UnknownForwardingRule,
    UnknownOrganisation,
    UnknownTransfer,
    UnknownWebhook,
)


class FailureReason(IntEnum):
    PROCESSING_FAILURE = 0x0110
    DUPLICATE_SOP_INSTANCE = 0x0111  # a different object already holds this SOP Instance UID
    SOP_CLASS_NOT_SUPPORTED = 0x0122
    OUT_OF_RESOURCES = 0xA700
    DATA_SET_DOES_NOT_MATCH_SOP_CLASS = 0xA900  # e.g. a required UID is missing
    CANNOT_UNDERSTAND = 0xC000
    TRANSFER_SYNTAX_NOT_SUPPORTED = 0xC122
    # PS3.18 names no code for a Study Instance UID that differs from the one in the request
    # URL; dcm4chee's 0xC409 is what clients meet elsewhere.
    STUDY_UID_MISMATCH = 0xC409


class DicomWebError(Exception):
    status = 400

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class BadRequest(DicomWebError):
    status = 400


class NotFound(DicomWebError):
    status = 404


class NotAcceptable(DicomWebError):
    status = 406


class Conflict(DicomWebError):
    status = 409


class PayloadTooLarge(DicomWebError):
    status = 413


class UnsupportedMediaType(DicomWebError):
    status = 415


class ServiceUnavailable(DicomWebError):
    """The request was sound but the server could not finish it now; nothing of it was kept."""

    status = 503


STATUS_OF_EXCHANGE_ERROR: dict[type[ExchangeError], int] = {
    UnknownOrganisation: 404,
    NotHeld: 404,
    InvalidOrganisation: 400,
    DuplicateOrganisation: 409,
    AuthenticationFailed: 401,
    InvalidCredentialRequest: 400,
    UnknownCredential: 404,
    UnknownTransfer: 404,
    UnknownWebhook: 404,
    UnknownForwardingRule: 404,
    TransferStepRefused: 409,
}


def error_response(status: int, message: str) -> Response:
    return Response(orjson.dumps({"status": status, "error": message}), status_code=status,
                    media_type="application/json")


async def dicomweb_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DicomWebError)
    return error_response(exc.status, exc.message)


async def exchange_error(_request: Request, exc: Exception) -> Response:
    status = next((code for kind, code in STATUS_OF_EXCHANGE_ERROR.items() if isinstance(exc, kind)), 400)
    return error_response(status, str(exc))


EXCEPTION_HANDLERS = {DicomWebError: dicomweb_error, ExchangeError: exchange_error}
