"""NHS numbers, the 10-digit identifier of a patient within the NHS in England and Wales: checked with
their modulus 11 check digit and normalised to their digits, as the NHS Data Dictionary defines them."""

from __future__ import annotations

from enum import StrEnum

from exchange.errors import ExchangeError

# The OID of the NHS number as an identifier namespace (HL7 UK), as issuers name it in
# IssuerOfPatientID or in the Universal Entity ID of IssuerOfPatientIDQualifiersSequence.
NHS_NUMBER_OID = "2.16.840.1.113883.2.1.4.1"

LENGTH = 10
# People write an NHS number in groups, "943 476 5919" or "943-476-5919"; the separators carry nothing.
SEPARATORS = str.maketrans("", "", " -")
# NHS Data Dictionary, attribute NHS NUMBER (where the check is mandatory): each of the first nine
# digits is multiplied by a weight from 10 down to 2, the products summed and divided by 11; 11 minus
# the remainder is the check digit, where 11 gives 0 and 10 means no valid NHS number has those digits.
# https://www.datadictionary.nhs.uk/attributes/nhs_number.html
WEIGHTS = (10, 9, 8, 7, 6, 5, 4, 3, 2)


class NHSNumberProblem(StrEnum):
    """What is wrong with a would-be NHS number, short and machine-readable."""

    NOT_DIGITS = "not-digits"
    WRONG_LENGTH = "wrong-length"
    NO_CHECK_DIGIT = "no-check-digit"  # the first nine digits give 10: no NHS number starts so
    CHECK_DIGIT_MISMATCH = "check-digit-mismatch"


class InvalidNHSNumber(ExchangeError, ValueError):
    """Not a valid NHS number. The message says what to fix; it leaves out the value itself, which
    identifies a patient and may end up in a log. `value` is what was given, `problem` what is wrong."""

    def __init__(self, value: str, problem: NHSNumberProblem, message: str):
        super().__init__(message)
        self.value = value
        self.problem = problem


def check_digit(first_nine: str) -> int | None:
    """The check digit that completes nine digits into an NHS number, or None when there is none."""
    remainder = sum(int(digit) * weight for digit, weight in zip(first_nine, WEIGHTS, strict=True)) % 11
    check = 11 - remainder
    if check == 11:
        return 0
    if check == 10:
        return None
    return check


def parse_nhs_number(value: str) -> str:
    """The NHS number in `value` as its 10 digits, spaces and hyphens removed; raises InvalidNHSNumber."""
    digits = value.strip().translate(SEPARATORS)
    if not digits.isascii() or (digits and not digits.isdigit()):
        raise InvalidNHSNumber(value, NHSNumberProblem.NOT_DIGITS,
                               "an NHS number has only digits (spaces and hyphens between them are allowed); "
                               "this one has other characters")
    if len(digits) != LENGTH:
        raise InvalidNHSNumber(value, NHSNumberProblem.WRONG_LENGTH,
                               f"an NHS number has 10 digits; this one has {len(digits)}: "
                               "check for a missing or extra digit")
    expected = check_digit(digits[:9])
    if expected is None:
        raise InvalidNHSNumber(value, NHSNumberProblem.NO_CHECK_DIGIT,
                               "this is not an NHS number: no NHS number begins with these nine digits "
                               "(modulus 11 check, NHS Data Dictionary); check the number against the patient's record")
    if int(digits[9]) != expected:
        raise InvalidNHSNumber(value, NHSNumberProblem.CHECK_DIGIT_MISMATCH,
                               "this NHS number fails its modulus 11 check (NHS Data Dictionary): a digit is "
                               "mistyped or two are swapped; check it against the patient's record")
    return digits


def is_valid_nhs_number(value: str) -> bool:
    try:
        parse_nhs_number(value)
    except InvalidNHSNumber:
        return False
    return True


def format_nhs_number(digits: str) -> str:
    """The 3-3-4 grouping people read and type: "943 476 5919"."""
    return f"{digits[:3]} {digits[3:6]} {digits[6:]}"
