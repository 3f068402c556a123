"""The handheld terminal end to end: capture offline, sync over HTTPS, reach the platform.

A real gateway (store, writer, uplink to Mosquitto) with the terminal API served
by uvicorn over TLS (a throwaway CA); the terminal is driven through its CLI
(`terminal.cli.main`, or `python -m terminal.cli` where it must be killed); the
platform is a real MQTT subscriber.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import segno

from gateway.api.application import create_api
from gateway.domain.capture import CapturedRecord, CaptureKind
from gateway.domain.events import uuid7
from gateway.residence.intake import Intake, RecordIntake, TerminalRegistry, issue_token_offline
from gateway.runtime.parts import sealing_key
from gateway.store import outbox
from gateway.store import terminal_records as records
from gateway.store.db import connect
from gateway.store.migrations import migrate
from gateway.sync.local_broker import LocalBroker, free_port
from terminal import config as terminal_config
from terminal.cli import main
from terminal.queue import Queue, load_key
from tests.support import REPO
from tests.support.gateway import (
    InProcessGateway,
    Subscriber,
    load,
    make_id_number,
    wait_until,
    write_config,
)
from tests.support.pki import Pki, make_pki
from tests.support.terminal import serve_https

GW = "GW-TERM"
RECORDS = 500


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("terminal-pki"))


class GatedIntake:
    """The real intake, which after `hold_after` batches stores the next one and then
    holds its reply until released: the terminal is killed while the gateway has
    records whose acknowledgement it never received."""

    def __init__(self, inner: RecordIntake, hold_after: int | None = None) -> None:
        self.inner = inner
        self.hold_after = hold_after
        self.batches = 0
        self.held = threading.Event()
        self.release = threading.Event()

    async def submit_many(self, batch: Sequence[CapturedRecord]) -> list[Intake]:
        outcomes = await self.inner.submit_many(batch)
        self.batches += 1
        if self.hold_after is not None and self.batches == self.hold_after + 1:
            self.held.set()
            await asyncio.to_thread(self.release.wait, 60)
        return outcomes


@dataclass
class Site:
    """A running gateway, its terminal API (not yet serving) and a platform subscriber."""

    gateway: InProcessGateway
    database: Path
    intake: GatedIntake
    registry: TerminalRegistry
    subscriber: Subscriber
    pki: Pki
    port: int
    token: str
    home: Path

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def serve(self) -> Any:
        return serve_https(create_api(self.intake, self.registry), self.pki, self.port)

    def stored(self) -> int:
        conn = connect(self.database, readonly=True)
        try:
            return records.count_records(conn)
        finally:
            conn.close()

    def captured_events(self) -> list[dict[str, Any]]:
        """registration.captured events in the gateway's outbox, with their seq."""
        self.gateway.gateway.writer.flush()
        conn = connect(self.database, readonly=True)
        try:
            stored = outbox.read_after(conn, 0, 1_000_000)
        finally:
            conn.close()
        events = [{"seq": e.seq, **json.loads(e.payload)} for e in stored]
        return [e for e in events if e["type"] == "registration.captured"]

    def platform_records(self) -> dict[str, set[int]]:
        """Record id → the seqs the platform received it under."""
        seen: dict[str, set[int]] = {}
        for event in self.subscriber.events():
            if event["type"] == "registration.captured":
                seen.setdefault(event["record"], set()).add(event["seq"])
        return seen


@pytest.fixture
def site(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, broker: LocalBroker, pki: Pki
) -> Iterator[Site]:
    config = load(write_config(tmp_path, broker.url, gateway_id=GW))
    config.gateway.data_dir.mkdir(parents=True)
    conn = connect(config.gateway.database)
    migrate(conn)
    conn.close()
    token = issue_token_offline(config.gateway.database, "T-01", _Clock())
    subscriber = Subscriber(broker.port, f"rentgate/v1/{GW}/events", client_id=f"p-{tmp_path.name}")
    running = InProcessGateway(config).start()
    gw = running.gateway
    intake = GatedIntake(
        RecordIntake(
            writer=gw.writer,
            keys=gw.parts.keys,
            clock=gw.clock,
            gateway_id=GW,
            sealing=sealing_key(config),
        )
    )
    registry = TerminalRegistry(config.gateway.database, writer=gw.writer, clock=gw.clock)
    home = tmp_path / "terminal"
    try:
        yield Site(
            running, config.gateway.database, intake, registry, subscriber, pki,
            free_port(), token, home,
        )  # fmt: skip
    finally:
        registry.close()
        running.stop()
        subscriber.close()


