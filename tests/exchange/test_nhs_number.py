"""NHS numbers as the NHS Data Dictionary defines them (attribute NHS NUMBER: 10 digits, the last a
modulus 11 check digit), as the receiver checks them before importing a transfer (IHE RAD IRWF)."""

from __future__ import annotations

import pytest

from exchange.errors import ExchangeError
from exchange.nhs_number import (
    InvalidNHSNumber,
    NHSNumberProblem,
    check_digit,
    format_nhs_number,
    is_valid_nhs_number,
    parse_nhs_number,
)


@pytest.mark.parametrize("written", ["943 476 5919", "943-476-5919", "9434765919", "  943 476 5919 ",
                                     "943 - 476 - 5919"])
def test_parses_an_nhs_number_written_with_spaces_or_hyphens_to_its_ten_digits(written):
    assert parse_nhs_number(written) == "9434765919"


@pytest.mark.parametrize("valid", ["401 023 2137", "485 777 3457", "943 476 5080"])
def test_accepts_nhs_numbers_whose_check_digit_matches(valid):
    """943 476 5080: the remainder is 0, so 11 - 0 = 11, and the check digit is 0."""
    assert is_valid_nhs_number(valid)
    assert parse_nhs_number(valid) == valid.replace(" ", "")


def test_the_check_digit_follows_the_data_dictionary_steps():
    """9x10 + 4x9 + 3x8 + 4x7 + 7x6 + 6x5 + 5x4 + 9x3 + 1x2 = 299; 299 mod 11 = 2; 11 - 2 = 9."""
    assert check_digit("943476591") == 9
    assert check_digit("943476508") == 0  # 11 - 0 = 11 becomes 0
    assert check_digit("943476503") is None  # 11 - 1 = 10: no NHS number begins so


@pytest.mark.parametrize("mistyped", [
    "943 476 5918",  # last digit off by one
    "943 476 5910",
    "944 376 5919",  # two digits swapped
    "943 476 5991",
])
def test_rejects_an_nhs_number_whose_check_digit_does_not_match(mistyped):
    with pytest.raises(InvalidNHSNumber) as raised:
        parse_nhs_number(mistyped)
    assert raised.value.problem is NHSNumberProblem.CHECK_DIGIT_MISMATCH
    assert "modulus 11" in str(raised.value)
    assert "check it against the patient's record" in str(raised.value)
    assert not is_valid_nhs_number(mistyped)


@pytest.mark.parametrize("any_last_digit", "0123456789")
def test_rejects_nine_digits_that_no_nhs_number_begins_with(any_last_digit):
    """943 476 503: the remainder is 1, 11 - 1 = 10, which the Data Dictionary says is never used."""
    with pytest.raises(InvalidNHSNumber) as raised:
        parse_nhs_number("943476503" + any_last_digit)
    assert raised.value.problem is NHSNumberProblem.NO_CHECK_DIGIT


@pytest.mark.parametrize(("wrong", "count"), [("943 476 591", 9), ("9434 765 9190", 11), ("", 0)])
def test_rejects_a_number_without_ten_digits_and_says_how_many_it_has(wrong, count):
    with pytest.raises(InvalidNHSNumber) as raised:
        parse_nhs_number(wrong)
    assert raised.value.problem is NHSNumberProblem.WRONG_LENGTH
    assert f"has {count}" in str(raised.value)


@pytest.mark.parametrize("not_digits", ["943 476 591A", "943.476.5919", "943/476/5919", "９４３４７６５９１９", "NHS 9434765919"])
def test_rejects_characters_other_than_digits_spaces_and_hyphens(not_digits):
    """Full-width digits too: str.isdigit() says yes to them, an NHS number has ASCII digits only."""
    with pytest.raises(InvalidNHSNumber) as raised:
        parse_nhs_number(not_digits)
    assert raised.value.problem is NHSNumberProblem.NOT_DIGITS


def test_the_error_keeps_the_value_but_leaves_it_out_of_the_message():
    """The message can reach a log; the NHS number identifies a patient."""
    with pytest.raises(InvalidNHSNumber) as raised:
        parse_nhs_number("943 476 5910")
    assert raised.value.value == "943 476 5910"
    assert "5910" not in str(raised.value)
    assert isinstance(raised.value, ExchangeError) and isinstance(raised.value, ValueError)


def test_formats_ten_digits_in_the_groups_people_read():
    assert format_nhs_number("9434765919") == "943 476 5919"
