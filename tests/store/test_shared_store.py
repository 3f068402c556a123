"""A split install: the web's user reaches the store, its WAL and key, and nothing else (issue 13).

Under systemd the door core runs as `rentgate` and the web as `rentgate-web`,
whose primary group is `rentgate`; the config says `[gateway]
store_shared_with_group = true`. The store is opened here as the core opens
it, its files given to a test user and group, and then real processes run
as other users (`setpriv`, the kernel's own permission checks) try to open
each file: one in the group (the web's user) and one outside it (any other
account on the machine).

The Python processes themselves cannot be run as other users on this machine
(the interpreter lives under /root, 0700), so the web's user is played by
`sh`; what it can open is what `rentgate web` could open.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.config import Config
from gateway.runtime.parts import open_store
from gateway.store.crypto import KeyFileError, KeyRing
from gateway.store.db import connect
from tests.support.gateway import load, write_config

CORE_UID, WEB_UID, STRANGER_UID, STORE_GID, OTHER_GID = 64101, 64102, 64103, 64100, 64109


@pytest.fixture
def base() -> Iterator[Path]:
    """A folder every test user may pass through (pytest's own tmp_path is root's only)."""
    path = Path(tempfile.mkdtemp(prefix="rentgate-shared-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path)


def _config(base: Path, *, shared: bool) -> Config:
    path = write_config(base, "mqtt://127.0.0.1:1", sealing=False)
    text = path.read_text()
    text = text.replace(
        "commit_window_ms = 2\n",
        f"commit_window_ms = 2\nstore_shared_with_group = {'true' if shared else 'false'}\n",
    )
    path.write_text(text)
    return load(path)


def _as(uid: int, gid: int, script: str, *paths: Path) -> bool:
    """True if `script` (sh, with the paths as $1…) succeeds run as uid:gid with no other group."""
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is missing")
    result = subprocess.run(
        ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "sh", "-c", script, "sh",
         *map(str, paths)],
        capture_output=True,
        timeout=30,
        check=False,
    )  # fmt: skip
    return result.returncode == 0


def _opened_as_core(config: Config) -> None:
    """Open the store as the door core does, make a WAL and the core's own files, and hand it
    all to the core's user and the store's group (systemd's StateDirectory= does the same)."""
    open_store(config)
    conn = connect(config.gateway.database)
    conn.execute("CREATE TABLE IF NOT EXISTS probe (x)")
    (config.gateway.data_dir / "settings.json").write_text("{}")
    os.chmod(config.gateway.data_dir / "settings.json", 0o600)
    (config.gateway.data_dir / "status.json").write_text("{}")
    os.chmod(config.gateway.data_dir / "status.json", 0o600)
    for root, folders, files in os.walk(config.gateway.data_dir):
        for name in [".", *folders, *files]:
            os.chown(Path(root) / name, CORE_UID, STORE_GID)
    conn.close()
    open_store(config)  # a restart of the core keeps the shares (and closes the rest)


def test_the_webs_user_reaches_the_store_and_key_and_nothing_else(base: Path) -> None:
    config = _config(base, shared=True)
    _opened_as_core(config)
    data, key = config.gateway.data_dir, config.gateway.keys
    database = config.gateway.database
    assert stat.S_IMODE(data.stat().st_mode) == 0o750
    assert stat.S_IMODE(database.stat().st_mode) == 0o660
    assert stat.S_IMODE(key.stat().st_mode) == 0o640
    read, read_write = 'exec 3<"$1"', 'exec 3<>"$1"'
    web, stranger = (WEB_UID, STORE_GID), (STRANGER_UID, OTHER_GID)
    assert _as(*web, read_write, database), "the web writes the store"
    assert _as(*web, read, key), "the web reads the field key"
    assert not _as(*web, read_write, key), "but cannot change it"
    for private in (data / "settings.json", data / "status.json"):
        assert not _as(*web, read, private), f"{private.name} stays the core's"
    for path in (database, key, data / "status.json"):
        assert not _as(*stranger, read, path), f"nobody else reads {path.name}"


def test_without_the_setting_the_data_dir_is_the_cores_alone(base: Path) -> None:
    config = _config(base, shared=False)
    _opened_as_core(config)
    assert stat.S_IMODE(config.gateway.data_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(config.gateway.database.stat().st_mode) == 0o600
    assert not _as(WEB_UID, STORE_GID, 'exec 3<"$1"', config.gateway.database)


def test_a_key_open_to_the_world_is_refused_even_when_shared(base: Path) -> None:
    config = _config(base, shared=True)
    open_store(config)
    os.chmod(config.gateway.keys, 0o644)
    with pytest.raises(KeyFileError, match="chmod 640"):
        KeyRing.load_or_create(config.gateway.keys, group_readable=True)
