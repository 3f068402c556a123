"""The 18-character resident ID number (GB 11643-1999).

The last character is an ISO 7064 MOD 11-2 check over the first 17 digits; the
first six digits are the region of first issue (not the current household
registration). Once an `IdNumber` exists it is valid.
"""

from __future__ import annotations

import operator
import re
import unicodedata
from dataclasses import dataclass
from datetime import date

_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK_CHARS = "10X98765432"
_ZERO_OFFSET = ord("0") * sum(_WEIGHTS)
_SHAPE = re.compile(r"[1-9][0-9]{16}[0-9X]")


def check_character(first17: str) -> str:
    """The MOD 11-2 check character for 17 digits."""
    if len(first17) != 17 or not (first17.isascii() and first17.isdigit()):
        raise ValueError("need exactly 17 digits")
    # Iterating ASCII bytes gives code points: subtract '0' once for the whole weighted sum.
    total = sum(map(operator.mul, first17.encode("ascii"), _WEIGHTS)) - _ZERO_OFFSET
    return _CHECK_CHARS[total % 11]


def mask(value: str) -> str:
    """First 3 and last 4 characters kept, the rest starred (display and logs)."""
    if len(value) <= 7:
        return "*" * len(value)
    return value[:3] + "*" * (len(value) - 7) + value[-4:]


@dataclass(frozen=True, slots=True)
class IdNumber:
    """A valid resident ID number. `str()` gives the masked form, never the full one.

    Full-width characters (as Chinese input methods type them) are folded to
    ASCII and a lower-case x is upper-cased; other digits than 0-9 are refused.
    """

    value: str

    def __post_init__(self) -> None:
        if not isinstance(self.value, str):
            raise ValueError("ID number must be text")
        text = unicodedata.normalize("NFKC", self.value).strip().upper()
        object.__setattr__(self, "value", text)
        if not _SHAPE.fullmatch(text):
            raise ValueError("ID number must be 17 digits and a digit or X")
        if check_character(text[:17]) != text[17]:
            raise ValueError("ID number check character does not match")
        try:
            date(int(text[6:10]), int(text[10:12]), int(text[12:14]))
        except ValueError as exc:
            raise ValueError("ID number carries an impossible birth date") from exc

    @property
    def region(self) -> str:
        """Region code of first issue (first six digits)."""
        return self.value[:6]

    @property
    def birth_date(self) -> date:
        return date(int(self.value[6:10]), int(self.value[10:12]), int(self.value[12:14]))

    @property
    def masked(self) -> str:
        return mask(self.value)

    def __str__(self) -> str:
        return self.masked

    def __repr__(self) -> str:
        return f"IdNumber({self.masked!r})"
