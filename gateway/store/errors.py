"""The store's errors: a small tree, raised at one boundary with the cause kept."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager


class StoreError(Exception):
    """Something went wrong in the gateway's SQLite store."""


class StorageFullError(StoreError):
    """The disk (or the database's size limit) is full; nothing of this write was kept."""


class SchemaTooNewError(StoreError):
    """The database was written by a newer Rentgate: refuse rather than guess."""


class KeyFileError(StoreError):
    """The field-encryption key file is missing, malformed or too widely readable."""


@contextmanager
def translated() -> Iterator[None]:
    """Map sqlite3's errors to the store's tree, keeping the cause."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        text = str(exc).lower()
        if "full" in text:
            raise StorageFullError(str(exc)) from exc
        raise StoreError(str(exc)) from exc
    except sqlite3.DatabaseError as exc:
        raise StoreError(str(exc)) from exc
