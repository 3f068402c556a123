"""`rentgate demo`, as the README's first command runs it, shows what the platform receives."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from gateway.ops.status import read_status_file


def test_demo_prints_the_platforms_view_and_stops_by_itself(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway.cli",
            "demo",
            "--duration",
            "5",
            "--rate",
            "8",
            "--workdir",
            str(tmp_path / "demo"),
            "--web-port",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "RENTGATE_LOG_LEVEL": "WARNING"},
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stdout.splitlines()
    assert any("state  online=True" in line for line in lines)
    seqs = [int(m.group(1)) for line in lines if (m := re.search(r"seq\s+(\d+)", line))]
    assert len(seqs) >= 10
    assert seqs == sorted(seqs)
    assert seqs[0] == 1
    status = read_status_file(tmp_path / "demo" / "data" / "status.json")
    assert status is not None
    assert status.link.acks_applied > 0, "the demo's platform acknowledges what it showed"
    assert status.link.acked_seq >= seqs[len(seqs) // 2], "its acks keep up with what it shows"
    assert any("ALLOW granted" in line for line in lines)
    assert any("DENY  unknown" in line for line in lines)
    assert any("DENY  revoked" in line for line in lines)
    assert lines[-1].endswith("online=False backlog=None"), "a clean stop is announced"
    web = next(line for line in lines if line.startswith("Web UI: https://127.0.0.1:"))
    assert re.search(r"https://127\.0\.0\.1:\d+/ui/", web)
    logins = [line for line in lines if line.startswith("  log in as demo-")]
    assert len(logins) == 2, "an admin and a landlord, each with a fresh password"
    for line in lines:
        assert not re.search(r"\d{17}[\dX]", line), "no full ID number is ever printed"
