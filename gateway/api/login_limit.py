"""How failed logins slow a guesser down without locking the real user out.

A fixed lockout per account (five failures: fifteen minutes, whoever asks)
hands the lockout to the attacker: five wrong passwords from five addresses
kept a landlord, or the admin, out. So failures are counted three ways, each
with a wait that doubles per failure past a free allowance (never a lockout,
and the longest wait is bounded):

- per (account, address): the guesser at one address is slowed on that
  account; the user's own typos from their own address cost them the same,
  and a correct password clears them;
- per address, whatever the account: spraying many names from one address;
- per account, from any address the account has NOT logged in from lately:
  a guesser spread over many addresses. The user's usual address (a
  successful login within `known_for_s`) is exempt, so it always works; a
  fresh address works again once the (short, capped) wait has passed.

Every attempt is counted before its password is checked, so parallel guesses
cannot slip past (see `Accounts`); times are Unix seconds from the injected clock.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field

from gateway.store import users

_MAX_DOUBLINGS = 30


@dataclass(frozen=True, slots=True)
class Backoff:
    """`free` failures within `window_s` cost nothing; each further one doubles the wait
    after it, from `first_wait_s` up to `max_wait_s`."""

    free: int
    first_wait_s: float
    max_wait_s: float
    window_s: float

    def wait_s(self, failures: int) -> float:
        """The wait after the last of `failures` recent failures (0 within the allowance)."""
        over = failures - self.free
        if over <= 0:
            return 0.0
        doubled = self.first_wait_s * float(2 ** min(over - 1, _MAX_DOUBLINGS))
        return min(self.max_wait_s, doubled)

    def retry_after(self, failures: Sequence[float], now_s: float) -> int | None:
        """Whole seconds until another attempt is allowed, or None if one is allowed now."""
        recent = sorted(at for at in failures if at > now_s - self.window_s)
        if not recent:
            return None
        opens_at = recent[-1] + self.wait_s(len(recent))
        return max(1, math.ceil(opens_at - now_s)) if opens_at > now_s else None


@dataclass(frozen=True, slots=True)
class LoginLimit:
    """The three counts (see the module docstring) and how long an address stays known."""

    pair: Backoff = field(default_factory=lambda: Backoff(5, 30.0, 15 * 60.0, 3600.0))
    address: Backoff = field(default_factory=lambda: Backoff(10, 30.0, 15 * 60.0, 3600.0))
    account: Backoff = field(default_factory=lambda: Backoff(5, 15.0, 5 * 60.0, 3600.0))
    known_for_s: float = 90 * 86400.0

    @property
    def window_s(self) -> float:
        """Failures older than this count nowhere and may be forgotten."""
        return max(self.pair.window_s, self.address.window_s, self.account.window_s)


def pair_key(name: str, address: str) -> str:
    return f"pair:{name.casefold()}|{address}"


def address_key(address: str) -> str:
    return f"addr:{address}"


def account_key(name: str) -> str:
    return f"name:{name.casefold()}"


def known_key(name: str, address: str) -> str:
    """Marks an address the account logged in from (kept `known_for_s`, not a failure)."""
    return f"{users.KNOWN_PREFIX}{name.casefold()}|{address}"


@dataclass(frozen=True, slots=True)
class Count:
    """One count an attempt goes into; `waived_by`: a mark whose presence skips the check
    (the attempt is still counted)."""

    key: str
    backoff: Backoff
    waived_by: str | None = None


def login_counts(limit: LoginLimit, name: str, address: str) -> list[Count]:
    """The counts of a login attempt by `name` from `address` (see the module docstring)."""
    return [
        Count(pair_key(name, address), limit.pair),
        Count(address_key(address), limit.address),
        Count(account_key(name), limit.account, waived_by=known_key(name, address)),
    ]


def setup_counts(limit: LoginLimit, address: str) -> list[Count]:
    """A first-run setup attempt: the setup code is guessed per address."""
    return [Count(address_key(address), limit.address)]


def reserve(
    conn: sqlite3.Connection, limit: LoginLimit, counts: Sequence[Count], now_s: float
) -> tuple[int | None, list[int]]:
    """In one transaction: the longest wait any count still imposes (then nothing is
    recorded), or None and the attempt's rows, one per count (removed if it succeeds)."""
    waits = [
        count.backoff.retry_after(
            users.attempts_since(conn, count.key, now_s - count.backoff.window_s), now_s
        )
        for count in counts
        if not _waived(conn, limit, count, now_s)
    ]
    wait = max((w for w in waits if w is not None), default=None)
    if wait is not None:
        return wait, []
    keys = [count.key for count in counts]
    return None, users.add_attempts(conn, keys, now_s, forget_before_s=now_s - limit.window_s)


def _waived(conn: sqlite3.Connection, limit: LoginLimit, count: Count, now_s: float) -> bool:
    if count.waived_by is None:
        return False
    return bool(users.attempts_since(conn, count.waived_by, now_s - limit.known_for_s))
