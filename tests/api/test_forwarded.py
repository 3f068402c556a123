"""`X-Forwarded-For` is believed only from `[api] trusted_proxies`, and then only in part.

The real middleware in front of a one-route app, driven by TestClient with the
peer address each case needs; the running gateway's default (no proxies, a
header from loopback ignored) is in test_web_hardening.py.
"""

from __future__ import annotations

import warnings
from ipaddress import ip_network

import pytest
from fastapi import FastAPI, Request

from gateway.api.forwarded import ForwardedFor
from gateway.config import ConfigError, parse_config

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", "Using `httpx` with `starlette.testclient`", UserWarning)
    from fastapi.testclient import TestClient

PROXY = ("10.0.0.2", 40000)
TRUSTED = (ip_network("10.0.0.0/8"), ip_network("::1"))
MINIMAL = '[gateway]\nid = "GW-1"\ndata_dir = "/tmp/x"\n[mqtt]\nurl = "mqtt://127.0.0.1"\n'


def _seen_as(peer: tuple[str, int], forwarded: str | None, trusted: tuple = TRUSTED) -> str:  # type: ignore[type-arg]
    app = FastAPI()
    app.add_middleware(ForwardedFor, trusted=trusted)

    @app.get("/who")
    async def who(request: Request) -> str:
        assert request.client is not None
        return request.client.host

    headers = {"X-Forwarded-For": forwarded} if forwarded is not None else {}
    with TestClient(app, client=peer) as client:
        return str(client.get("/who", headers=headers).json())


def test_the_header_counts_only_from_a_trusted_proxy() -> None:
    assert _seen_as(PROXY, "203.0.113.9") == "203.0.113.9"
    assert _seen_as(("192.0.2.7", 1), "203.0.113.9") == "192.0.2.7"  # not a proxy: ignored
    assert _seen_as(("127.0.0.1", 1), "203.0.113.9") == "127.0.0.1"  # nor is loopback by itself
    assert _seen_as(PROXY, "203.0.113.9", trusted=()) == "10.0.0.2"  # the default: none


def test_the_client_is_the_right_most_address_no_proxy_wrote() -> None:
    assert _seen_as(PROXY, "198.51.100.1, 203.0.113.9, 10.1.2.3") == "203.0.113.9"
    assert _seen_as(PROXY, "10.9.9.9, 10.1.2.3") == "10.9.9.9"  # proxies all the way
    assert _seen_as(PROXY, "not-an-address, 203.0.113.9") == "10.0.0.2"  # garbage: the peer
    assert _seen_as(PROXY, "") == "10.0.0.2"
    assert _seen_as(PROXY, None) == "10.0.0.2"


def test_trusted_proxies_is_a_list_of_addresses_or_networks() -> None:
    assert parse_config(MINIMAL, environ={}).api.trusted_proxies == []
    config = parse_config(MINIMAL + '[api]\ntrusted_proxies = ["10.0.0.0/8", "::1"]\n', environ={})
    assert config.api.trusted_proxies == list(TRUSTED)
    with pytest.raises(ConfigError) as refused:
        parse_config(MINIMAL + '[api]\ntrusted_proxies = ["proxy.local"]\n', environ={})
    assert refused.value.problems[0].startswith("api.trusted_proxies.0")
