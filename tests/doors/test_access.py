"""The access decision, table-tested on an index built from registry rows."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from gateway.domain.credentials import CredentialKind, CredentialStatus
from gateway.doors.access import AccessIndex, DecisionReason, DoorPolicy
from gateway.store.registry import CredentialRow, TenancyRow

SH = ZoneInfo("Asia/Shanghai")
NOW = datetime(2026, 11, 28, 9, 0, tzinfo=SH)
DAY = timedelta(days=1)

DOORS = {
    "front": DoorPolicy("front"),
    "unit-3": DoorPolicy("unit-3", frozenset({"3"})),
    "unit-5": DoorPolicy("unit-5", frozenset({"5"})),
}


def row(
    key: bytes,
    person: str,
    status: CredentialStatus = CredentialStatus.ACTIVE,
    starts: datetime | None = None,
    ends: datetime | None = None,
) -> CredentialRow:
    return CredentialRow(
        f"cred-{key.decode()}", person, key, CredentialKind.CARD_UID, status, starts, ends
    )


INDEX = AccessIndex.build(
    [
        row(b"alice", "p-alice"),
        row(b"lost", "p-alice", CredentialStatus.LOST),
        row(b"cancelled", "p-alice", CredentialStatus.CANCELLED),
        row(b"later-card", "p-alice", starts=NOW + DAY),
        row(b"old-card", "p-alice", ends=NOW - DAY),
        row(b"bob", "p-bob"),
        row(b"carol", "p-carol"),
        row(b"dave", "p-dave"),
        row(b"erin", "p-erin"),
    ],
    [
        TenancyRow("p-alice", "3", NOW - 30 * DAY, NOW + 300 * DAY),
        TenancyRow("p-bob", "3", NOW + 2 * DAY, None),
        TenancyRow("p-carol", "3", NOW - 300 * DAY, NOW - DAY),
        TenancyRow("p-erin", "3", NOW - 300 * DAY, NOW - DAY),
        TenancyRow("p-erin", "3", NOW + DAY, None),
    ],
    DOORS,
)


@pytest.mark.parametrize(
    ("key", "door", "allowed", "reason"),
    [
        (b"alice", "front", True, DecisionReason.GRANTED),
        (b"alice", "unit-3", True, DecisionReason.GRANTED),
        (b"alice", "unit-5", False, DecisionReason.WRONG_DOOR),
        (b"alice", "back-gate", False, DecisionReason.WRONG_DOOR),
        (b"nobody", "front", False, DecisionReason.UNKNOWN),
        (b"lost", "front", False, DecisionReason.REVOKED),
        (b"cancelled", "front", False, DecisionReason.REVOKED),
        (b"later-card", "front", False, DecisionReason.NOT_YET_VALID),
        (b"old-card", "front", False, DecisionReason.EXPIRED),
        (b"bob", "unit-3", False, DecisionReason.NOT_YET_VALID),
        (b"carol", "unit-3", False, DecisionReason.EXPIRED),
        (b"dave", "front", False, DecisionReason.NO_TENANCY),
        (b"erin", "unit-3", False, DecisionReason.NOT_YET_VALID),
    ],
)
def test_decisions(key: bytes, door: str, allowed: bool, reason: DecisionReason) -> None:
    decision = INDEX.decide(key, door, NOW.timestamp())
    assert decision.allowed is allowed
    assert decision.reason is reason


def test_revoked_decision_says_which_status() -> None:
    assert INDEX.decide(b"lost", "front", NOW.timestamp()).status_detail == "lost"
    assert INDEX.decide(b"alice", "front", NOW.timestamp()).status_detail is None


def test_validity_boundaries_are_half_open() -> None:
    start = NOW - 30 * DAY
    end = NOW + 300 * DAY
    assert INDEX.decide(b"alice", "front", start.timestamp()).allowed
    assert not INDEX.decide(b"alice", "front", start.timestamp() - 0.001).allowed
    assert not INDEX.decide(b"alice", "front", end.timestamp()).allowed
