"""The data dir is the gateway's alone: 0700, every file 0600, whatever the umask (issue 13).

The whole running gateway is checked in tests/e2e/test_personal_data.py; here the store's own
paths: opening an existing loose data dir, a backup, a restore, a rebuilt store.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.store import maintenance
from gateway.store.errors import KeyFileError, StoreError
from gateway.store.files import tighten
from gateway.store.opening import open_store


@pytest.fixture(autouse=True)
def loose_umask() -> Iterator[None]:
    before = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(before)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_store_is_private_with_its_wal_and_key(tmp_path: Path) -> None:
    data = tmp_path / "data"
    open_store(data / "rentgate.db", data / "keys" / "field.key")
    assert _mode(data) == 0o700
    assert _mode(data / "keys") == 0o700
    for name in ("rentgate.db", "rentgate.db-wal", "rentgate.db-shm", "keys/field.key"):
        if (data / name).exists():
            assert _mode(data / name) == 0o600, name


def test_a_data_dir_left_loose_is_closed_at_start_and_said_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = tmp_path / "data"
    open_store(data / "rentgate.db", data / "keys" / "field.key")
    os.chmod(data, 0o755)
    os.chmod(data / "rentgate.db", 0o644)
    (data / "tls").mkdir(mode=0o755)
    (data / "tls" / "api.crt").write_text("x")
    os.chmod(data / "tls" / "api.crt", 0o644)
    os.symlink("/etc/hostname", data / "elsewhere")
    with caplog.at_level(logging.WARNING):
        open_store(data / "rentgate.db", data / "keys" / "field.key")
    assert "private to the gateway" in caplog.text
    assert [_mode(data), _mode(data / "rentgate.db"), _mode(data / "tls")] == [0o700, 0o600, 0o700]
    assert _mode(data / "tls" / "api.crt") == 0o600
    assert (data / "elsewhere").is_symlink()  # left alone, and so is its target
    assert tighten(data) == []


def test_a_key_file_others_could_read_is_still_refused_not_quietly_fixed(tmp_path: Path) -> None:
    data = tmp_path / "data"
    open_store(data / "rentgate.db", data / "keys" / "field.key")
    os.chmod(data / "keys" / "field.key", 0o644)
    with pytest.raises(KeyFileError, match="readable by others"):
        open_store(data / "rentgate.db", data / "keys" / "field.key")


def test_backups_restores_and_rebuilt_stores_are_private(tmp_path: Path) -> None:
    data = tmp_path / "data"
    database = data / "rentgate.db"
    open_store(database, data / "keys" / "field.key")
    backup = tmp_path / "gw.backup"
    maintenance.backup(database, backup)
    assert _mode(backup) == 0o600
    with pytest.raises(StoreError, match="not overwriting"):
        maintenance.backup(database, backup)
    maintenance.restore(backup, database)
    assert _mode(database) == 0o600
    for side in ("-wal", "-shm"):
        database.with_name(database.name + side).unlink(missing_ok=True)
    database.write_bytes(b"not a database at all" * 100)
    maintenance.recover(database)
    assert _mode(database) == 0o600
