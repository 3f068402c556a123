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
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


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


def tighten(directory: Path) -> list[Path]:
    """Make `directory` and every folder in it 0700 and every file 0600; return what changed.

    Run at start so a data dir written under a loose umask (or by an older
    release) is closed before anything is added to it. Symlinks are left alone.
    """
    changed: list[Path] = []
    if not directory.is_dir():
        return changed
    paths = [directory]
    for root, folders, files in os.walk(directory):  # does not descend into symlinked folders
        paths += [Path(root) / name for name in (*folders, *files)]
    for path in paths:
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
