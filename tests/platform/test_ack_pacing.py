"""Acks paced per gateway: the first at once, then at most one per interval, never lost."""

from __future__ import annotations

from gateway.platform.ack_pacing import AckPacer


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_first_ack_goes_at_once_and_later_ones_wait_for_the_interval() -> None:
    clock = Clock()
    pacer = AckPacer(30, clock)
    assert pacer.stored({"GW-1": 5, "GW-2": 1}) == {"GW-1": 5, "GW-2": 1}
    clock.now += 1
    assert pacer.stored({"GW-1": 9}) == {}
    clock.now += 1
    assert pacer.stored({"GW-1": 12}) == {}, "the highest seq so far is what will go"
    assert pacer.waiting == 1
    clock.now += 27.9
    assert pacer.due() == {}
    clock.now += 0.2
    assert pacer.due() == {"GW-1": 12}
    assert pacer.due() == {}
    clock.now += 30
    assert pacer.stored({"GW-2": 3, "GW-1": 13}) == {"GW-2": 3, "GW-1": 13}


def test_what_waits_is_sent_on_stopping() -> None:
    clock = Clock()
    pacer = AckPacer(30, clock)
    pacer.stored({"GW-1": 1})
    pacer.stored({"GW-1": 4})
    assert pacer.drain() == {"GW-1": 4}
    assert pacer.due() == {}
    assert pacer.waiting == 0
