"""What bench/fleet.py's simulated gateways publish matches the wire contract."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from gateway.sync.wire import GatewayState
from tests.support.contract import assert_valid, payload_ref, validator

# bench scripts import their neighbours (benchlib, mqtt_lite) by name
sys.path.append(str(Path(__file__).resolve().parents[2] / "bench"))
import fleet


def test_simulated_events_match_the_envelope_schema() -> None:
    texts = [fleet.decision_text(seq, time.time(), time.monotonic()) for seq in range(1, 501)]
    envelope = json.loads('{"v":1,"gw":"FL-00001","events":[' + ",".join(texts) + "]}")
    assert_valid(validator(payload_ref("events")), envelope, "a simulated envelope")
    assert [event["seq"] for event in envelope["events"]] == list(range(1, 501))
    assert {event["result"] for event in envelope["events"]} == {"allow", "deny"}


def test_simulated_births_and_wills_match_the_state_schema() -> None:
    check = validator(payload_ref("state"))
    for online in (True, False):
        state = GatewayState(
            "FL-00001",
            online=online,
            ts=fleet.iso_now(),
            backlog=0,
            head_seq=3,
            acked_seq=2,
            software="rentgate-fleet-sim",
            state_every_s=60.0,
        )
        assert_valid(check, json.loads(state.encode()), "a simulated state")
