from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from tickets.auth.deps import OptionalPrincipal
from tickets.auth.errors import RoleRequired
from tickets.clock import utc_now
from tickets.db import SessionDep
from tickets.galas.models import Gala
from tickets.keys import KeyRing
from tickets.mail import outbox
from tickets.orders.deps import OrderAccess, OrderAccessDep, OrderToken, resolve_order_access
from tickets.orders.errors import InvalidOrderToken, OrderNotFound
from tickets.orders.models import PAID_STATUSES
from tickets.orders.schemas import OrderID
from tickets.pagination import Page
from tickets.problems import InvalidApiKey, RateLimited, problem_responses
from tickets.tickets import render
from tickets.tickets import service as ticket_service
from tickets.tickets.errors import (
    NameChangeClosed,
    NoValidTickets,
    TicketCheckedIn,
    TicketNotFound,
    TicketVoid,
    TransferLimitReached,
)
from tickets.tickets.models import Ticket, TicketStatus
from tickets.tickets.schemas import (
    DeliveryAccepted,
    OrderLookup,
    TicketID,
    TicketRead,
    TicketTransfer,
    TicketUpdate,
)

router = APIRouter(tags=["Tickets"])

ACCESS_PROBLEMS = (InvalidApiKey, InvalidOrderToken, RoleRequired)

# Renderings are credentials (whoever shows the code gets in): never kept by a shared cache.
NO_STORE = {"Cache-Control": "private, no-store"}


class PNGResponse(Response):
    media_type = "image/png"


class SVGResponse(Response):
    media_type = "image/svg+xml"


class PDFResponse(Response):
    media_type = "application/pdf"


def _binary(media_type: str, description: str) -> dict[int | str, dict[str, Any]]:
    return {
        200: {
            "description": description,
            "content": {media_type: {"schema": {"type": "string", "format": "binary"}}},
        }
    }


# --- access --------------------------------------------------------------------------------------


@dataclass
class TicketAccess:
    ticket: Ticket
    order: OrderAccess


async def _ticket_access(
    request: Request,
    session: SessionDep,
    principal: OptionalPrincipal,
    ticket_id: TicketID,
    token: OrderToken,
    *,
    lock: bool,
) -> TicketAccess:
    ticket = await ticket_service.get_ticket(session, ticket_id, lock=lock)
    try:
        access = await resolve_order_access(request, session, principal, ticket.order_id, token, lock=False)
    except OrderNotFound as exc:  # a gala-limited key sees no tickets of other galas
        raise TicketNotFound(f"No ticket {ticket_id}.") from exc
    return TicketAccess(ticket=ticket, order=access)


async def _read_access(
    request: Request, session: SessionDep, principal: OptionalPrincipal, ticket_id: TicketID, token: OrderToken = None
) -> TicketAccess:
    return await _ticket_access(request, session, principal, ticket_id, token, lock=False)


async def _write_access(
    request: Request, session: SessionDep, principal: OptionalPrincipal, ticket_id: TicketID, token: OrderToken = None
) -> TicketAccess:
    return await _ticket_access(request, session, principal, ticket_id, token, lock=True)


# A dependency, so that the caller is checked before the body is: no credentials is 401, not 422.
TicketAccessDep = Annotated[TicketAccess, Depends(_read_access)]
TicketAccessForUpdate = Annotated[TicketAccess, Depends(_write_access)]


async def _check_cutoff(session: SessionDep, access: TicketAccess, *, what: str) -> None:
    if access.order.is_admin:
        return
    gala = await session.get(Gala, access.ticket.gala_id)
    if gala is not None and gala.name_change_cutoff is not None and utc_now() >= gala.name_change_cutoff:
        raise NameChangeClosed(f"{what} until {gala.name_change_cutoff.isoformat()}; ask the organizer.")


def _valid(ticket: Ticket) -> Ticket:
    if ticket.status != TicketStatus.valid:
        raise TicketVoid("The ticket is void (refunded, cancelled or reissued): it has no code to show.")
    return ticket


# --- tickets -------------------------------------------------------------------------------------


