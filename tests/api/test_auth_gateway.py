"""First-run setup and login against the API a running gateway serves (HTTPS, its own cert)."""

from __future__ import annotations

from pathlib import Path

from gateway.sync.local_broker import LocalBroker
from tests.support.gateway import InProcessGateway, load, wait_until, write_config


def test_first_admin_from_the_setup_code_then_login(tmp_path: Path, broker: LocalBroker) -> None:
    config = load(write_config(tmp_path, broker.url, gateway_id="GW-AUTH"))
    with InProcessGateway(config) as running:
        code_file = config.gateway.data_dir / "setup-code"
        wait_until(code_file.exists, 10, "the setup code written at first start")
        assert oct(code_file.stat().st_mode & 0o777) == "0o600"
        with running.api_client() as web:
            body = {"name": "admin", "password": "a long enough passphrase"}
            assert web.post("/api/v1/setup", json={**body, "code": "wrong"}).status_code == 403
            code = code_file.read_text().strip()
            assert web.post("/api/v1/setup", json={**body, "code": code}).status_code == 201
            assert not code_file.exists()
            again = web.post("/api/v1/setup", json={**body, "code": code})
            assert again.status_code == 409
            assert web.get("/api/v1/me").status_code == 401
            login = web.post("/api/v1/login", json=body)
            assert login.status_code == 200
            cookie = login.headers["set-cookie"].lower()
            assert "httponly" in cookie
            assert "samesite=strict" in cookie
            assert "secure" in cookie
            me = web.get("/api/v1/me")  # the client kept the session cookie
            assert me.json()["role"] == "admin"
