"""`rentgate platform keygen --encryption` makes the key pair gateways seal to; a gateway whose
`[platform] encryption_key` is not such a key refuses to start, saying which file and why."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

from gateway.config import parse_config
from gateway.domain.sealed_box import OpeningKey, SealingKey


def _rentgate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "--log-format", "text", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_keygen_encryption_makes_a_private_key_and_a_public_key_for_gateways(
    tmp_path: Path,
) -> None:
    made = _rentgate("platform", "keygen", "--encryption", "--dir", str(tmp_path / "keys"))
    assert made.returncode == 0, made.stderr
    (private,) = (tmp_path / "keys").glob("x-*.key")
    public = private.with_suffix(".pub")
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    key = OpeningKey.load(private)
    assert SealingKey.load(public) == key.public
    assert key.kid in made.stdout
    assert "[platform] encryption_key" in made.stdout
    config = parse_config(
        f'[gateway]\nid = "G"\ndata_dir = "{tmp_path}"\n[mqtt]\nurl = "mqtt://h"\n'
        f'[platform]\nencryption_key = "{public}"\n'
    )
    assert config.platform.encryption_key == public


def test_a_gateway_with_a_bad_encryption_key_refuses_to_start_and_says_why(tmp_path: Path) -> None:
    bad = tmp_path / "platform.pub"
    bad.write_text("-----BEGIN PUBLIC KEY-----\nnot a key\n-----END PUBLIC KEY-----\n")
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'[gateway]\nid = "GW-BADKEY"\ndata_dir = "{tmp_path / "data"}"\n'
        '[mqtt]\nurl = "mqtt://127.0.0.1:1"\n'
        f'[platform]\nencryption_key = "{bad}"\n'
    )
    started = _rentgate("run", "--config", str(config))
    assert started.returncode == 2
    assert f"{bad}: not a PEM public key" in started.stderr
    assert "Traceback" not in started.stderr
    assert not (tmp_path / "data").exists()  # refused before the store was touched
