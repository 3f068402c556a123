"""Who may do what at the gateway, and the secrets that prove who someone is.

Roles: an admin (the installer) runs the whole gateway; a landlord sees only
the units they own (a building may have several landlords); a co-ordinator
sees people, registration status and captures; a terminal submits records
and reads nothing (it authenticates with its bearer token, migration 5).

Passwords are hashed with scrypt (stdlib, memory-hard): n=2**15, r=8, p=1
costs 32 MiB and about 0.1 s here. The parameters and salt travel in the hash
string, so stronger ones later still verify the old hashes.

CSRF: a synchronizer token derived from the session id (HMAC-SHA256 keyed by
it). Only the session's cookie can produce it, a page on another site can
neither read the cookie (HttpOnly) nor the token, and nothing extra is stored:
`GET /api/v1/me` hands it to a reloaded page again.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cache
from pathlib import Path

from gateway.errors import RentgateError

SCRYPT_N = 2**15
SCRYPT_R = 8
SCRYPT_P = 1
_SALT_BYTES = 16
_KEY_BYTES = 32
_MAXMEM = 256 * 1024 * 1024
_MAX_N = 2**20
"""Refuse hash strings asking for more work than this (a tampered row must not DoS us)."""

MIN_PASSWORD = 10
MAX_PASSWORD = 256
SESSION_COOKIE = "rentgate_session"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class AuthProblem(StrEnum):
    """Why a request was refused (the API maps each to one HTTP status)."""

    NOT_AUTHENTICATED = "not_authenticated"
    BAD_TOKEN = "bad_token"  # noqa: S105 - a reason, not a secret
    SESSION_INVALID = "session_invalid"
    BAD_CREDENTIALS = "bad_credentials"
    RATE_LIMITED = "rate_limited"
    CSRF_MISSING = "csrf_missing"
    CSRF_MISMATCH = "csrf_mismatch"
    CROSS_SITE = "cross_site"
    FORBIDDEN = "forbidden"
    SETUP_DONE = "setup_done"
    SETUP_CODE_WRONG = "setup_code_wrong"
    BAD_REQUEST = "bad_request"
    STORE_UNAVAILABLE = "store_unavailable"


class AuthFailure(RentgateError):
    """A refused login, session, token, role or setup; `retry_after_s` for RATE_LIMITED."""

    def __init__(self, problem: AuthProblem, message: str, retry_after_s: int | None = None):
        super().__init__(message)
        self.problem = problem
        self.message = message
        self.retry_after_s = retry_after_s


class Role(StrEnum):
    ADMIN = "admin"
    LANDLORD = "landlord"
    COORDINATOR = "coordinator"
    TERMINAL = "terminal"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is making a request. `user_id` is None for a terminal (`name` is its id)."""

    user_id: int | None
    name: str
    role: Role
    units: frozenset[str] = field(default_factory=frozenset)


def may_see_unit(principal: Principal, unit: str) -> bool:
    """Whether the principal may see the people and records of `unit`."""
    if principal.role in (Role.ADMIN, Role.COORDINATOR):
        return True
    if principal.role is Role.LANDLORD:
        return unit in principal.units
    return False  # a terminal submits, it reads nothing


# -- passwords ---------------------------------------------------------------


def password_problem(password: str) -> str | None:
    """Why a new password is not acceptable, or None."""
    if len(password) < MIN_PASSWORD:
        return f"a password needs at least {MIN_PASSWORD} characters"
    if len(password) > MAX_PASSWORD:
        return f"a password has at most {MAX_PASSWORD} characters"
    return None


def hash_password(password: str) -> str:
    """`scrypt$n=…,r=…,p=…$salt$key` (base64): parameters and salt kept with the hash."""
    salt = os.urandom(_SALT_BYTES)
    key = _scrypt(password, salt, (SCRYPT_N, SCRYPT_R, SCRYPT_P), _KEY_BYTES)
    return f"scrypt$n={SCRYPT_N},r={SCRYPT_R},p={SCRYPT_P}${_b64(salt)}${_b64(key)}"


def verify_password(password: str, stored: str) -> bool:
    """Whether `password` matches `stored`, compared in constant time; False if malformed."""
    try:
        scheme, params, salt_text, key_text = stored.split("$")
        values = dict(item.split("=", 1) for item in params.split(","))
        n, r, p = int(values["n"]), int(values["r"]), int(values["p"])
        salt = base64.b64decode(salt_text, validate=True)
        key = base64.b64decode(key_text, validate=True)
    except (ValueError, KeyError, binascii.Error):
        return False
    if scheme != "scrypt" or not 2 <= n <= _MAX_N or n & (n - 1) or not 0 < r * p <= 64 or not key:
        return False
    return hmac.compare_digest(_scrypt(password, salt, (n, r, p), len(key)), key)


def verify_nobody(password: str) -> None:
    """Spend what a real check costs, so a reply's timing tells no one which names exist."""
    verify_password(password, _dummy_hash())


@cache
def _dummy_hash() -> str:
    return hash_password(secrets.token_urlsafe(16))


def _scrypt(password: str, salt: bytes, cost: tuple[int, int, int], size: int) -> bytes:
    data, (n, r, p) = password.encode("utf-8"), cost
    return hashlib.scrypt(data, salt=salt, n=n, r=r, p=p, maxmem=_MAXMEM, dklen=size)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# -- sessions and CSRF -------------------------------------------------------


def new_session_id() -> str:
    return secrets.token_urlsafe(32)


def session_hash(session_id: str) -> bytes:
    """What the store keeps of a session id."""
    return hashlib.sha256(session_id.encode("utf-8")).digest()


def csrf_token(session_id: str) -> str:
    """The synchronizer token of a session (see the module docstring)."""
    mac = hmac.new(session_id.encode("utf-8"), b"rentgate csrf v1", hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode("ascii").rstrip("=")


def csrf_matches(session_id: str, presented: str) -> bool:
    return hmac.compare_digest(csrf_token(session_id).encode(), presented.encode("utf-8"))


# -- first-run setup code ----------------------------------------------------


def issue_setup_code(path: Path) -> str:
    """The setup code in `path`, written (mode 0600, never readable by others) if missing.

    There is no default admin password: whoever can read this file on the
    gateway (the installer, with a shell) creates the first admin with it.
    """
    try:
        return read_setup_code(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    code = secrets.token_urlsafe(18)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as file:
        file.write(code + "\n")
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)
    return code


def read_setup_code(path: Path) -> str:
    return path.read_text(encoding="ascii").strip()


def setup_code_matches(path: Path, presented: str) -> bool:
    """Whether `presented` is the code in `path` (constant time); False if there is none."""
    try:
        expected = read_setup_code(path)
    except (FileNotFoundError, UnicodeDecodeError):
        return False
    return bool(expected) and hmac.compare_digest(expected.encode(), presented.encode("utf-8"))


def name_problem(name: str) -> str | None:
    """Why a user name is not acceptable, or None."""
    if not 1 <= len(name) <= 64:
        return "a user name has 1 to 64 characters"
    if name != name.strip() or not name.isprintable():
        return "a user name has no leading or trailing spaces and no control characters"
    return None
