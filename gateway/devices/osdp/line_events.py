"""What crosses between the OSDP control panel's thread and the gateway, as plain values.

Nothing here touches libosdp: the panel's thread turns libosdp's dicts into
these, and `gateway.devices.osdp.reader` turns them into reads, signals and status.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

KEY_MISMATCH_RETRY_S = 300
"""libosdp's OSDP_ONLINE_RETRY_WAIT_MAX_MS: how long it leaves a refused reader offline."""


class OfflineReason(StrEnum):
    """Why a reader on the line is offline."""

    NO_REPLY = "no_reply"
    KEY_MISMATCH = "key_mismatch"
    NO_SECURE_CHANNEL = "no_secure_channel"
    INSTALL_FAILED = "install_failed"
    PROTOCOL = "protocol_error"


class CardFormat(StrEnum):
    RAW = "raw"
    WIEGAND = "wiegand"
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class PdSetup:
    """One reader on the line, as the panel drives it."""

    name: str
    address: int
    key: bytes = field(repr=False)
    installing: bool
    key_file: Path
    output_no: int
    led_number: int
    latch: bool


@dataclass(frozen=True, slots=True)
class CardData:
    pd: int
    format: CardFormat
    bits: int
    data: bytes = field(repr=False)  # a card serial: kept out of logs
    at: float
    """`time.perf_counter()` when libosdp handed the read over."""


@dataclass(frozen=True, slots=True)
class InputReport:
    pd: int
    levels: bytes


@dataclass(frozen=True, slots=True)
class LocalReport:
    pd: int
    tamper: bool
    power_failure: bool


@dataclass(frozen=True, slots=True)
class LinkChange:
    pd: int
    online: bool
    reason: OfflineReason | None
    detail: str | None


@dataclass(frozen=True, slots=True)
class LineFailed:
    error: str


PanelEvent = CardData | InputReport | LocalReport | LinkChange | LineFailed


@dataclass(frozen=True, slots=True)
class Release:
    """Energise the reader's relay for `seconds`."""

    pd: int
    seconds: float


@dataclass(frozen=True, slots=True)
class Feedback:
    pd: int
    allowed: bool


PanelCommand = Release | Feedback


def offline_detail(setup: PdSetup, reason: OfflineReason) -> str:
    """What an installer reads in `device.status` for an offline reader."""
    who = f"reader at address {setup.address}"
    if reason is OfflineReason.KEY_MISMATCH:
        return (
            f"secure channel key mismatch: the {who} refused the key in {setup.key_file}; "
            f"libosdp retries in {KEY_MISMATCH_RETRY_S} s (restore the reader's key, or reset "
            "the reader and provision it again in install mode)"
        )
    if reason is OfflineReason.NO_SECURE_CHANNEL:
        return f"the {who} offers no secure channel; refused (EnforceSecure)"
    if reason is OfflineReason.INSTALL_FAILED:
        return (
            f"install mode: the {who} accepted neither the pending key nor the install key "
            "SCBK-D; retrying"
        )
    if reason is OfflineReason.PROTOCOL:
        return f"the {who} answered but the exchange failed; retrying"
    return f"no reply from the {who}; retrying"
