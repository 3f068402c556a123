"""Fixtures: a real Mosquitto per test session, and one of its own for a test that stops it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.sync.local_broker import LocalBroker


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    """A Mosquitto shared by the tests that never stop it."""
    with LocalBroker(workdir=tmp_path_factory.mktemp("mosquitto")) as running:
        yield running


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[LocalBroker]:
    """A Mosquitto this test alone may stop, kill and restart."""
    workdir = tmp_path / "mosquitto"
    workdir.mkdir()
    with LocalBroker(workdir=workdir) as running:
        yield running


@pytest.fixture
def persistent_broker(tmp_path: Path) -> Iterator[LocalBroker]:
    """A Mosquitto of this test's own that keeps a platform's persistent session (and what is
    queued for it) across a stop and a restart."""
    workdir = tmp_path / "mosquitto"
    workdir.mkdir()
    with LocalBroker(workdir=workdir, persistent=True) as running:
        yield running