@router.get(
    "/orders/{order_id}/tickets",
    summary="List an order's tickets",
    responses=problem_responses(*ACCESS_PROBLEMS, OrderNotFound),
)
async def list_order_tickets(request: Request, access: OrderAccessDep, session: SessionDep) -> Page[TicketRead]:
    """The buyer (with `X-Order-Token`) or box office / admin. Each ticket's `code` is the exact QR text."""
    keys: KeyRing = request.app.state.keys
    tickets = await ticket_service.tickets_of_order(session, access.order.id)
    return Page[TicketRead](data=[ticket_service.ticket_read(keys, t) for t in tickets], next_cursor=None)


@router.get(
    "/tickets/{ticket_id}",
    summary="Read a ticket",
    responses=problem_responses(*ACCESS_PROBLEMS, TicketNotFound),
)
async def read_ticket(request: Request, access: TicketAccessDep) -> TicketRead:
    """The buyer of its order (with `X-Order-Token`) or box office / admin."""
    return ticket_service.ticket_read(request.app.state.keys, access.ticket)


@router.patch(
    "/tickets/{ticket_id}",
    summary="Change a ticket's attendee",
    responses=problem_responses(*ACCESS_PROBLEMS, TicketNotFound, NameChangeClosed, TicketVoid),
)
async def update_ticket(
    request: Request, access: TicketAccessForUpdate, body: TicketUpdate, session: SessionDep
) -> TicketRead:
    """Fill in or change the attendee's name, email or dietary needs (e.g. a sponsor naming the guests of
    a table). The buyer may until the gala's `name_change_cutoff`; admins always. A guest email filled in
    or changed is sent the ticket (once per address; the buyer has every ticket already). The code does not
    change: to give the ticket to someone else, so that the old code stops working, transfer it."""
    ticket = _valid(access.ticket)
    await _check_cutoff(session, access, what="Names could be changed")
    ticket = await ticket_service.update_ticket(session, ticket, body, now=utc_now())
    return ticket_service.ticket_read(request.app.state.keys, ticket)


@router.post(
    "/tickets/{ticket_id}/transfer",
    summary="Transfer a ticket to another guest",
    responses=problem_responses(
        *ACCESS_PROBLEMS, TicketNotFound, NameChangeClosed, TicketVoid, TicketCheckedIn, TransferLimitReached
    ),
)
async def transfer_ticket(
    request: Request, access: TicketAccessForUpdate, body: TicketTransfer, session: SessionDep
) -> TicketRead:
    """Reissue the ticket to a new holder: its `version` goes up and it gets a new `code`; the old code
    is refused at the door (online at once, offline after the scanner's next sync). The new holder is
    emailed their ticket. The buyer may until the gala's `name_change_cutoff`; admins always. A void
    ticket, or one already used at the door, cannot be transferred."""
    ticket = _valid(access.ticket)
    await _check_cutoff(session, access, what="Tickets could be transferred")
    ticket = await ticket_service.transfer_ticket(session, ticket, body, now=utc_now())
    return ticket_service.ticket_read(request.app.state.keys, ticket)


@router.get(
    "/tickets/{ticket_id}/qr.png",
    summary="A ticket's QR code as PNG",
    response_class=PNGResponse,
    responses={
        **_binary("image/png", "The QR code, black on white."),
        **problem_responses(*ACCESS_PROBLEMS, TicketNotFound, TicketVoid),
    },
)
async def ticket_qr_png(
    request: Request,
    access: TicketAccessDep,
    scale: Annotated[int, Query(ge=2, le=40, description="Pixels per QR module.")] = 10,
) -> Response:
    """The ticket's current `code` as a QR code (error correction M, with its quiet zone). The buyer or
    box office / admin. A void ticket has none (`ticket_void`)."""
    code = ticket_service.ticket_code(request.app.state.keys, _valid(access.ticket))
    png = await asyncio.to_thread(render.qr_png, code, box_size=scale)
    return PNGResponse(png, headers=NO_STORE)


