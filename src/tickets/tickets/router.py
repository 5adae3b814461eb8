from __future__ import annotations

from fastapi import APIRouter, Request

from tickets.auth.deps import OptionalPrincipal
from tickets.auth.errors import RoleRequired
from tickets.clock import utc_now
from tickets.db import SessionDep
from tickets.galas.models import Gala
from tickets.keys import KeyRing
from tickets.orders.deps import OrderAccessDep, OrderToken, resolve_order_access
from tickets.orders.errors import InvalidOrderToken, OrderNotFound
from tickets.pagination import Page
from tickets.problems import InvalidApiKey, problem_responses
from tickets.tickets import service as ticket_service
from tickets.tickets.errors import NameChangeClosed, TicketNotFound, TicketVoid
from tickets.tickets.models import TicketStatus
from tickets.tickets.schemas import TicketID, TicketRead, TicketUpdate

router = APIRouter(tags=["Tickets"])


@router.get(
    "/orders/{order_id}/tickets",
    summary="List an order's tickets",
    responses=problem_responses(InvalidApiKey, InvalidOrderToken, RoleRequired, OrderNotFound),
)
async def list_order_tickets(request: Request, access: OrderAccessDep, session: SessionDep) -> Page[TicketRead]:
    """The buyer (with `X-Order-Token`) or box office / admin. Each ticket's `code` is the exact QR text."""
    keys: KeyRing = request.app.state.keys
    tickets = await ticket_service.tickets_of_order(session, access.order.id)
    return Page[TicketRead](data=[ticket_service.ticket_read(keys, t) for t in tickets], next_cursor=None)


@router.get(
    "/tickets/{ticket_id}",
    summary="Read a ticket",
    responses=problem_responses(InvalidApiKey, InvalidOrderToken, RoleRequired, TicketNotFound),
)
async def read_ticket(
    request: Request,
    ticket_id: TicketID,
    session: SessionDep,
    principal: OptionalPrincipal,
    token: OrderToken = None,
) -> TicketRead:
    """The buyer of its order (with `X-Order-Token`) or box office / admin."""
    ticket = await ticket_service.get_ticket(session, ticket_id)
    try:
        await resolve_order_access(request, session, principal, ticket.order_id, token, lock=False)
    except OrderNotFound as exc:
        raise TicketNotFound(f"No ticket {ticket_id}.") from exc
    return ticket_service.ticket_read(request.app.state.keys, ticket)


@router.patch(
    "/tickets/{ticket_id}",
    summary="Change a ticket's attendee",
    responses=problem_responses(
        InvalidApiKey, InvalidOrderToken, RoleRequired, TicketNotFound, NameChangeClosed, TicketVoid
    ),
)
async def update_ticket(
    request: Request,
    ticket_id: TicketID,
    body: TicketUpdate,
    session: SessionDep,
    principal: OptionalPrincipal,
    token: OrderToken = None,
) -> TicketRead:
    """Fill in or change the attendee's name, email or dietary needs (e.g. a sponsor naming the guests of
    a table). The buyer may until the gala's `name_change_cutoff`; admins always. The code does not change."""
    ticket = await ticket_service.get_ticket(session, ticket_id, lock=True)
    try:
        access = await resolve_order_access(request, session, principal, ticket.order_id, token, lock=False)
    except OrderNotFound as exc:
        raise TicketNotFound(f"No ticket {ticket_id}.") from exc
    if ticket.status != TicketStatus.valid:
        raise TicketVoid("A void ticket cannot be changed.")
    now = utc_now()
    if not access.is_admin:
        gala = await session.get(Gala, ticket.gala_id)
        if gala is not None and gala.name_change_cutoff is not None and now >= gala.name_change_cutoff:
            raise NameChangeClosed(f"Names could be changed until {gala.name_change_cutoff.isoformat()}.")
    ticket = await ticket_service.update_ticket(session, ticket, body, now=now)
    return ticket_service.ticket_read(request.app.state.keys, ticket)
