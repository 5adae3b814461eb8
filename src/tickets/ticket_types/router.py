from __future__ import annotations

from fastapi import APIRouter, Response

from tickets.auth.deps import AdminKey, OptionalPrincipal
from tickets.auth.errors import GalaNotAllowed, RoleRequired
from tickets.clock import utc_now
from tickets.db import SessionDep
from tickets.galas import service as galas_service
from tickets.galas.errors import GalaCancelled, GalaNotFound
from tickets.galas.schemas import GalaID
from tickets.problems import InvalidApiKey, Unauthenticated, problem_responses
from tickets.seating.errors import SectionNotFound
from tickets.ticket_types import service as tt_service
from tickets.ticket_types.errors import QuotaBelowSold, TicketTypeInUse, TicketTypeNotFound
from tickets.ticket_types.schemas import TicketTypeCreate, TicketTypeID, TicketTypeRead, TicketTypeUpdate

router = APIRouter(prefix="/galas/{gala_id}/ticket-types", tags=["Ticket types"])

ADMIN = (Unauthenticated, InvalidApiKey, RoleRequired, GalaNotAllowed, GalaNotFound, GalaCancelled)


@router.post("", status_code=201, summary="Add a ticket type", responses=problem_responses(*ADMIN, SectionNotFound))
async def create_ticket_type(
    gala_id: GalaID, body: TicketTypeCreate, session: SessionDep, principal: AdminKey
) -> TicketTypeRead:
    """A price tier selling from some sections of the gala (all reserved, or all general areas).
    For reserved sections each ticket needs a seat (or a whole table); for general areas a quantity."""
    return await tt_service.create_ticket_type(session, gala_id, body, principal=principal, now=utc_now())


@router.get("", summary="List ticket types", responses=problem_responses(InvalidApiKey, GalaNotFound))
async def list_ticket_types(gala_id: GalaID, session: SessionDep, principal: OptionalPrincipal) -> list[TicketTypeRead]:
    """Every tier of the gala with what is still `available`. Public for published galas."""
    gala = await galas_service.get_gala(session, gala_id, principal=principal)
    return await tt_service.list_ticket_types(session, gala, now=utc_now())


@router.get(
    "/{ticket_type_id}",
    summary="Read a ticket type",
    responses=problem_responses(InvalidApiKey, GalaNotFound, TicketTypeNotFound),
)
async def read_ticket_type(
    gala_id: GalaID, ticket_type_id: TicketTypeID, session: SessionDep, principal: OptionalPrincipal
) -> TicketTypeRead:
    """One tier with what is still `available`."""
    gala = await galas_service.get_gala(session, gala_id, principal=principal)
    return await tt_service.read_ticket_type(session, gala, ticket_type_id, now=utc_now())


@router.patch(
    "/{ticket_type_id}",
    summary="Update a ticket type",
    responses=problem_responses(*ADMIN, TicketTypeNotFound, SectionNotFound, TicketTypeInUse, QuotaBelowSold),
)
async def update_ticket_type(
    gala_id: GalaID,
    ticket_type_id: TicketTypeID,
    body: TicketTypeUpdate,
    session: SessionDep,
    principal: AdminKey,
) -> TicketTypeRead:
    """Change a tier. A new price applies to new orders only. The quota cannot drop below what is held
    and sold, and a section with this tier's held or sold seats cannot be taken away from it."""
    return await tt_service.update_ticket_type(
        session, gala_id, ticket_type_id, body, principal=principal, now=utc_now()
    )


@router.delete(
    "/{ticket_type_id}",
    status_code=204,
    summary="Remove a ticket type",
    responses=problem_responses(*ADMIN, TicketTypeNotFound, TicketTypeInUse),
)
async def delete_ticket_type(
    gala_id: GalaID, ticket_type_id: TicketTypeID, session: SessionDep, principal: AdminKey
) -> Response:
    """Remove a tier that was never ordered (otherwise end its sales with `sales_end`)."""
    await tt_service.delete_ticket_type(session, gala_id, ticket_type_id, principal=principal)
    return Response(status_code=204)
