"""Personal data end to end (issue 13): terminals capture through the running gateway's own API;
a wildcard subscriber on the real Mosquitto and a byte search of every file in the data dir and
of a backup find no full ID number, name or phone; the platform opens the sealed fields with its
private key and gets them back exactly, and a box tampered with in transit is refused; the data
dir is private though the umask is 022."""

from __future__ import annotations

import copy
import json
import os
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.residence.intake import issue_token_offline
from gateway.sync.link import BrokerSettings
from gateway.sync.local_broker import LocalBroker
from gateway.sync.platform_client import PlatformClient
from terminal.cli import main as terminal
from tests.support.contract import opened
from tests.support.gateway import (
    InProcessGateway,
    Subscriber,
    enrol_cards,
    load,
    make_id_number,
    platform_encryption_key,
    wait_until,
    write_config,
)

GW = "GW-SEALED"
RECORDS = 12
WATCH_S = 25


def _person(serial: int) -> dict[str, str]:
    return {
        "id_number": make_id_number(serial, birth="19870707").value,
        "name": f"封存租户{serial:03d}",
        "phone": f"1391234{serial:04d}",
        "workplace": f"杭州某某科技{serial:03d}有限公司",
    }


@pytest.fixture
def loose_umask() -> Iterator[None]:
    """The umask many systems default to: files 0644, folders 0755 unless the gateway says so."""
    before = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(before)


def _files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file() and not p.is_symlink())


def _leaks(blob: bytes, people: list[dict[str, str]]) -> list[str]:
    found = []
    for person in people:
        for field, value in person.items():
            if value.encode("utf-8") in blob:
                found.append(f"{field} {value}")
    return found


def _rentgate(*args: str) -> subprocess.Popen[str]:
    """`rentgate …` as its own process (it sets its own umask, as in production)."""
    return subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "--log-format", "text", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


class Watch:
    """`rentgate platform watch --decrypt-key`, its lines collected as they come."""

    def __init__(self, broker: LocalBroker, key: Path) -> None:
        self.process = _rentgate(
            "platform", "watch", "--broker", broker.url, "--gateway", GW,
            "--seconds", str(WATCH_S), "--decrypt-key", str(key),
        )  # fmt: skip
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        self.lines.extend(self.process.stdout)

    def finish(self) -> tuple[int, str]:
        """Its exit status and stderr, once its time is up."""
        assert self.process.stderr is not None
        err = self.process.stderr.read()
        returncode = self.process.wait(WATCH_S + 30)
        self._reader.join(10)
        self.process.stdout.close()  # type: ignore[union-attr]
        self.process.stderr.close()
        return returncode, err

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.finish()


