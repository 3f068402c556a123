"""IdNumber: shape, MOD 11-2 check character, birth date; every single substitution caught."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.domain.ids import IdNumber, check_character, mask


def with_check(first17: str) -> str:
    return first17 + check_character(first17)


def full_width(text: str) -> str:
    """ASCII digits and letters as the full-width forms Chinese input methods type."""
    return "".join(chr(ord(c) + 0xFEE0) for c in text)


def arabic_indic(text: str) -> str:
    return "".join(chr(0x0660 + int(c)) if c.isdigit() else c for c in text)


def test_check_characters_computed_by_hand() -> None:
    # sum of digit x weight, mod 11, into "10X98765432"
    assert check_character("11010519491231002") == "X"  # GB 11643-1999's example
    assert check_character("44052418800101001") == "4"
    assert check_character("33010619900101123") == "X"
    assert check_character("00000000000000000") == "1"  # total 0 -> "1"
    assert check_character("10000000000000000") == "5"  # total 7 -> "5"
    assert check_character("01000000000000000") == "3"  # total 9 -> "3"


@pytest.mark.parametrize(
    ("first17", "birth"),
    [
        ("11010519491231002", date(1949, 12, 31)),
        ("33010620000229123", date(2000, 2, 29)),  # 2000 is a leap year
        ("33010620240229001", date(2024, 2, 29)),
        ("65010219010101000", date(1901, 1, 1)),
    ],
)
def test_valid_numbers(first17: str, birth: date) -> None:
    text = with_check(first17)
    number = IdNumber(text)
    assert number.value == text
    assert number.birth_date == birth
    assert number.region == first17[:6]
    assert number.masked == mask(text) == text[:3] + "*" * 11 + text[-4:]
    assert text not in repr(number)
    assert text not in str(number)


@pytest.mark.parametrize(
    "text",
    [
        "11010519491231002x",  # lower-case x
        " 11010519491231002X\n",  # surrounding blanks
        full_width("11010519491231002X"),
        full_width("11010519491231002x"),
    ],
)
def test_normalised_forms(text: str) -> None:
    assert IdNumber(text).value == "11010519491231002X"


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("110105194912310021", "check character"),  # X expected
        ("11010519491231002", "17 digits"),  # 17 characters
        ("11010519491231002X0", "17 digits"),  # 19 characters
        ("", "17 digits"),
        ("01010519491231002X", "17 digits"),  # region cannot start with 0
        ("1101051949123100 2X", "17 digits"),
        ("11010519491231002Y", "17 digits"),
        ("X10105194912310021", "17 digits"),
        (arabic_indic("11010519491231002X"), "17 digits"),
        (with_check("11010519490230002"), "birth date"),  # 30 February
        (with_check("11010519491301002"), "birth date"),  # month 13
        (with_check("11010519490001002"), "birth date"),  # month 0
        (with_check("11010519490100002"), "birth date"),  # day 0
        (with_check("11010520230229002"), "birth date"),  # 29 Feb in a common year
        (with_check("11010519000229002"), "birth date"),  # 1900 is not a leap year
        (with_check("11010500000101002"), "birth date"),  # year 0
    ],
)
def test_invalid_numbers(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        IdNumber(text)


def test_non_text_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="text"):
        IdNumber(110105194912310020)  # type: ignore[arg-type]


def test_check_character_wants_17_ascii_digits() -> None:
    for bad in (
        "1101051949123100",
        "110105194912310020",
        "1101051949123100X",
        arabic_indic("1" * 17),
    ):
        with pytest.raises(ValueError, match="17 digits"):
            check_character(bad)


# --- properties -------------------------------------------------------------------------

prefixes = st.builds(
    lambda region, born, seq: f"{region}{born:%Y%m%d}{seq:03d}",
    st.integers(min_value=100000, max_value=999999),
    st.dates(min_value=date(1000, 1, 1)),
    st.integers(min_value=0, max_value=999),
)


@given(prefixes)
def test_every_real_prefix_with_its_check_character_is_accepted(first17: str) -> None:
    number = IdNumber(with_check(first17))
    assert number.value[:17] == first17
    assert f"{number.birth_date:%Y%m%d}" == first17[6:14]


@given(prefixes, st.integers(min_value=0, max_value=17), st.sampled_from("0123456789X"))
def test_any_single_substitution_is_rejected(first17: str, where: int, char: str) -> None:
    text = with_check(first17)
    if text[where] == char:
        char = "0" if char != "0" else "1"
    changed = text[:where] + char + text[where + 1 :]
    with pytest.raises(ValueError, match=r"check character|17 digits|birth date"):
        IdNumber(changed)
