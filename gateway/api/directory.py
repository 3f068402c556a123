"""Tenants for the web UI and REST API: enrol, list, card and tenancy operations, scoped.

Every method takes the caller's `Principal`. A landlord reaches only people
with a tenancy in one of their units; anyone else's person, card or tenancy
is NOT_FOUND to them, exactly as if it did not exist. Each view of personal
data and each change is audited, in the same transaction as the change (or
before the view is returned), so nothing is shown or changed unrecorded.

One person may be the tenant of two landlords (the same ID number, enrolled
by each). What is each landlord's, and nothing more, is:

* **the letting**: their tenancies, the name they entered (kept with the
  tenancy), and the alerts and door events of the person raised during their
  own tenancy at the doors serving their units (`Monitor.scope_in`);
* **the cards enrolled for their units**: a card belongs to the unit of the
  tenancy it was enrolled with (or added for). A landlord sees, reports lost,
  unblocks, returns, cancels and extends only those; a card of the person's
  other letting is NOT_FOUND to them, and enrolling its serial again is refused
  as another person's card is. Cards with no unit (enrolled before units were
  kept, by a person let in several units; or an admin's) are an admin's.

So enrolling an ID number another landlord's tenancy holds answers exactly as
for a newcomer: no stored name, no cards, `new_person` true (new to the
caller), no history. Admins see and change everything. What a landlord still
sees of the person as a whole is the residence standing (registration and
permit state), which the rules keep per person and building (R1).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Sequence
from datetime import datetime
from enum import StrEnum
from typing import TypeVar

from gateway.api import models
from gateway.api.accounts import Accounts, reveal_id_number
from gateway.api.auth import AuthFailure, AuthProblem, Principal, Role, may_see_unit
from gateway.api.core_links import CaptureRefused, RemoteCaptures
from gateway.api.person_view import Residence, controls, may_see, person_out
from gateway.api.storeaccess import StoreAccess
from gateway.clock import Clock
from gateway.domain.credentials import (
    Credential,
    CredentialError,
    CredentialKind,
    parse_credential,
)
from gateway.domain.ids import IdNumber
from gateway.domain.keycards import ActionRefused, CardAction, extendable, next_status
from gateway.domain.people import CredentialGrant, Enrolment, Tenancy
from gateway.errors import RentgateError
from gateway.store import registry, tenants
from gateway.store.crypto import KeyRing
from gateway.store.errors import StoreError
from gateway.store.event_history import EventScope

log = logging.getLogger(__name__)
_T = TypeVar("_T")


class DirectoryProblem(StrEnum):
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    PLATFORM_MANAGED = "platform_managed"
    BAD_REQUEST = "bad_request"
    FORBIDDEN = "forbidden"
    STORE_UNAVAILABLE = "store_unavailable"


STATUS = {
    DirectoryProblem.NOT_FOUND: 404,
    DirectoryProblem.CONFLICT: 409,
    DirectoryProblem.PLATFORM_MANAGED: 409,
    DirectoryProblem.BAD_REQUEST: 422,
    DirectoryProblem.FORBIDDEN: 403,
    DirectoryProblem.STORE_UNAVAILABLE: 503,
}


class DirectoryError(RentgateError):
    def __init__(self, problem: DirectoryProblem, message: str) -> None:
        super().__init__(message)
        self.problem = problem
        self.message = message


class Directory:
    """People, cards and tenancies as the caller may see and change them."""

    def __init__(
        self,
        store: StoreAccess,
        *,
        keys: KeyRing,
        clock: Clock,
        accounts: Accounts,
        residence: Residence,
        captures: RemoteCaptures,
        scope: Callable[[sqlite3.Connection, Principal], EventScope | None],
    ) -> None:
        """`scope`: what of people's lives a caller sees (`Monitor.scope_in`), for the alerts
        counted on a person."""
        self._store = store
        self._keys = keys
        self._clock = clock
        self._accounts = accounts
        self._residence = residence
        self._captures = captures
        self._scope = scope

    def now(self) -> datetime:
        return self._clock.now()

    # -- reading -------------------------------------------------------------

    async def people(
        self, principal: Principal, *, unit: str | None, offset: int, limit: int
    ) -> models.PeoplePage:
        scope = _units(principal)

        def read(conn: sqlite3.Connection) -> models.PeoplePage:
            ids, total = tenants.people_in_scope(conn, scope, unit=unit, offset=offset, limit=limit)
            people = [self._person_out(conn, pid, principal) for pid in ids]
            return models.PeoplePage(
                people=[p for p in people if p is not None], total=total, offset=offset, limit=limit
            )

        page = await self._read(read)
        detail = f"{len(page.people)} people" + (f" of unit {unit}" if unit else "")
        await self._audit(principal, "people.list", None, detail)
        return page

    async def person(self, principal: Principal, person_id: str) -> models.PersonOut:
        def read(conn: sqlite3.Connection) -> models.PersonOut | None:
            if not self._in_scope(conn, principal, person_id):
                return None
            return self._person_out(conn, person_id, principal)

        found = await self._read(read)
        if found is None:
            raise _not_found("person")
        await self._audit(principal, "person.view", f"person:{person_id}")
        return found

    async def reveal(self, principal: Principal, person_id: str) -> models.Revealed:
        """The full ID number, for an admin; the reveal (or the attempt) is audited first."""
        exists = await self._read(lambda conn: tenants.person(conn, self._keys, person_id))
        if exists is None:
            raise _not_found("person")

        def unseal() -> str:
            number = self._store.read_now(
                lambda conn: tenants.reveal_id_number(conn, self._keys, person_id)
            )
            return number or ""

        try:
            number = await reveal_id_number(self._accounts, principal, person_id, unseal)
        except AuthFailure as failure:
            problem = (
                DirectoryProblem.FORBIDDEN
                if failure.problem is AuthProblem.FORBIDDEN
                else DirectoryProblem.STORE_UNAVAILABLE
            )
            raise DirectoryError(problem, failure.message) from failure
        return models.Revealed(person=person_id, id_number=number)

    # -- changing ------------------------------------------------------------

    async def enrol(self, principal: Principal, request: models.EnrolRequest) -> models.Enrolled:
        """A tenant with their tenancy in one of the caller's units and their cards."""
        if principal.role is Role.LANDLORD and request.unit not in principal.units:
            raise DirectoryError(
                DirectoryProblem.FORBIDDEN, f"unit {request.unit} is not one of yours"
            )
        now = self._clock.now()
        try:
            id_number = IdNumber(request.id_number)
            tenancy = Tenancy(
                request.unit, request.valid_from or now, request.valid_to, request.room
            )
            grants = await self._grants(principal, request.cards)
            enrolment = Enrolment(id_number, request.name, grants, tenancy)
        except (ValueError, CredentialError) as exc:
            raise DirectoryError(DirectoryProblem.BAD_REQUEST, str(exc)) from exc

        def write(conn: sqlite3.Connection) -> models.Enrolled:
            found = tenants.person_with_id_number(conn, self._keys, id_number.value)
            mine = found is not None and self._in_scope(conn, principal, found)
            rename = found is None or (mine and self._wholly_theirs(conn, principal, found))
            result = registry.enrol(conn, self._keys, enrolment, now, rename=rename)
            self._audit_in(
                conn,
                principal,
                "person.enrol",
                f"person:{result.person_id}",
                f"unit {request.unit}, {len(grants)} card(s)",
            )
            person = self._person_out(conn, result.person_id, principal)
            assert person is not None
            new = result.new_person if principal.role is Role.ADMIN else not mine
            return models.Enrolled(person=person, new_person=new)

        enrolled = await self._write(write)
        log.info("%s enrolled %s in unit %s", principal.name, id_number.masked, request.unit)
        return enrolled

    async def add_cards(
        self, principal: Principal, person_id: str, request: models.AddCardsRequest
    ) -> models.PersonOut:
        try:
            grants = await self._grants(principal, request.cards)
        except (ValueError, CredentialError) as exc:
            raise DirectoryError(DirectoryProblem.BAD_REQUEST, str(exc)) from exc

        def write(conn: sqlite3.Connection) -> models.PersonOut:
            self._require_person(conn, principal, person_id)
            unit = self._card_unit(conn, principal, person_id, request.unit)
            tenants.add_cards(conn, self._keys, person_id, grants, self._clock.now(), unit=unit)
            self._audit_in(conn, principal, "card.add", f"person:{person_id}", f"{len(grants)}")
            return self._changed(conn, person_id, principal)

        return await self._write(write)

    async def card_action(
        self, principal: Principal, card_id: str, action: CardAction
    ) -> models.PersonOut:
        """Report lost, unblock, return or cancel a card."""

        def write(conn: sqlite3.Connection) -> models.PersonOut:
            card = self._own_card(conn, principal, card_id)
            try:
                status = next_status(card.status, action)
            except ActionRefused as exc:
                raise DirectoryError(DirectoryProblem.CONFLICT, str(exc)) from exc
            now = self._clock.now()
            registry.set_credential_status(conn, card_id, status, now)
            self._audit_in(
                conn, principal, f"card.{action.value}", f"person:{card.person_id}", card.masked
            )
            return self._changed(conn, card.person_id, principal)

        return await self._write(write)

    async def extend_card(
        self, principal: Principal, card_id: str, valid_to: datetime
    ) -> models.PersonOut:
        def write(conn: sqlite3.Connection) -> models.PersonOut:
            card = self._own_card(conn, principal, card_id)
            if not extendable(card.status):
                raise DirectoryError(
                    DirectoryProblem.CONFLICT, f"a {card.status.value} card is not extended"
                )
            if card.valid_from and valid_to <= datetime.fromisoformat(card.valid_from):
                raise DirectoryError(
                    DirectoryProblem.BAD_REQUEST, "valid_to must be after valid_from"
                )
            tenants.set_card_validity(conn, card_id, valid_to, self._clock.now())
            detail = f"{card.masked} to {valid_to.isoformat()}"
            self._audit_in(conn, principal, "card.extend", f"person:{card.person_id}", detail)
            return self._changed(conn, card.person_id, principal)

        return await self._write(write)

    async def set_tenancy_end(
        self, principal: Principal, tenancy_id: str, valid_to: datetime, *, action: str
    ) -> models.PersonOut:
        """Extend a tenancy (`action` "extend") or end it at move-out ("end").

        A tenancy that has ended is never made longer: its landlord's view of the person
        stopped with it, and stretching it over the months since would hand them what the
        person did meanwhile (as someone else's tenant, say). A returning tenant is
        enrolled again, with a tenancy from now."""

        def write(conn: sqlite3.Connection) -> models.PersonOut:
            tenancy = tenants.tenancy(conn, tenancy_id)
            if tenancy is None or not may_see(principal, {tenancy.unit}):
                raise _not_found("tenancy")
            if tenancy.managed_by != "gateway":
                raise _platform_managed("tenancy")
            ended = datetime.fromisoformat(tenancy.valid_to) if tenancy.valid_to else None
            if ended is not None and ended <= self._clock.now() and valid_to > ended:
                raise DirectoryError(
                    DirectoryProblem.CONFLICT,
                    "this tenancy has ended: enrol the tenant again for a new one",
                )
            if valid_to <= datetime.fromisoformat(tenancy.valid_from):
                raise DirectoryError(
                    DirectoryProblem.BAD_REQUEST, "the end must be after the start"
                )
            tenants.set_tenancy_end(conn, tenancy_id, valid_to, self._clock.now())
            detail = f"unit {tenancy.unit} to {valid_to.isoformat()}"
            self._audit_in(
                conn, principal, f"tenancy.{action}", f"person:{tenancy.person_id}", detail
            )
            return self._changed(conn, tenancy.person_id, principal)

        return await self._write(write)

    # -- helpers -------------------------------------------------------------

    async def _grants(
        self, principal: Principal, cards: Sequence[models.CardIn]
    ) -> tuple[CredentialGrant, ...]:
        grants = []
        for card in cards:
            if (card.card_uid is None) == (card.capture is None):
                raise ValueError("each card needs exactly one of card_uid or capture")
            if card.capture is not None:
                try:
                    credential = await self._captures.take(card.capture, capture_owner(principal))
                except CaptureRefused as exc:
                    raise ValueError(str(exc)) from exc
            else:
                credential = parse_credential(CredentialKind.CARD_UID, card.card_uid or "")
            grants.append(CredentialGrant(_as_card(credential), valid_to=card.valid_to))
        return tuple(grants)

    def _wholly_theirs(
        self, conn: sqlite3.Connection, principal: Principal, person_id: str
    ) -> bool:
        """Whether every letting of the person is the caller's (an admin's: always)."""
        if principal.role is not Role.LANDLORD:
            return True
        return tenants.units_of_person(conn, person_id) <= principal.units

    def _card_unit(
        self, conn: sqlite3.Connection, principal: Principal, person_id: str, wanted: str | None
    ) -> str | None:
        """The unit new cards of the person are for: `wanted`, else the caller's only unit
        the person is let (None: an admin's cards for someone let nowhere)."""
        units = {u for u in tenants.units_of_person(conn, person_id) if may_see_unit(principal, u)}
        if wanted is not None:
            if wanted not in units:
                raise DirectoryError(
                    DirectoryProblem.BAD_REQUEST, f"the person has no tenancy of yours in {wanted}"
                )
            return wanted
        if len(units) > 1:
            raise DirectoryError(
                DirectoryProblem.BAD_REQUEST, "the person is let several units: say which (unit)"
            )
        return next(iter(units), None)

    def _in_scope(self, conn: sqlite3.Connection, principal: Principal, person_id: str) -> bool:
        if principal.role is Role.LANDLORD:
            return may_see(principal, tenants.units_of_person(conn, person_id))
        return principal.role in (Role.ADMIN, Role.COORDINATOR)

    def _require_person(
        self, conn: sqlite3.Connection, principal: Principal, person_id: str
    ) -> None:
        if (
            not self._in_scope(conn, principal, person_id)
            or tenants.person(conn, self._keys, person_id) is None
        ):
            raise _not_found("person")

    def _own_card(
        self, conn: sqlite3.Connection, principal: Principal, card_id: str
    ) -> tenants.CardView:
        card = tenants.card(conn, card_id)
        if card is None or not controls(principal, card):
            raise _not_found("card")
        if card.managed_by != "gateway":
            raise _platform_managed("card")
        return card

    def _changed(
        self, conn: sqlite3.Connection, person_id: str, principal: Principal
    ) -> models.PersonOut:
        person = self._person_out(conn, person_id, principal)
        if person is None:
            raise _not_found("person")
        return person

    def _person_out(
        self, conn: sqlite3.Connection, person_id: str, principal: Principal
    ) -> models.PersonOut | None:
        # Co-ordinators see every alert (as on the alerts list); landlords their letting's.
        scope = self._scope(conn, principal) if principal.role is Role.LANDLORD else None
        return person_out(
            conn,
            self._keys,
            person_id,
            principal,
            residence=self._residence,
            today=self._clock.now().date(),
            scope=scope,
        )

    async def _read(self, query: Callable[[sqlite3.Connection], _T]) -> _T:
        try:
            return await self._store.read(query)
        except StoreError as exc:
            raise _unavailable(exc) from exc

    async def _write(self, operation: Callable[[sqlite3.Connection], _T]) -> _T:
        try:
            return await self._store.write(operation)
        except registry.CredentialTakenError as exc:
            raise DirectoryError(DirectoryProblem.CONFLICT, str(exc)) from exc
        except StoreError as exc:
            raise _unavailable(exc) from exc

    async def _audit(
        self, principal: Principal, action: str, subject: str | None, detail: str | None = None
    ) -> None:
        await self._write(lambda conn: self._audit_in(conn, principal, action, subject, detail))

    def _audit_in(
        self,
        conn: sqlite3.Connection,
        principal: Principal,
        action: str,
        subject: str | None,
        detail: str | None = None,
    ) -> None:
        self._accounts.record_audit(conn, principal, action, subject, detail)


def _units(principal: Principal) -> frozenset[str] | None:
    return principal.units if principal.role is Role.LANDLORD else None


def capture_owner(principal: Principal) -> str:
    """Who a capture belongs to: the user who armed it, by their (unique, never reused) name,
    which a refused second arming shows."""
    return principal.name


def _as_card(credential: Credential) -> Credential:
    if credential.kind not in (CredentialKind.CARD_UID, CredentialKind.ID_NUMBER):
        raise ValueError("only cards and ID cards are enrolled by tap")
    return credential


def _not_found(what: str) -> DirectoryError:
    return DirectoryError(DirectoryProblem.NOT_FOUND, f"no such {what} (or not in your units)")


def _platform_managed(what: str) -> DirectoryError:
    return DirectoryError(
        DirectoryProblem.PLATFORM_MANAGED,
        f"this {what} comes from the platform's allowlist: change it there",
    )


def _unavailable(exc: StoreError) -> DirectoryError:
    log.error("directory: store unavailable: %s", exc)
    return DirectoryError(DirectoryProblem.STORE_UNAVAILABLE, "the gateway cannot store now")