class _Clock:
    def now(self) -> datetime:
        return datetime.now().astimezone()

    def monotonic(self) -> float:
        return 0.0


def terminal(site: Site, *args: str) -> int:
    return main(["--home", str(site.home), *args])


def init(
    site: Site, token: str | None = None, url: str | None = None, ca: Path | None = None
) -> int:
    return terminal(
        site,
        "init",
        "--terminal",
        "T-01",
        "--gateway",
        url or site.url,
        "--token",
        token or site.token,
        "--ca",
        str(ca or site.pki.ca),
    )


def capture(site: Site, serial: int, *extra: str) -> int:
    return terminal(
        site,
        "capture",
        "registration",
        "--id-number",
        make_id_number(serial).value,
        "--name",
        f"Tenant {serial}",
        "--building",
        "B1",
        "--unit",
        str(100 + serial % 40),
        "--moved-in",
        "2026-01-05",
        *extra,
    )


def queue_of(site: Site) -> Queue:
    home = site.home
    return Queue(home / terminal_config.QUEUE_NAME, load_key(home / terminal_config.KEY_NAME))


def pending_ids(site: Site) -> list[str]:
    with queue_of(site) as queue:
        return [record_id for record_id, _ in queue.next_batch(100_000)]


def capture_offline(site: Site, capsys: pytest.CaptureFixture[str], count: int) -> list[str]:
    assert init(site) == 0
    for serial in range(count):
        assert capture(site, serial) == 0
    out = capsys.readouterr().out
    plural = "s" if count > 1 else ""
    assert f"Saved on this terminal: {count} record{plural} pending sync." in out
    ids = pending_ids(site)
    assert len(ids) == count
    return ids


# --------------------------------------------------------------------------- end to end


