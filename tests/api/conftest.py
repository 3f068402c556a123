"""The `web` fixture: a running gateway with two landlords' data (tests/support/web.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gateway.sync.local_broker import LocalBroker
from tests.support.web import WebGateway, start_web_gateway


@pytest.fixture(scope="module")
def web(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, broker: LocalBroker
) -> Iterator[WebGateway]:
    """One gateway per test module: the tests of a module may change what it holds."""
    module = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")
    yield from start_web_gateway(tmp_path_factory.mktemp(module), broker)