@router.get(
    "/tickets/{ticket_id}/qr.svg",
    summary="A ticket's QR code as SVG",
    response_class=SVGResponse,
    responses={
        **_binary("image/svg+xml", "The QR code, black on white."),
        **problem_responses(*ACCESS_PROBLEMS, TicketNotFound, TicketVoid),
    },
)
async def ticket_qr_svg(request: Request, access: TicketAccessDep) -> Response:
    """The ticket's current `code` as a scalable QR code. The buyer or box office / admin. A void ticket
    has none (`ticket_void`)."""
    code = ticket_service.ticket_code(request.app.state.keys, _valid(access.ticket))
    svg = await asyncio.to_thread(render.qr_svg, code)
    return SVGResponse(svg, headers=NO_STORE)


# --- an order's tickets: PDF and email -------------------------------------------------------------


async def _pdf_access(
    request: Request,
    session: SessionDep,
    principal: OptionalPrincipal,
    order_id: OrderID,
    token: OrderToken = None,
    access_token: Annotated[
        str | None,
        Query(max_length=200, description="The order's `access_token`, for links in emails; prefer the header."),
    ] = None,
) -> OrderAccess:
    return await resolve_order_access(request, session, principal, order_id, token or access_token, lock=False)


@router.get(
    "/orders/{order_id}/tickets.pdf",
    summary="An order's tickets as PDF",
    response_class=PDFResponse,
    responses={
        **_binary("application/pdf", "One page per valid ticket."),
        **problem_responses(*ACCESS_PROBLEMS, OrderNotFound, NoValidTickets),
    },
)
async def order_tickets_pdf(
    request: Request, access: Annotated[OrderAccess, Depends(_pdf_access)], session: SessionDep
) -> Response:
    """Printable tickets, one page per valid ticket: the gala, its date and time in the gala's time zone,
    the venue, the seat or table (or general admission), the guest's name, the ticket type, the QR code and
    the order id. The buyer (with `X-Order-Token`, or `?access_token=` as in the emailed link) or box
    office / admin. An order with no valid tickets (not paid yet, refunded) is `no_valid_tickets`."""
    tickets = await ticket_service.valid_tickets_of_order(session, access.order.id)
    if access.order.status not in PAID_STATUSES or not tickets:
        raise NoValidTickets("This order has no valid tickets to print.")
    pages = await ticket_service.ticket_pages(session, request.app.state.keys, tickets)
    pdf = await asyncio.to_thread(render.tickets_pdf, pages)
    return PDFResponse(
        pdf,
        headers={**NO_STORE, "Content-Disposition": f'attachment; filename="tickets-{access.order.id}.pdf"'},
    )


@router.post(
    "/orders/{order_id}/resend",
    status_code=202,
    summary="Email an order's tickets again",
    responses=problem_responses(*ACCESS_PROBLEMS, OrderNotFound, NoValidTickets),
)
async def resend_tickets(access: OrderAccessDep, session: SessionDep) -> DeliveryAccepted:
    """Queue the buyer's email with every valid ticket again (the buyer or box office / admin). Asking
    again while a copy is still waiting, or within five minutes, queues nothing more."""
    order = access.order
    if order.status not in PAID_STATUSES or not await ticket_service.valid_tickets_of_order(session, order.id):
        raise NoValidTickets("This order has no valid tickets to send.")
    await outbox.queue_resend(session, order, now=utc_now())
    return DeliveryAccepted(detail="The tickets will be emailed to the buyer's address shortly.")


@router.post(
    "/orders/lookup",
    status_code=202,
    summary="Email links to an address's orders",
    responses=problem_responses(InvalidApiKey, RateLimited),
)
async def lookup_orders(
    request: Request,
    body: OrderLookup,
    session: SessionDep,
    principal: OptionalPrincipal,  # noqa: ARG001 (a wrong API key is still 401 here)
) -> DeliveryAccepted:
    """For buyers who lost their link: emails the address a link to each of its paid orders. The answer
    is always `202` and the same, whether or not the address has orders, so it reveals nothing. At most
    one email per address every 15 minutes; per client, it counts against `RATE_LIMIT_ORDERS`."""
    client_ip = request.client.host if request.client else "unknown"
    await request.app.state.rate_limiter.check("orders-lookup", client_ip, request.app.state.settings.orders_limit)
    await outbox.queue_lookup(session, str(body.email), now=utc_now())
    return DeliveryAccepted(detail="If this address has orders, an email with links to them is on its way.")
