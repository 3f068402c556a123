"""Voucher QR codes shown at a door: verified offline against the platform's keys."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import date

from gateway.domain.signing import VerifyKey
from gateway.domain.voucher import VoucherError, verify
from gateway.doors.controller import VoucherOutcome


class DoorVouchers:
    """Checks a voucher's signature and validity; the door then decides on its voucher id.

    `keys` is read at every check, so a key the platform rotates in applies to the
    next voucher shown without rebuilding anything.
    """

    def __init__(self, keys: Callable[[], Mapping[str, VerifyKey]]) -> None:
        self._keys = keys

    def check(self, text: str, today: date) -> VoucherOutcome:
        try:
            voucher = verify(text, self._keys(), today)
        except VoucherError as exc:
            return VoucherOutcome(None, exc.reason.value)
        return VoucherOutcome(str(voucher.voucher_id))
