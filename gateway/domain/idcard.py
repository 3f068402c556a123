"""What a SAM reader reads from an identity card's chip, as a value.

Covers the second-generation resident ID card and the cards that share its chip
layout (Hong Kong/Macao/Taiwan residents' residence permits, foreigners'
permanent-residence cards). The photo is kept as the encrypted blob the chip
returns; it is never decoded here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum

from gateway.domain.ids import mask


class CardKind(StrEnum):
    RESIDENT = "resident"
    """Second-generation resident ID card (居民身份证)."""
    HMT_PERMIT = "hmt_permit"
    """Hong Kong/Macao/Taiwan residents' residence permit (港澳台居民居住证), marked `J`."""
    FOREIGNER = "foreigner"
    """Foreigners' permanent residence card (外国人永久居留身份证), marked `I`."""


@dataclass(frozen=True, slots=True)
class IdCard:
    """The holder's fields as printed on the chip. `repr` masks what is personal."""

    kind: CardKind
    name: str = field(repr=False)
    sex: str
    ethnicity: str
    birth_date: date = field(repr=False)
    address: str = field(repr=False)
    """Household address (户籍地址): what decides whether a person is local (R1)."""
    id_number: str = field(repr=False)
    issuing_authority: str
    valid_from: date
    valid_to: date | None
    """`None` for a card valid for life (长期)."""
    pass_number: str | None = field(default=None, repr=False)
    """Hong Kong/Macao/Taiwan residents: the number of the travel pass."""
    photo: bytes = field(default=b"", repr=False)
    """The chip's photo blob, still encoded as the chip returned it."""

    @property
    def masked_id(self) -> str:
        return mask(self.id_number)

    def __str__(self) -> str:
        return f"{self.kind.value} card {self.masked_id}"