def test_records_captured_offline_reach_the_platform_once(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = capture_offline(site, capsys, RECORDS)
    assert terminal(site, "status") == 0
    status = capsys.readouterr().out
    assert "Queue: 500 pending, 0 at the gateway, 0 rejected" in status
    assert "Gateway: not usable now (unreachable)" in status
    assert terminal(site, "pending", "--limit", "3") == 0
    listing = capsys.readouterr().out
    assert "500 records pending sync (oldest first):" in listing
    assert f"{make_id_number(0).masked}  B1/100" in listing
    assert "… and 497 more" in listing

    with site.serve():
        assert terminal(site, "sync") == 0
        out, err = capsys.readouterr()
        assert terminal(site, "status") == 0
        status = capsys.readouterr().out

    assert "Synced 500 records to" in out
    assert "500 stored, 0 the gateway already had." in out
    assert "Nothing pending." in out
    assert err.splitlines()[0] == "[--------------------] 0/500"
    assert err.splitlines()[-1] == "[####################] 500/500"
    assert "Gateway: reachable, token accepted." in status
    assert "Queue: 0 pending, 500 at the gateway" in status
    wait_until(lambda: len(site.platform_records()) == RECORDS, 30, "500 records at the platform")
    received = site.platform_records()
    assert set(received) == set(ids)
    assert all(len(seqs) == 1 for seqs in received.values())
    assert len(site.captured_events()) == RECORDS
    assert terminal(site, "pending") == 0
    assert "Nothing pending: all 500 records captured here are at the gateway." in (
        capsys.readouterr().out
    )


def test_killed_mid_sync_every_record_arrives_once(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = capture_offline(site, capsys, RECORDS)
    site.intake.hold_after = 3  # the 4th batch of 50 is stored, its reply held
    with site.serve():
        log = (site.home / "sync.log").open("wb")
        child = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "terminal.cli",
                "--home",
                str(site.home),
                "sync",
                "--batch",
                "50",
            ],
            cwd=REPO,
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        try:
            assert site.intake.held.wait(60), "the sync never reached the 4th batch"
            assert site.stored() == 200
            assert len(pending_ids(site)) == 350  # 150 marked sent; the 4th batch unacknowledged
            os.kill(child.pid, signal.SIGKILL)
            assert child.wait(10) == -signal.SIGKILL
        finally:
            site.intake.release.set()
            if child.poll() is None:
                child.kill()
                child.wait(10)

        assert terminal(site, "sync", "--batch", "50") == 0
        out = capsys.readouterr().out

    assert "Synced 350 records" in out
    assert "300 stored, 50 the gateway already had." in out
    assert pending_ids(site) == []
    assert site.stored() == RECORDS
    events = site.captured_events()
    assert len(events) == RECORDS
    assert sorted(e["record"] for e in events) == sorted(ids)
    wait_until(lambda: len(site.platform_records()) == RECORDS, 30, "500 records at the platform")
    received = site.platform_records()
    assert set(received) == set(ids)
    assert all(len(seqs) == 1 for seqs in received.values())  # never announced twice


def test_confirmed_captures_survive_kill_9(site: Site) -> None:
    assert init(site) == 0
    script = (
        "import sys\nfrom terminal.cli import main\n"
        "for n in range(400):\n"
        "    main(['--home', sys.argv[1], 'capture', 'departure', '--id-number', sys.argv[2],"
        " '--name', 'Tenant', '--building', 'B1', '--unit', str(n)])\n"
        "    sys.stdout.flush()\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script, str(site.home), make_id_number(5).value],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    assert child.stdout is not None
    confirmed: list[str] = []
    try:
        for line in child.stdout:
            if line.startswith(b"Captured departure "):
                confirmed.append(line.split()[2].decode())
            if len(confirmed) == 40:
                os.kill(child.pid, signal.SIGKILL)
                break
    finally:
        child.kill()
        child.wait(10)
        child.stdout.close()

    queued = set(pending_ids(site))
    assert len(confirmed) == 40
    assert set(confirmed) <= queued


# --------------------------------------------------------------------------- what goes wrong


def test_a_bad_token_is_explained_and_nothing_is_lost(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    assert init(site, token="T-01:not-the-token") == 0
    for serial in range(3):
        assert capture(site, serial) == 0
    capsys.readouterr()
    with site.serve():
        assert terminal(site, "sync") == 1
    err = capsys.readouterr().err
    assert "Sync stopped: the gateway refused this terminal's token (unknown_token" in err
    assert "3 records still pending on this terminal, nothing lost" in err
    assert len(pending_ids(site)) == 3
    assert site.stored() == 0


def test_a_token_of_another_terminal_is_explained(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    other = issue_token_offline(site.database, "T-02", _Clock())
    assert init(site, token=other) == 0
    assert capture(site, 1) == 0
    capsys.readouterr()
    with site.serve():
        assert terminal(site, "sync") == 1
    err = capsys.readouterr().err
    assert "the token belongs to terminal 'T-02', this terminal is 'T-01'" in err
    assert len(pending_ids(site)) == 1


def test_an_unreachable_gateway_is_explained_and_nothing_is_lost(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = capture_offline(site, capsys, 5)

    assert terminal(site, "sync") == 1  # nothing listens on the port

    err = capsys.readouterr().err
    assert f"Sync stopped: the gateway at {site.url} is unreachable" in err
    assert "0 of 5 records reached the gateway before that; 5 records still pending" in err
    assert pending_ids(site) == ids
    with site.serve():
        assert terminal(site, "sync") == 0
    assert site.stored() == 5


def test_a_gateway_the_ca_does_not_vouch_for_is_refused(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    assert init(site, ca=site.pki.other_ca) == 0
    assert capture(site, 1) == 0
    capsys.readouterr()
    with site.serve():
        assert terminal(site, "sync") == 1
        assert terminal(site, "status") == 0
    out, err = capsys.readouterr()
    assert f"the gateway at {site.url} could not be verified" in err
    assert "CERTIFICATE_VERIFY_FAILED" in err
    assert "Gateway: not usable now (tls)" in out
    assert len(pending_ids(site)) == 1
    assert site.stored() == 0


def test_a_record_the_gateway_rejects_is_kept_and_can_be_retried(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    """A record an older terminal thought valid (built here without validation)."""
    capture_offline(site, capsys, 2)
    stale = CapturedRecord.model_construct(
        record_id=uuid7(),
        terminal="T-01",
        kind=CaptureKind.DEPARTURE,
        captured_at=datetime.now().astimezone(),
        id_number=make_id_number(9).value,
        name="Tenant 9",
        building="B1",
        unit="7",
        moved_in_on=None,
        moved_out_on=None,
    )
    with queue_of(site) as queue:
        queue.add(stale)

    with site.serve():
        assert terminal(site, "sync") == 1
        out = capsys.readouterr().out
        assert terminal(site, "pending") == 0
        listing = capsys.readouterr().out
        assert terminal(site, "sync", "--retry-rejected") == 1
        again = capsys.readouterr().out

    assert "Synced 2 records" in out
    assert "1 record rejected by the gateway" in out
    assert "1 record rejected by the gateway (kept here):" in listing
    assert "why: invalid: record: a departure needs moved_out_on" in listing
    assert "1 record rejected before put back in line." in again
    assert "Synced 0 records" in again
    assert site.stored() == 2


def test_bad_capture_input_is_refused_and_nothing_is_queued(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    assert init(site) == 0
    number = make_id_number(3).value
    wrong = next(c for c in "0123456789X" if c != number[17])
    tomorrow = (datetime.now().astimezone() + timedelta(days=2)).date().isoformat()
    capsys.readouterr()

    assert capture(site, 3, "--phone", "call me") == 2
    assert "not captured: phone: String should match pattern" in capsys.readouterr().err
    assert terminal(site, "capture", "change", "--id-number", number[:17] + wrong,
                    "--name", "A", "--building", "B1", "--unit", "1") == 2  # fmt: skip
    assert "id_number: ID number check character does not match" in capsys.readouterr().err
    assert capture(site, 3, "--moved-in", tomorrow) == 2  # last --moved-in wins
    assert "moved_in_on is after the day of capture" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        capture(site, 3, "--moved-in", "5 January")
    assert "'5 January' is not a date (YYYY-MM-DD)" in capsys.readouterr().err
    assert pending_ids(site) == []


def test_a_corrupt_voucher_image_is_refused_and_a_real_one_read(
    site: Site, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    ids = capture_offline(site, capsys, 1)
    corrupt = tmp_path / "voucher.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(2000))
    photo = tmp_path / "real.png"
    segno.make("RV1:TEST-VOUCHER-0001", error="m").save(photo, scale=8, border=4)

    assert capture(site, 2, "--voucher-image", str(corrupt)) == 2
    assert "is not a readable image (corrupt or unsupported)" in capsys.readouterr().err
    assert pending_ids(site) == ids
    assert capture(site, 3, "--voucher-image", str(photo)) == 0
    assert "with voucher." in capsys.readouterr().out

    with queue_of(site) as queue:
        newest = json.loads(queue.next_batch(10)[-1][1])
    assert newest["voucher"] == "RV1:TEST-VOUCHER-0001"


def test_commands_before_init_say_what_to_do(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    for command in (["pending"], ["sync"], ["status"]):
        assert terminal(site, *command) == 2
        assert "this terminal is not set up" in capsys.readouterr().err
    assert init(site, url="http://127.0.0.1:1") == 2
    assert "the gateway URL must start with https://" in capsys.readouterr().err


def test_a_damaged_queue_or_key_is_reported_not_a_traceback(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    assert init(site) == 0
    assert capture(site, 1) == 0
    key = site.home / terminal_config.KEY_NAME
    key.write_bytes(b"not base64!\n")
    capsys.readouterr()

    assert terminal(site, "pending") == 1
    assert "is damaged" in capsys.readouterr().err
    (site.home / terminal_config.QUEUE_NAME).write_bytes(b"garbage" * 1000)
    key.unlink()
    assert init(site) == 1
    assert "cannot open the queue" in capsys.readouterr().err
