"""What the ingest refuses before anything reaches the database, and why; what it opens."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.domain.events import EventType
from gateway.domain.personal import seal_fields
from gateway.domain.sealed_box import OpeningKey
from gateway.platform.intake import take
from gateway.platform.source import Delivery

GW = "GW-1"


def event(seq: int, **fields: Any) -> dict[str, Any]:
    return {"seq": seq, "type": "access.decision", "ts": "2026-11-28T09:12:03.123+08:00", **fields}


def envelope(*events: dict[str, Any], gw: str = GW, v: int = 1) -> Delivery:
    body = json.dumps({"v": v, "gw": gw, "events": list(events)}).encode()
    return Delivery(f"rentgate/v1/{GW}/events", body)


def test_a_good_envelope_becomes_one_row_per_event_as_received() -> None:
    intake = take([envelope(event(1), event(2, door="front"))])
    assert [(row.gw, row.seq, row.type) for row in intake.events] == [
        (GW, 1, "access.decision"),
        (GW, 2, "access.decision"),
    ]
    (row,) = intake.envelope_rows
    assert json.loads(row.payload)["events"][1]["door"] == "front", "sent on as received"
    assert intake.events[0].ts.utcoffset() is not None
    assert not intake.rejections


@pytest.mark.parametrize(
    ("delivery", "reason"),
    [
        (Delivery(f"rentgate/v1/{GW}/events", b"\xff not json"), "not JSON"),
        (Delivery(f"rentgate/v1/{GW}/events", b"[1, 2]"), "not a JSON object"),
        (envelope(event(1), v=2), "contract version 2"),
        (envelope(event(1), gw="GW-OTHER"), "not the topic's gateway"),
        (envelope(), "non-empty events"),
        (envelope(event(1), {"type": "x", "ts": "2026-01-01T00:00:00Z"}), "positive integer seq"),
        (envelope(event(0)), "positive integer seq"),
        (envelope(event(True)), "positive integer seq"),  # type: ignore[arg-type]
        (envelope(event(1, ts="yesterday")), "not an RFC 3339 time"),
        (envelope(event(1, ts="2026-11-28T09:12:03")), "no UTC offset"),
        (envelope(event(1, ts="1970-01-01T00:00:00+00:00")), "outside 2000-2100"),
        (envelope(event(1, type="")), "has no type"),
        (envelope(event(1, note="a\u0000b")), "NUL"),
        (envelope(event(1, note="\ud800")), "lone surrogate"),
        (Delivery("rentgate/v1/GW.1/x", b"{}"), "not a gateway's events or state topic"),
        (Delivery("elsewhere/events", b"{}"), "not a gateway's events or state topic"),
    ],
)
def test_bad_input_is_rejected_whole_with_its_reason(delivery: Delivery, reason: str) -> None:
    intake = take([delivery, envelope(event(7))])
    assert len(intake.rejections) == 1
    assert reason in intake.rejections[0].reason
    assert intake.rejections[0].payload == delivery.payload
    assert [row.seq for row in intake.events] == [7], "the good envelope beside it is taken"


def test_one_bad_event_rejects_its_whole_envelope() -> None:
    intake = take([envelope(event(1), event(2, ts="never"))])
    assert intake.events == []
    assert "event 2's ts" in intake.rejections[0].reason


def test_a_state_is_checked_too() -> None:
    good = {"v": 1, "gw": GW, "online": True, "ts": "2026-11-28T09:12:03.123+08:00"}
    bad = {**good, "head_seq": -1}
    intake = take(
        [
            Delivery(f"rentgate/v1/{GW}/state", json.dumps(good | {"head_seq": 9}).encode()),
            Delivery(f"rentgate/v1/{GW}/state", json.dumps(bad).encode()),
            Delivery(f"rentgate/v1/{GW}/state", json.dumps({**good, "online": "yes"}).encode()),
        ]
    )
    assert [(s.gw, s.online, s.head_seq) for s in intake.states] == [(GW, True, 9)]
    assert [r.reason for r in intake.rejections] == [
        "head_seq is not a count",
        "a state without online true/false",
    ]


def _registration(key: OpeningKey, seq: int, record: str) -> dict[str, Any]:
    fields = {
        "id_number": "11010519491231002X",
        "name": "张三",
        "phone": "13800000000",
        "workplace": None,
        "voucher": None,
    }
    sealed = seal_fields(
        key.public,
        fields,
        gateway_id=GW,
        event_type=EventType.REGISTRATION_CAPTURED,
        subject=record,
    )
    return event(
        seq,
        type="registration.captured",
        record=record,
        kind="registration",
        id_masked="110***********002X",
        moved_in_on="2026-11-27",
        sealed=sealed,
    )


def test_a_registration_is_opened_with_the_platform_key_and_its_event_stays_sealed() -> None:
    key = OpeningKey.generate()
    intake = take([envelope(_registration(key, 3, "rec-1"))], [key])
    (row,) = intake.registrations
    assert row.personal is not None
    assert row.personal["id_number"] == "11010519491231002X"
    assert row.personal["name"] == "张三"
    assert row.sealed is None
    assert "11010519491231002X" not in intake.envelope_rows[0].payload, "the event stays sealed"
    assert intake.unopened == 0


def test_a_box_for_another_key_or_moved_to_another_record_stays_sealed_and_counted() -> None:
    key, other = OpeningKey.generate(), OpeningKey.generate()
    moved = _registration(key, 4, "rec-1") | {"record": "rec-2"}
    intake = take([envelope(_registration(key, 3, "rec-1"), moved)], [other])
    assert [r.personal for r in intake.registrations] == [None, None]
    assert all(r.sealed for r in intake.registrations)
    assert intake.unopened == 2
    assert not intake.rejections, "stored sealed, never dropped: the right key opens it later"


def test_a_registration_with_a_bad_date_is_rejected() -> None:
    key = OpeningKey.generate()
    bad = _registration(key, 3, "rec-1") | {"moved_in_on": "2026-13-40"}
    intake = take([envelope(bad)], [key])
    assert intake.registrations == []
    assert "moved_in_on is not a date" in intake.rejections[0].reason
