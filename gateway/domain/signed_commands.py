"""Signed platform commands: the envelope, its canonical encoding, and verification.

A command is one JSON object:

    {"v": 1, "id": "<uuid>", "cmd": "allowlist.delta", "gw": "GW-0001",
     "iat": 1764300000, "exp": 1764300300, "kid": "k-…", "body": {…}, "sig": "<base64url>"}

`sig` is Ed25519 over ``b"rentgate-cmd-v1\\n"`` followed by the canonical JSON of
every other member (keys sorted, no whitespace, UTF-8, integers only: floats
are refused so that every platform language encodes numbers identically). The
target gateway and the command name are inside the signature, so a command
cannot be replayed to another gateway or under another topic. Checks that need
state (already seen, version in force) belong to the store; everything that
can be decided from the bytes and the clock is decided here.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from gateway.domain.signing import SigningKey, VerifyKey
from gateway.errors import RentgateError

ENVELOPE_VERSION = 1
SIGNING_CONTEXT = b"rentgate-cmd-v1\n"
CLOCK_SKEW_S = 300
"""How far in the future `iat` may lie: gateways without an RTC drift."""


class CommandName(StrEnum):
    ALLOWLIST_SNAPSHOT = "allowlist.snapshot"
    ALLOWLIST_DELTA = "allowlist.delta"
    PERSON_STATUS = "person.status"
    CREDENTIAL_REVOKE = "credential.revoke"
    DOOR_UNLOCK = "door.unlock"
    CONFIG_SET = "config.set"
    RESYNC = "resync"
    KEYS_ROTATE = "keys.rotate"
    ACK = "ack"
    """The platform has stored every event through a seq: no reply, not logged (idempotent)."""
    REPLAY = "replay"


MAX_BYTES: Mapping[CommandName, int] = {
    CommandName.ALLOWLIST_SNAPSHOT: 1024 * 1024,
    CommandName.ALLOWLIST_DELTA: 4 * 1024 * 1024,
}
DEFAULT_MAX_BYTES = 64 * 1024
MAX_LIFETIME_S: Mapping[CommandName, int] = {CommandName.DOOR_UNLOCK: 60}
DEFAULT_MAX_LIFETIME_S = 24 * 3600
"""Longest `exp - iat` accepted: a remote unlock must be fresh, anything else within a day."""


class Rejection(StrEnum):
    """Why a command was not applied. The reply carries this; metrics group by it."""

    MALFORMED = "malformed"
    OVERSIZED = "oversized"
    UNKNOWN_COMMAND = "unknown_command"
    WRONG_GATEWAY = "wrong_gateway"
    UNSIGNED = "unsigned"
    UNKNOWN_KEY = "unknown_key"
    BAD_SIGNATURE = "bad_signature"
    NOT_YET_VALID = "not_yet_valid"
    EXPIRED = "expired"
    ALREADY_SEEN = "already_seen"
    STALE_VERSION = "stale_version"
    VERSION_MISMATCH = "version_mismatch"
    """A delta whose base is not the version in force: send a snapshot."""
    INVALID = "invalid"
    """Well-formed and authentic, but cannot be applied (unknown door, bad setting)."""


class CommandRejected(RentgateError):
    def __init__(self, reason: Rejection, detail: str, command_id: str | None = None) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail
        self.command_id = command_id


@dataclass(frozen=True)
class Command:
    """An authentic command for this gateway, within its lifetime."""

    id: str
    name: CommandName
    issued_at: int
    expires_at: int
    kid: str
    body: dict[str, Any]


def canonical(document: Mapping[str, Any]) -> bytes:
    return json.dumps(
        document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def _refuse_float(text: str) -> float:
    raise ValueError(f"non-integer number {text[:20]}")


def _b64url_decode(text: str) -> bytes:
    padded = text + "=" * (-len(text) % 4)
    return base64.urlsafe_b64decode(padded.encode("ascii"))


def verify(
    payload: bytes,
    *,
    topic_name: str,
    gateway_id: str,
    keys: Mapping[str, VerifyKey],
    now: int,
) -> Command:
    """Check a received command; raise `CommandRejected` with the first reason that applies."""
    try:
        name = CommandName(topic_name)
    except ValueError:
        detail = f"no command {topic_name[:40]!r}"
        raise CommandRejected(Rejection.UNKNOWN_COMMAND, detail) from None
    limit = MAX_BYTES.get(name, DEFAULT_MAX_BYTES)
    if len(payload) > limit:
        raise CommandRejected(Rejection.OVERSIZED, f"{len(payload)} bytes, limit {limit}")
    document = _envelope(payload, name, gateway_id)
    command_id: str = document["id"]
    _check_signature(document, keys)
    issued, expires = document["iat"], document["exp"]
    if issued > now + CLOCK_SKEW_S:
        raise CommandRejected(Rejection.NOT_YET_VALID, "issued in the future", command_id)
    if expires <= issued or expires - issued > MAX_LIFETIME_S.get(name, DEFAULT_MAX_LIFETIME_S):
        raise CommandRejected(Rejection.MALFORMED, "lifetime out of range", command_id)
    if now >= expires:
        raise CommandRejected(Rejection.EXPIRED, f"expired {now - expires} s ago", command_id)
    return Command(command_id, name, issued, expires, document["kid"], document["body"])


_MEMBERS: Mapping[str, type] = {
    "id": str,
    "cmd": str,
    "gw": str,
    "iat": int,
    "exp": int,
    "body": dict,
}


def _envelope(payload: bytes, name: CommandName, gateway_id: str) -> dict[str, Any]:
    """Parse the JSON envelope and check its shape, the name and the addressee."""
    try:
        document = json.loads(payload, parse_float=_refuse_float)
    except (ValueError, RecursionError) as exc:
        raise CommandRejected(Rejection.MALFORMED, f"not JSON: {str(exc)[:80]}") from None
    if not isinstance(document, dict):
        raise CommandRejected(Rejection.MALFORMED, "a command is a JSON object")
    raw_id = document.get("id")
    command_id = raw_id if isinstance(raw_id, str) and len(raw_id) <= 64 else None
    if document.get("v") != ENVELOPE_VERSION:
        raise CommandRejected(Rejection.MALFORMED, "'v' must be 1", command_id)
    for member, kind in _MEMBERS.items():
        value = document.get(member)
        if not isinstance(value, kind) or isinstance(value, bool):
            detail = f"'{member}' must be a {kind.__name__}"
            raise CommandRejected(Rejection.MALFORMED, detail, command_id)
    try:
        uuid.UUID(document["id"])
    except ValueError:
        raise CommandRejected(Rejection.MALFORMED, "'id' must be a UUID") from None
    if document["cmd"] != name.value:
        raise CommandRejected(Rejection.MALFORMED, "'cmd' differs from the topic", command_id)
    if document["gw"] != gateway_id:
        raise CommandRejected(Rejection.WRONG_GATEWAY, "addressed to another gateway", command_id)
    if not isinstance(document.get("sig"), str) or not isinstance(document.get("kid"), str):
        raise CommandRejected(Rejection.UNSIGNED, "no 'sig' or 'kid' string", command_id)
    extra = set(document) - {"v", "kid", "sig", *_MEMBERS}
    if extra:
        raise CommandRejected(Rejection.MALFORMED, f"unknown members {sorted(extra)}", command_id)
    return document


def _check_signature(document: Mapping[str, Any], keys: Mapping[str, VerifyKey]) -> None:
    command_id, kid = document["id"], document["kid"]
    key = keys.get(kid)
    if key is None:
        raise CommandRejected(Rejection.UNKNOWN_KEY, f"key {kid[:24]!r} is not trusted", command_id)
    try:
        signature = _b64url_decode(document["sig"])
    except (ValueError, binascii.Error):
        detail = "'sig' is not base64url"
        raise CommandRejected(Rejection.BAD_SIGNATURE, detail, command_id) from None
    signed = {k: v for k, v in document.items() if k != "sig"}
    if not key.verify(signature, SIGNING_CONTEXT + canonical(signed)):
        raise CommandRejected(Rejection.BAD_SIGNATURE, "signature does not verify", command_id)


def sign(
    key: SigningKey,
    *,
    gateway_id: str,
    name: CommandName,
    body: Mapping[str, Any],
    now: int,
    ttl_s: int = 300,
    command_id: str | None = None,
) -> bytes:
    """Build and sign a command (the platform's side: `rentgate platform`, tests, demos)."""
    document: dict[str, Any] = {
        "v": ENVELOPE_VERSION,
        "id": command_id or str(uuid.uuid4()),
        "cmd": name.value,
        "gw": gateway_id,
        "iat": now,
        "exp": now + ttl_s,
        "kid": key.kid,
        "body": dict(body),
    }
    signature = key.sign(SIGNING_CONTEXT + canonical(document))
    document["sig"] = base64.urlsafe_b64encode(signature).rstrip(b"=").decode("ascii")
    return canonical(document)
