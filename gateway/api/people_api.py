"""REST for tenants: people, their cards and tenancies, and the landlord's operations on them.

Admins and landlords change; co-ordinators read. Which people a caller
reaches is decided in `Directory`, not here: a route only names who may call
it (its `require` gate); `DirectoryError` becomes HTTP in `gateway.api.application`.
"""

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from gateway.api import models
from gateway.api.accounts import Accounts
from gateway.api.auth import Principal, Role
from gateway.api.directory import Directory
from gateway.api.security import require


def people_router(accounts: Accounts, directory: Directory) -> APIRouter:
    router = APIRouter(prefix="/api/v1", tags=["people"], responses=models.ERROR_RESPONSES)
    Reader = Annotated[
        Principal, Depends(require(accounts, Role.ADMIN, Role.LANDLORD, Role.COORDINATOR))
    ]
    Changer = Annotated[Principal, Depends(require(accounts, Role.ADMIN, Role.LANDLORD))]
    Admin = Annotated[Principal, Depends(require(accounts, Role.ADMIN))]

    @router.get("/people")
    async def list_people(
        principal: Reader,
        unit: Annotated[str | None, Query(min_length=1, max_length=32)] = None,
        offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
    ) -> models.PeoplePage:
        """Tenants in the caller's units (everyone for admins and co-ordinators), newest first,
        with registration and permit status and their deadlines."""
        return await directory.people(principal, unit=unit, offset=offset, limit=limit)

    @router.post("/people", status_code=201)
    async def enrol(principal: Changer, request: models.EnrolRequest) -> models.Enrolled:
        """Enrol a tenant: the person, a tenancy in one of the caller's units, key cards
        (typed serials or taps captured at a reader). For a landlord, `new_person` means new
        to them: someone another landlord lets answers exactly as a newcomer would."""
        return await directory.enrol(principal, request)

    @router.get("/people/{person_id}")
    async def get_person(principal: Reader, person_id: str) -> models.PersonOut:
        return await directory.person(principal, person_id)

    @router.post("/people/{person_id}/reveal")
    async def reveal(principal: Admin, person_id: str) -> models.Revealed:
        """The full ID number: admins only, and audited before it is shown."""
        return await directory.reveal(principal, person_id)

    @router.post("/people/{person_id}/cards")
    async def add_cards(
        principal: Changer, person_id: str, request: models.AddCardsRequest
    ) -> models.PersonOut:
        """More cards, for the caller's tenancy of the person (`unit` if they let several)."""
        return await directory.add_cards(principal, person_id, request)

    @router.post("/cards/{card_id}/action")
    async def card_action(
        principal: Changer, card_id: str, request: models.CardActionRequest
    ) -> models.PersonOut:
        """Report a card lost, unblock it when found, take it back (return) or cancel it. A
        landlord acts on the cards enrolled for their units only; others are 404."""
        return await directory.card_action(principal, card_id, request.action)

    @router.post("/cards/{card_id}/extend")
    async def extend_card(
        principal: Changer, card_id: str, request: models.ExtendRequest
    ) -> models.PersonOut:
        return await directory.extend_card(principal, card_id, request.valid_to)

    @router.post("/tenancies/{tenancy_id}/extend")
    async def extend_tenancy(
        principal: Changer, tenancy_id: str, request: models.ExtendRequest
    ) -> models.PersonOut:
        return await directory.set_tenancy_end(
            principal, tenancy_id, request.valid_to, action="extend"
        )

    @router.post("/tenancies/{tenancy_id}/end")
    async def end_tenancy(
        principal: Changer, tenancy_id: str, request: models.EndTenancyRequest
    ) -> models.PersonOut:
        """Move-out: the tenancy ends (now by default), so its unit's doors stop opening."""
        moved_out = request.moved_out_at or directory.now()
        return await directory.set_tenancy_end(principal, tenancy_id, moved_out, action="end")

    return router
