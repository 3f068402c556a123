"""Files of the data dir: readable by the gateway's own user only, whatever the umask.

The data dir holds the store (sealed personal data, keyed hashes), its key
file, token hashes, the TLS key and the setup code: nobody else on the machine
has any business reading any of it. `rentgate` sets umask 077 when it starts
(gateway/cli/main.py); these helpers hold the line where the gateway is built
in-process (tests, embedding) or files were made by an older release. SQLite
gives a database's -wal and -shm files the database file's own mode, so a
database created here 0600 keeps its companions 0600 too.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Collection
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600
SHARED_DIR_MODE = 0o750
SHARED_FILE_MODE = 0o660
SHARED_KEY_MODE = 0o640


def private_dir(path: Path) -> Path:
    """Create `path` (and missing parents) and make it 0700."""
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    os.chmod(path, DIR_MODE)
    return path


def private_file(path: Path, *, exclusive: bool = False) -> None:
    """Create `path` empty if missing (FileExistsError with `exclusive`) and make it 0600.

    Never truncates, never follows a symlink planted in its place.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | (os.O_EXCL if exclusive else 0)
    fd = os.open(path, flags, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)


def write_private(path: Path, data: bytes) -> None:
    """Replace `path` atomically with `data` in a file that is 0600 from its first byte."""
    temporary = path.with_name(f".{path.name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)


def store_shares(database: Path, key_file: Path) -> dict[Path, int]:
    """The paths the web process reaches when it runs as another user of the store's group
    (`[gateway] store_shared_with_group`), with their modes: the folders it must pass, the
    store and its WAL read-write, the field key read-only. Nothing else in the data dir."""
    shares = {database.parent: SHARED_DIR_MODE, key_file.parent: SHARED_DIR_MODE}
    for path in (database, Path(f"{database}-wal"), Path(f"{database}-shm")):
        shares[path] = SHARED_FILE_MODE
    shares[key_file] = SHARED_KEY_MODE
    return shares


def share(shares: dict[Path, int]) -> None:
    """Give each existing path of `shares` its mode."""
    for path, mode in shares.items():
        if path.exists() and stat.S_IMODE(path.lstat().st_mode) != mode:
            os.chmod(path, mode)


def tighten(directory: Path, keep: Collection[Path] = ()) -> list[Path]:
    """Make `directory` and every folder in it 0700 and every file 0600; return what changed.

    Run at start so a data dir written under a loose umask (or by an older
    release) is closed before anything is added to it. Symlinks are left alone,
    and so are the paths in `keep` (what `store_shares` opens to the web's group).
    """
    changed: list[Path] = []
    if not directory.is_dir():
        return changed
    paths = [directory]
    for root, folders, files in os.walk(directory):  # does not descend into symlinked folders
        paths += [Path(root) / name for name in (*folders, *files)]
    for path in paths:
        if path in keep:
            continue
        mode = path.lstat().st_mode
        if stat.S_ISDIR(mode):
            wanted = DIR_MODE
        elif stat.S_ISREG(mode):
            wanted = FILE_MODE
        else:
            continue  # symlinks, FIFOs, sockets: not ours to change
        if stat.S_IMODE(mode) != wanted:
            os.chmod(path, wanted)
            changed.append(path)
    return changed
