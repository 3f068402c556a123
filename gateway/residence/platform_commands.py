"""What each platform command does to the gateway, applied once and recorded with its outcome.

Every change and the record that the command was seen commit in the same
transaction (a writer operation), so a command is never half-applied and never
applied twice. A snapshot comes in pages that are staged one by one; the
transaction of the last page switches it in and records that command.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from gateway.clock import Clock
from gateway.domain import command_bodies as bodies
from gateway.domain.credentials import CredentialStatus
from gateway.domain.events import EventType, OutboxEvent, new_event
from gateway.domain.signed_commands import Command, CommandName, CommandRejected, Rejection
from gateway.domain.signing import SigningKeyError, VerifyKey
from gateway.residence.runtime_settings import RuntimeSettings, SettingError, validate
from gateway.store import allowlist, outbox, residents
from gateway.store import command_log as seen
from gateway.store.crypto import KeyRing
from gateway.store.errors import StoreError
from gateway.store.writer import Writer
from gateway.sync.downlink import Applied, refusal

log = logging.getLogger(__name__)

_BODIES: Mapping[CommandName, type[BaseModel]] = {
    CommandName.ALLOWLIST_SNAPSHOT: bodies.AllowlistSnapshot,
    CommandName.ALLOWLIST_DELTA: bodies.AllowlistDelta,
    CommandName.PERSON_STATUS: bodies.PersonStatus,
    CommandName.CREDENTIAL_REVOKE: bodies.CredentialRevoke,
    CommandName.DOOR_UNLOCK: bodies.DoorUnlock,
    CommandName.CONFIG_SET: bodies.ConfigSet,
    CommandName.RESYNC: bodies.Resync,
    CommandName.KEYS_ROTATE: bodies.KeysRotate,
    CommandName.REPLAY: bodies.Replay,
}

T = TypeVar("T")


@dataclass
class GatewayHooks:
    """The parts of the running gateway that commands act on."""

    unlock: Callable[[str, float], bool]
    """Release a door for some seconds; False if there is no such door."""
    doors: Callable[[], Sequence[str]]
    resync: Callable[[], None]
    replay: Callable[[int], None]
    """Publish the outbox again from a seq."""
    settings_changed: Callable[[], None]
    person_changed: Callable[[str], None]


class TrustedKeys:
    """Platform keys: those in config, plus and minus what `keys.rotate` changed (stored)."""

    def __init__(self, configured: Sequence[VerifyKey]) -> None:
        self._configured = {key.kid: key for key in configured}
        self._current = dict(self._configured)

    def load(self, conn: sqlite3.Connection) -> None:
        current = dict(self._configured)
        for row in seen.trusted_keys(conn):
            if row.retired:
                current.pop(row.kid, None)
            else:
                current[row.kid] = VerifyKey(row.public_key)
        self._current = current

    def current(self) -> Mapping[str, VerifyKey]:
        return self._current


class PlatformCommands:
    """The downlink's `CommandHandler`."""

    def __init__(
        self,
        *,
        writer: Writer,
        keys: KeyRing,
        clock: Clock,
        trusted: TrustedKeys,
        settings: RuntimeSettings,
        hooks: GatewayHooks,
        record: Callable[[OutboxEvent], None],
    ) -> None:
        self._writer = writer
        self._keys = keys
        self._clock = clock
        self._trusted = trusted
        self._settings = settings
        self._hooks = hooks
        self._record = record
        self._purging: asyncio.Task[None] | None = None

    async def _op(self, operation: Callable[[sqlite3.Connection], T]) -> T:
        return await asyncio.wrap_future(self._writer.submit(operation))

    async def previous_outcome(self, command_id: str) -> seen.CommandOutcome | None:
        return await self._op(lambda conn: seen.outcome_of(conn, command_id))

    async def handle(self, command: Command) -> Applied:
        model = _BODIES[command.name]
        try:
            body = await asyncio.to_thread(model.model_validate, command.body)
        except ValidationError as exc:
            return await self._refuse(command, Rejection.MALFORMED, _summary(exc))
        try:
            extra = await getattr(self, "_" + command.name.value.replace(".", "_"))(command, body)
        except CommandRejected as rejected:
            return await self._refuse(command, rejected.reason, rejected.detail)
        except StoreError as exc:
            # Not remembered: the platform re-sends and it may succeed then (disk freed).
            log.error("command %s could not be stored: %s", command.id, exc)
            return Applied(seen.CommandOutcome(False, "unavailable", str(exc)))
        return Applied(seen.CommandOutcome(True), extra)

    async def _refuse(self, command: Command, reason: Rejection, detail: str) -> Applied:
        applied = refusal(reason, detail)
        try:
            await self._op(lambda conn: self._remember(conn, command, applied.outcome))
        except StoreError as exc:
            log.error("could not record the refusal of command %s: %s", command.id, exc)
        return applied

    def _remember(
        self, conn: sqlite3.Connection, command: Command, outcome: seen.CommandOutcome
    ) -> None:
        seen.remember(
            conn,
            command_id=command.id,
            name=command.name.value,
            expires_at=command.expires_at,
            outcome=outcome,
            now=self._clock.now(),
        )

    def _applied(self, conn: sqlite3.Connection, command: Command) -> None:
        self._remember(conn, command, seen.CommandOutcome(True))

    # -- one method per command --------------------------------------------------

    async def _allowlist_snapshot(
        self, command: Command, body: bodies.AllowlistSnapshot
    ) -> dict[str, Any]:
        """Stage one page; the page that completes the snapshot switches it in and is
        remembered with the switch. Earlier pages are not remembered: a re-sent page is
        recognised by (version, page) and staged once."""
        now = self._clock.now()

        def apply(conn: sqlite3.Connection) -> allowlist.PageResult:
            result = allowlist.stage_page(conn, self._keys, body, now)
            if result.complete:
                allowlist.switch(conn, body.version)
                self._applied(conn, command)
            return result

        try:
            result = await self._op(apply)
        except allowlist.AllowlistVersionError as exc:
            raise CommandRejected(Rejection.STALE_VERSION, str(exc), command.id) from exc
        except allowlist.AllowlistConflictError as exc:
            await self._op(allowlist.discard_staged)
            raise CommandRejected(Rejection.INVALID, str(exc), command.id) from exc
        reply: dict[str, Any] = {"page": body.page, "pages": body.pages, "staged": result.staged}
        if result.complete:
            self._purge_later()
            reply["allowlist_version"] = body.version
        return reply

    def _purge_later(self) -> None:
        if self._purging is None or self._purging.done():
            self._purging = asyncio.create_task(self._purge_old(), name="allowlist-purge")

    async def _purge_old(self) -> None:
        while await self._op(allowlist.purge_old):
            await asyncio.sleep(0)

    async def _allowlist_delta(
        self, command: Command, body: bodies.AllowlistDelta
    ) -> dict[str, Any]:
        now = self._clock.now()

        def apply(conn: sqlite3.Connection) -> int:
            changed = allowlist.apply_delta(conn, self._keys, body, now)
            self._applied(conn, command)
            return changed

        try:
            changed = await self._op(apply)
        except allowlist.AllowlistVersionError as exc:
            reason = Rejection.STALE_VERSION if exc.stale else Rejection.VERSION_MISMATCH
            raise CommandRejected(reason, str(exc), command.id) from exc
        return {"allowlist_version": body.to_version, "people": changed}

    async def _person_status(self, command: Command, body: bodies.PersonStatus) -> None:
        now = self._clock.now()

        def apply(conn: sqlite3.Connection) -> str:
            person_id = allowlist.person_for_platform_id(conn, body.person)
            if person_id is None:
                raise CommandRejected(
                    Rejection.INVALID, f"person {body.person} is not in the allowlist", command.id
                )
            try:
                residents.set_platform_status(conn, self._keys, person_id, body, now)
            except residents.StaleStatusError as exc:
                raise CommandRejected(Rejection.STALE_VERSION, str(exc), command.id) from exc
            self._applied(conn, command)
            return person_id

        person_id = await self._op(apply)
        self._hooks.person_changed(person_id)

    async def _credential_revoke(
        self, command: Command, body: bodies.CredentialRevoke
    ) -> dict[str, Any]:
        now = self._clock.now()

        def apply(conn: sqlite3.Connection) -> int:
            people = allowlist.set_status(
                conn,
                self._keys,
                kind=body.kind,
                value=body.value,
                status=CredentialStatus(body.status),
                now=now,
            )
            if not people:
                raise CommandRejected(Rejection.INVALID, "no such credential", command.id)
            self._applied(conn, command)
            return len(people)

        return {"credentials": await self._op(apply)}

    async def _door_unlock(self, command: Command, body: bodies.DoorUnlock) -> None:
        if body.door not in self._hooks.doors():
            raise CommandRejected(Rejection.INVALID, f"no door {body.door!r}", command.id)
        await self._op(lambda conn: self._applied(conn, command))
        self._hooks.unlock(body.door, float(body.seconds))
        now = self._clock.now()
        event_body = {
            "door": body.door,
            "seconds": body.seconds,
            "by": "platform",
            "command": command.id,
        }
        self._record(new_event(EventType.DOOR_UNLOCKED, now, self._clock.monotonic(), event_body))

    async def _config_set(self, command: Command, body: bodies.ConfigSet) -> dict[str, Any]:
        try:
            clean = validate(body.settings, self._hooks.doors())
        except SettingError as exc:
            raise CommandRejected(Rejection.INVALID, str(exc), command.id) from exc
        await asyncio.to_thread(self._settings.update, clean)
        await self._op(lambda conn: self._applied(conn, command))
        self._hooks.settings_changed()
        return {"settings": sorted(clean)}

    async def _resync(self, command: Command, _body: bodies.Resync) -> None:
        await self._op(lambda conn: self._applied(conn, command))
        self._hooks.resync()

    async def _replay(self, command: Command, body: bodies.Replay) -> dict[str, Any]:
        """Rewind the uplink; the reply says where it really starts (what is still kept)."""

        def apply(conn: sqlite3.Connection) -> tuple[int, int | None]:
            head = outbox.head_seq(conn)
            if body.from_seq > head + 1:
                detail = f"from_seq {body.from_seq} is beyond the newest event {head}"
                raise CommandRejected(Rejection.INVALID, detail, command.id)
            oldest = outbox.oldest_kept(conn)
            self._applied(conn, command)
            return head, oldest

        head, oldest = await self._op(apply)
        self._hooks.replay(body.from_seq)
        start = body.from_seq if oldest is None else max(body.from_seq, oldest)
        return {"from_seq": min(start, head + 1), "head_seq": head}

    async def _keys_rotate(self, command: Command, body: bodies.KeysRotate) -> dict[str, Any]:
        try:
            added = [VerifyKey.from_pem(text.encode("ascii")) for text in body.add]
        except (SigningKeyError, UnicodeEncodeError) as exc:
            raise CommandRejected(Rejection.INVALID, f"bad public key: {exc}", command.id) from exc
        remaining = set(self._trusted.current()) | {key.kid for key in added}
        remaining -= set(body.retire)
        if not remaining:
            raise CommandRejected(Rejection.INVALID, "would leave no trusted key", command.id)
        now = self._clock.now()
        current = self._trusted.current()

        def apply(conn: sqlite3.Connection) -> None:
            for key in added:
                seen.add_key(conn, key.kid, key.raw, now)
            for kid in body.retire:
                known = current.get(kid)
                seen.retire_key(conn, kid, known.raw if known else b"", now)
            self._applied(conn, command)
            self._trusted.load(conn)

        await self._op(apply)
        return {"keys": sorted(self._trusted.current())}


def _summary(error: ValidationError) -> str:
    problems = [
        f"{'.'.join(str(part) for part in item['loc'])}: {item['msg']}"
        for item in error.errors()[:5]
    ]
    more = error.error_count() - len(problems)
    return "; ".join(problems) + (f"; and {more} more" if more > 0 else "")
