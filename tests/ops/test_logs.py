"""Structured logs: a real gateway's lines are one JSON object each, ID numbers masked."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.ops.logs import configure_logging, mask_id_numbers
from gateway.sync.local_broker import LocalBroker
from tests.support.gateway import (
    InProcessGateway,
    enrol_cards,
    load,
    make_id_number,
    wait_until,
    write_config,
    write_taps,
)

ID_NUMBER = make_id_number(7).value
MASKED = ID_NUMBER[:3] + "*" * 11 + ID_NUMBER[-4:]


@pytest.fixture
def output() -> Iterator[io.StringIO]:
    """Where configure_logging writes in a test; the root logger is put back afterwards."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    stream = io.StringIO()
    try:
        yield stream
    finally:
        for handler in root.handlers:
            if handler not in handlers:
                root.removeHandler(handler)
        root.setLevel(level)


def test_a_running_gateways_log_is_json_lines_with_id_numbers_masked(
    tmp_path: Path, broker: LocalBroker, output: io.StringIO
) -> None:
    configure_logging("json", "DEBUG", output)
    config = load(write_config(tmp_path, broker.url, gateway_id="GW-LOGS"))
    enrol_cards(config, ["0A000001"])
    log = logging.getLogger("gateway.test")
    with InProcessGateway(config) as running:
        # An ID number typed at a card reader is rejected (bad format) and counted.
        write_taps(tmp_path / "front.reader", ["0A000001", f"ID={ID_NUMBER}"])
        counters = running.gateway.doors.counters
        wait_until(lambda: counters.rejected["bad_format"] == 1, 10, "the rejected input")
        log.warning("tenant %s moved out", ID_NUMBER, extra={"door": "front", "who": ID_NUMBER})
        try:
            raise ValueError(f"no tenancy for {ID_NUMBER}\nsecond line")
        except ValueError:
            log.exception("enrolment failed")
    text = output.getvalue()
    lines = text.splitlines()
    assert len(lines) >= 5, text
    documents = [json.loads(line) for line in lines]
    assert all({"ts", "level", "logger", "msg"} <= document.keys() for document in documents)
    assert ID_NUMBER not in text
    by_message = {document["msg"]: document for document in documents}
    moved = by_message[f"tenant {MASKED} moved out"]
    assert (moved["level"], moved["logger"]) == ("WARNING", "gateway.test")
    assert (moved["door"], moved["who"]) == ("front", MASKED)
    failed = by_message["enrolment failed"]
    assert failed["exc"].startswith("Traceback")
    assert f"ValueError: no tenancy for {MASKED}\nsecond line" in failed["exc"]
    loggers = {document["logger"] for document in documents}
    assert {"gateway.runtime.gateway", "gateway.doors.controller"} <= loggers, (
        "the gateway's own lines are there"
    )
    assert any("gateway GW-LOGS running" in document["msg"] for document in documents)


def test_text_format_is_for_people_and_masked_too(output: io.StringIO) -> None:
    configure_logging("text", "info", output)
    logging.getLogger("gateway.test").info("card for %s", ID_NUMBER)
    logging.getLogger("gateway.test").debug("below the level")
    lines = output.getvalue().splitlines()
    assert len(lines) == 1
    assert re.fullmatch(rf"\S+ \S+ INFO gateway\.test: card for {re.escape(MASKED)}", lines[0])


def test_configuring_again_replaces_only_our_handler(output: io.StringIO) -> None:
    other = logging.StreamHandler(io.StringIO())
    logging.getLogger().addHandler(other)
    first = configure_logging("json", "INFO", output)
    second = configure_logging("text", "INFO", output)
    root = logging.getLogger().handlers
    assert second in root
    assert first not in root
    assert other in root


@pytest.mark.parametrize(
    ("fmt", "level", "problem"),
    [("xml", "INFO", "log format"), ("json", "LOUD", "log level"), ("text", "", "log level")],
)
def test_an_unknown_format_or_level_is_refused(fmt: str, level: str, problem: str) -> None:
    root = logging.getLogger()
    handlers = list(root.handlers)
    with pytest.raises(ValueError, match=problem):
        configure_logging(fmt, level)  # type: ignore[arg-type]
    assert root.handlers == handlers


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("id 11010519491231002X.", "id 110***********002X."),
        ("11010519491231002x", "110***********002x"),
        ("ＩＤ１１０１０５１９４９１２３１００２Ｘ", "ＩＤ１１０***********００２Ｘ"),  # noqa: RUF001
        ("１１０１０５１９４９１２３１００２１", "１１０***********００２１"),  # noqa: RUF001
        ("a=110105194912310021,b=440106199001010019", "a=110***********0021,b=440***********0019"),
        ("seq 1234567890123456 and ns 1732780000123456789", None),  # 16 and 19 digits
    ],
)
def test_id_number_shapes_are_masked(text: str, expected: str | None) -> None:
    assert mask_id_numbers(text) == (text if expected is None else expected)
