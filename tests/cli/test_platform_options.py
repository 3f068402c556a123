"""`rentgate platform send/watch` broker options: the same for both, checked together, and a
user name with a password file logs in to a Mosquitto that wants one."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.sync.local_broker import LocalBroker, free_port

USER, PASSWORD = "ops", "s3cret-for-tests"


@pytest.fixture
def password_broker(tmp_path: Path) -> Iterator[LocalBroker]:
    """A Mosquitto of this test's own that lets in only USER with PASSWORD."""
    workdir = tmp_path / "mosquitto"
    workdir.mkdir()
    passwords = workdir / "passwords"
    subprocess.run(
        ["mosquitto_passwd", "-c", "-b", str(passwords), USER, PASSWORD], check=True, timeout=30
    )
    passwords.chmod(0o600)
    port = free_port()
    listener = f"listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {passwords}\n"
    with LocalBroker(port, workdir=workdir, listener_config=listener) as running:
        yield running


@pytest.mark.parametrize(
    ("options", "complaint"),
    [
        (["--ca", "ca.pem"], "--ca/--cert/--client-key need an mqtts:// broker"),
        (["--broker", "mqtts://b", "--cert", "c.pem"], "--cert and --client-key go together"),
        (["--password-file", "pw"], "--password-file needs --username"),
        (["--username", "u", "--password-file", "/nonexistent/pw"], "cannot read"),
        (["--broker", "http://b"], "--broker: broker URL must be mqtt://"),
    ],
)
def test_options_that_do_not_go_together_are_refused(
    options: list[str], complaint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    broker = [] if "--broker" in options else ["--broker", "mqtt://127.0.0.1:1"]
    code = main(["platform", "watch", *broker, *options, "--seconds", "0"])
    assert code == 2
    assert complaint in capsys.readouterr().err


def test_a_password_file_logs_in_and_none_is_refused(
    password_broker: LocalBroker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    password_file = tmp_path / "pw"
    password_file.write_text(PASSWORD + "\n", encoding="utf-8")
    common = ["platform", "watch", "--broker", password_broker.url, "--seconds", "0.2"]
    assert main([*common, "--username", USER, "--password-file", str(password_file)]) == 0
    assert "message(s)" in capsys.readouterr().err
    assert main(common) == 3
    assert "refused the connection" in capsys.readouterr().err
    for protocol in ("5", "3.1.1"):
        logged_in = [*common, "--protocol", protocol, "--username", USER]
        assert main([*logged_in, "--password-file", str(password_file)]) == 0