def test_captures_are_sealed_on_the_wire_and_on_disk_and_open_only_at_the_platform(
    tmp_path: Path,
    broker: LocalBroker,
    loose_umask: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config_path = write_config(tmp_path, broker.url, gateway_id=GW)
    config = load(config_path)
    platform = platform_encryption_key(tmp_path)
    people = [_person(serial) for serial in range(RECORDS)]
    enrol_cards(config, ["04AA0001", "04AA0002"])  # enrolled tenants: sealed with the key ring
    tenants = [{"id_number": make_id_number(n).value, "name": f"Tenant {n}"} for n in range(2)]
    everything = Subscriber(broker.port, "#", client_id="sealed-wildcard")
    watch: Watch | None = None
    backup = tmp_path / "backups" / "gw.db"
    backup.parent.mkdir()
    home = ["--home", str(tmp_path / "handheld")]
    try:
        with InProcessGateway(config) as running:
            gateway = running.gateway
            wait_until(lambda: _state(everything), 10, "the gateway's birth")
            watch = Watch(broker, platform.public_path.with_suffix(".key"))
            wait_until(lambda: any("/state " in line for line in watch.lines), 20, "watch on")
            token = issue_token_offline(config.gateway.database, "T-01", gateway.clock)
            wait_until(lambda: gateway.api_server.url is not None, 10, "the API listening")
            assert gateway.api_server.url is not None
            assert terminal([*home, "init", "--terminal", "T-01", "--gateway",
                             gateway.api_server.url, "--token", token,
                             "--ca", str(gateway.api_certificate)]) == 0  # fmt: skip
            for person in people:
                assert terminal([*home, "capture", "registration",
                                 "--id-number", person["id_number"], "--name", person["name"],
                                 "--phone", person["phone"], "--workplace", person["workplace"],
                                 "--building", GW, "--unit", "1",
                                 "--moved-in", "2026-11-01"]) == 0  # fmt: skip
            assert terminal([*home, "sync"]) == 0
            capsys.readouterr()
            wait_until(lambda: len(_captured(everything)) >= RECORDS, 20, "every capture")
            made = _rentgate("backup", "--config", str(config_path), "--out", str(backup))
            _out, made_err = made.communicate(timeout=60)
            assert made.returncode == 0, made_err
            # (b) while the gateway runs, so its WAL and shm are there to search too.
            data_files = _files(config.gateway.data_dir)
            names = {p.name for p in data_files}
            assert {"rentgate.db", "rentgate.db-wal", "rentgate.db-shm", "field.key"} <= names
            for path in [*data_files, backup]:
                leaks = _leaks(path.read_bytes(), [*people, *tenants])
                assert not leaks, f"personal data in {path}: {leaks}"
            _assert_private(config.gateway.data_dir, backup)
            sealed = _captured(everything)
            _publish_forgery(broker, sealed[0])
            wait_until(lambda: any("sealed_error" in line for line in watch.lines), 20, "forgery")
        returncode, err = watch.finish()
    finally:
        everything.close()
        if watch is not None:
            watch.kill()
    # (a) a subscriber to everything on the broker saw only ciphertext.
    traffic = b"\n".join(m.topic.encode() + b" " + m.payload for m in everything.snapshot())
    assert not _leaks(traffic, people)
    # The platform opens every box with its private key and gets back exactly what was captured.
    clear = {e["record"]: e for e in opened(sealed, GW, [platform.opening])}
    assert sorted(
        (e["id_number"], e["name"], e["phone"], e["workplace"]) for e in clear.values()
    ) == (sorted(tuple(p.values()) for p in people))
    assert all(e["id_masked"] == e["id_number"][:3] + "*" * 11 + e["id_number"][-4:]
               for e in clear.values())  # fmt: skip
    # So does the operator's `rentgate platform watch --decrypt-key`, and only there.
    assert returncode == 0, err
    shown = _watched_captures(watch.lines)
    (forged,) = [e for e in shown if "sealed_error" in e]
    assert forged["sealed_error"] == "failed_authentication"  # left sealed, said why, counted
    assert "1 sealed box(es) did not open" in err
    watched = [e for e in shown if e is not forged]
    assert {(e["id_number"], e["name"], e["phone"]) for e in watched} == {
        (p["id_number"], p["name"], p["phone"]) for p in people
    }
    assert all("sealed" not in e for e in watched)


def _captured(subscriber: Subscriber) -> list[dict[str, Any]]:
    return [
        e for e in subscriber.events()
        if e["type"] == "registration.captured" and e["terminal"] == "T-01"
        and e["building"] == GW
    ]  # fmt: skip


def _publish_forgery(broker: LocalBroker, genuine: dict[str, Any]) -> None:
    """A capture whose box was tampered with in transit, published where the gateway's go."""
    forged = copy.deepcopy(genuine)
    forged["seq"] = 10**9
    ct = forged["sealed"]["ct"]
    forged["sealed"]["ct"] = ct[:10] + ("A" if ct[10] != "A" else "B") + ct[11:]
    envelope = {"v": 1, "gw": GW, "events": [forged]}
    with PlatformClient(BrokerSettings.from_url(broker.url, "forger")) as client:
        client.publish(f"rentgate/v1/{GW}/events", json.dumps(envelope).encode())


def _state(subscriber: Subscriber) -> bool:
    return any(m.topic == f"rentgate/v1/{GW}/state" for m in subscriber.snapshot())


def _watched_captures(lines: list[str]) -> list[dict[str, Any]]:
    events = []
    for line in lines:
        topic, _, text = line.partition(" ")
        if topic == f"rentgate/v1/{GW}/events":
            events += [
                e for e in json.loads(text)["events"] if e["type"] == "registration.captured"
            ]
    return events


def _assert_private(data_dir: Path, backup: Path) -> None:
    """0700 for the data dir and every folder in it, 0600 for every file, and the backup."""
    loose = []
    for path in [data_dir, *data_dir.rglob("*")]:
        mode = path.lstat().st_mode
        wanted = 0o700 if stat.S_ISDIR(mode) else 0o600 if stat.S_ISREG(mode) else None
        if wanted is not None and stat.S_IMODE(mode) != wanted:
            loose.append(f"{path} {stat.S_IMODE(mode):o}")
    assert not loose, loose
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    assert os.umask(0o022) == 0o022  # the gateway never changed this process's umask
