"""Junk on the command topics, as a flooder sends it: the test and the benchmark share it."""

from __future__ import annotations

import json
import os


def junk_command(serial: int, root: str, gateway_id: str) -> tuple[str, bytes]:
    """One message of six kinds on a command topic under `root`: garbage, wrong shapes,
    oversized, unknown commands, another addressee, and a well-formed envelope for
    `gateway_id` whose signature does not verify (it costs a verification)."""
    kind = serial % 6
    if kind == 0:
        return f"{root}/door.unlock", b"\x00" + os.urandom(64)
    if kind == 1:
        return f"{root}/allowlist.delta", b"allowlist, please"
    if kind == 2:
        return f"{root}/self.destruct", b"{}"
    if kind == 3:
        return f"{root}/door.unlock", b"{" + b"x" * 70_000 + b"}"
    if kind == 4:
        return f"{root}/door.unlock", json.dumps({"gw": "GW-OTHER", "sig": "x"}).encode()
    forged = {
        "v": 1,
        "id": f"00000000-0000-4000-8000-{serial:012d}",
        "cmd": "resync",
        "gw": gateway_id,
        "iat": 1,
        "exp": 2,
        "kid": "k-forged",
        "body": {},
        "sig": "AAAA",
    }
    return f"{root}/resync", json.dumps(forged).encode()
