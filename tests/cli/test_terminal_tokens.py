"""`rentgate terminal add|revoke`: a co-ordinator's handheld gets its token, and loses it."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli import main
from gateway.store import terminal_records
from gateway.store.db import connect
from tests.support.gateway import write_config


def _check(database: Path, token: str) -> terminal_records.TokenCheck:
    conn = connect(database, readonly=True)
    try:
        return terminal_records.verify_token(conn, token)
    finally:
        conn.close()


def test_issue_show_the_certificate_and_revoke(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, "mqtt://127.0.0.1:1")
    database = tmp_path / "data" / "rentgate.db"
    assert main(["terminal", "add", "--config", str(config), "T-07"]) == 0
    out = capsys.readouterr().out.splitlines()
    token = out[1]
    assert token.startswith("T-07:")
    assert "SHA-256 fingerprint" in out[-1]
    assert Path(out[2].rpartition(": ")[2]).exists()
    assert _check(database, token).terminal == "T-07"

    assert main(["terminal", "add", "--config", str(config), "T-07"]) == 0  # re-issued
    reissued = capsys.readouterr().out.splitlines()[1]
    assert _check(database, token).terminal is None
    assert _check(database, reissued).terminal == "T-07"

    assert main(["terminal", "revoke", "--config", str(config), "T-07"]) == 0
    assert "revoked" in capsys.readouterr().out
    assert _check(database, reissued).problem is terminal_records.TokenProblem.REVOKED
    assert main(["terminal", "revoke", "--config", str(config), "T-07"]) == 1
    assert "no active terminal" in capsys.readouterr().err
