"""Broker URLs, TLS policy and the reconnect backoff."""

from __future__ import annotations

import random
import ssl
from pathlib import Path

import pytest

from gateway.sync.link import BrokerSettings, TlsSettings, backoff_delay


def test_plain_and_tls_urls() -> None:
    plain = BrokerSettings.from_url("mqtt://127.0.0.1", "GW-1")
    assert (plain.host, plain.port, plain.tls) == ("127.0.0.1", 1883, None)
    secure = BrokerSettings.from_url("mqtts://[::1]", "GW-1")
    assert (secure.host, secure.port) == ("::1", 8883)
    assert secure.tls == TlsSettings(), "mqtts always means TLS, even with no files given"


def test_tls_files_never_ride_on_a_plaintext_url() -> None:
    with pytest.raises(ValueError, match="use mqtts://"):
        BrokerSettings.from_url("mqtt://127.0.0.1", "GW-1", tls=TlsSettings(Path("ca.pem")))
    with pytest.raises(ValueError, match="mqtt://host"):
        BrokerSettings.from_url("tcp://127.0.0.1", "GW-1")


def test_tls_context_verifies_the_server() -> None:
    context = TlsSettings().context()
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname is True
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2


def test_backoff_is_full_jitter_and_capped() -> None:
    random.seed(1)
    for attempt in range(30):
        ceiling = min(30.0, 0.5 * 2**attempt)
        delays = [backoff_delay(attempt, 30.0) for _ in range(200)]
        assert all(0 <= delay <= ceiling for delay in delays)
        assert max(delays) > ceiling * 0.8, "spread over the whole range, not clustered"
