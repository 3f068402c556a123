"""The store's errors: a small tree, raised at one boundary with the cause kept."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

from gateway.errors import RentgateError


class StoreError(RentgateError):
    """Something went wrong in the gateway's SQLite store."""


class StorageFullError(StoreError):
    """The disk (or the database's size limit) is full; nothing of this write was kept."""


class SchemaTooNewError(StoreError):
    """The database was written by a newer Rentgate: refuse rather than guess."""


class KeyFileError(StoreError):
    """The field-encryption key file is missing, malformed or too widely readable."""


def as_store_error(exc: sqlite3.Error) -> StoreError:
    """The store's error for a sqlite3 error (raise it `from exc`)."""
    if isinstance(exc, sqlite3.OperationalError) and "full" in str(exc).lower():
        return StorageFullError(str(exc))
    return StoreError(str(exc))


@contextmanager
def translated() -> Iterator[None]:
    """Map sqlite3's errors to the store's tree, keeping the cause."""
    try:
        yield
    except sqlite3.Error as exc:
        raise as_store_error(exc) from exc
