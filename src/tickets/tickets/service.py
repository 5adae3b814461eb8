"""Tickets: issued when an order is paid, one per seat or place; names can change, codes are signed."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from tickets.galas.models import Gala
from tickets.ids import new_id
from tickets.keys import KeyRing
from tickets.mail import outbox
from tickets.orders.models import Order, OrderItem
from tickets.seating.models import Seat, Section, SectionKind
from tickets.ticket_types.models import TicketType
from tickets.tickets import codes
from tickets.tickets.errors import TicketCheckedIn, TicketNotFound, TicketVoid, TransferLimitReached
from tickets.tickets.models import Ticket, TicketStatus
from tickets.tickets.render import TicketPage
from tickets.tickets.schemas import TicketRead, TicketTransfer, TicketUpdate

MAX_VERSION = 0xFFFF  # two bytes in the code


def new_tickets(order: Order, items: Sequence[OrderItem], *, now: datetime) -> list[dict[str, Any]]:
    """The rows of a paid order's tickets, one valid ticket per item, to insert with `INSERT_TICKETS`
    in the caller's transaction. The unique index on (seat, valid) makes a double sale impossible."""
    return [
        {
            "id": new_id("tkt"),
            "order_id": order.id,
            "order_item_id": item.id,
            "gala_id": order.gala_id,
            "ticket_type_id": item.ticket_type_id,
            "section_id": item.section_id,
            "seat_id": item.seat_id,
            "seat_label": item.seat_label,
            "table": item.table,
            "attendee_name": item.attendee_name or order.buyer_name if item.table is None else item.attendee_name,
            "attendee_email": item.attendee_email,
            "dietary": item.dietary,
            "status": TicketStatus.valid.value,
            "version": 1,
            "price_amount": item.price_amount - item.discount_amount,
            "issued_at": now,
            "updated_at": now,
        }
        for item in items
    ]


INSERT_TICKETS = insert(Ticket)


def ticket_code(keys: KeyRing, ticket: Ticket) -> str:
    """The exact QR text of the ticket's current version."""
    return codes.encode(keys, codes.CodePayload(ticket_id=ticket.id, gala_id=ticket.gala_id, version=ticket.version))


def ticket_read(keys: KeyRing, ticket: Ticket) -> TicketRead:
    code = ticket_code(keys, ticket)
    return TicketRead(
        id=ticket.id,
        order_id=ticket.order_id,
        gala_id=ticket.gala_id,
        ticket_type_id=ticket.ticket_type_id,
        section_id=ticket.section_id,
        seat_id=ticket.seat_id if ticket.seat_label is not None else None,
        seat_label=ticket.seat_label,
        table=ticket.table,
        attendee_name=ticket.attendee_name,
        attendee_email=ticket.attendee_email,
        dietary=ticket.dietary,
        status=TicketStatus(ticket.status),
        version=ticket.version,
        code=code,
        checked_in_at=ticket.checked_in_at,
    )


async def tickets_of_order(session: AsyncSession, order_id: str) -> list[Ticket]:
    """The order's tickets in the order of its items (the order the buyer listed the guests)."""
    return list(
        (
            await session.execute(
                select(Ticket)
                .join(OrderItem, col(OrderItem.id) == col(Ticket.order_item_id))
                .where(col(Ticket.order_id) == order_id)
                .order_by(col(Ticket.issued_at), col(OrderItem.position), col(Ticket.id))
            )
        ).scalars()
    )


async def valid_tickets_of_order(session: AsyncSession, order_id: str) -> list[Ticket]:
    return [t for t in await tickets_of_order(session, order_id) if t.status == TicketStatus.valid]


async def ticket_pages(session: AsyncSession, keys: KeyRing, tickets: Sequence[Ticket]) -> list[TicketPage]:
    """Everything the printed tickets show, loaded in a few queries."""
    if not tickets:
        return []
    galas = {
        g.id: g
        for g in (
            await session.execute(select(Gala).where(col(Gala.id).in_(sorted({t.gala_id for t in tickets}))))
        ).scalars()
    }
    types = {
        tt.id: tt
        for tt in (
            await session.execute(
                select(TicketType).where(col(TicketType.id).in_(sorted({t.ticket_type_id for t in tickets})))
            )
        ).scalars()
    }
    sections = {
        s.id: s
        for s in (
            await session.execute(select(Section).where(col(Section.id).in_(sorted({t.section_id for t in tickets}))))
        ).scalars()
    }
    reserved = sorted({t.seat_id for t in tickets if t.seat_label is not None})
    seats = {
        seat.id: seat
        for seat in (
            (await session.execute(select(Seat).where(col(Seat.id).in_(reserved)))).scalars() if reserved else []
        )
    }
    pages = []
    for t in tickets:
        gala = galas[t.gala_id]
        section = sections.get(t.section_id)
        seat = seats.get(t.seat_id)
        tt = types.get(t.ticket_type_id)
        pages.append(
            TicketPage(
                ticket_id=t.id,
                order_id=t.order_id,
                version=t.version,
                code=ticket_code(keys, t),
                gala_title=gala.title,
                starts_at=gala.starts_at,
                ends_at=gala.ends_at,
                timezone=gala.timezone,
                venue_name=gala.venue_name,
                venue_address=gala.venue_address,
                ticket_type=tt.name if tt is not None else "Ticket",
                section=section.name if section is not None else None,
                general_admission=section is not None and section.kind == SectionKind.general,
                seat_label=t.seat_label,
                row=seat.row if seat is not None else None,
                number=seat.number if seat is not None else None,
                table=t.table,
                attendee_name=t.attendee_name,
            )
        )
    return pages


async def get_ticket(session: AsyncSession, ticket_id: str, *, lock: bool = False) -> Ticket:
    stmt = select(Ticket).where(col(Ticket.id) == ticket_id)
    if lock:
        stmt = stmt.with_for_update()
    ticket: Ticket | None = (await session.execute(stmt)).scalar_one_or_none()
    if ticket is None:
        raise TicketNotFound(f"No ticket {ticket_id}.")
    return ticket


async def update_ticket(session: AsyncSession, ticket: Ticket, body: TicketUpdate, *, now: datetime) -> Ticket:
    """Change the attendee's details; the code (and version) stay the same. A guest email filled in or
    changed gets the ticket by email (the buyer has it already)."""
    email_before = ticket.attendee_email
    for key, value in body.model_dump(exclude_unset=True).items():
        if key == "attendee_email" and value is not None:
            value = str(value).lower()
        setattr(ticket, key, value)
    ticket.updated_at = now
    session.add(ticket)
    await session.flush()
    if ticket.attendee_email and ticket.attendee_email != email_before:
        order = await session.get(Order, ticket.order_id)
        if order is not None:
            await outbox.queue_new_guest_address(session, ticket, buyer_email=order.buyer_email, now=now)
    return ticket


async def transfer_ticket(session: AsyncSession, ticket: Ticket, body: TicketTransfer, *, now: datetime) -> Ticket:
    """Reissue a (locked) ticket to a new holder: the version goes up, so every earlier code of it is
    refused at the door (online, and offline once the scanner has synced); the new holder is emailed."""
    if ticket.status != TicketStatus.valid:
        raise TicketVoid("A void ticket cannot be transferred.")
    if ticket.checked_in_at is not None:
        raise TicketCheckedIn("This ticket has already been used at the door.")
    if ticket.version >= MAX_VERSION:
        raise TransferLimitReached("This ticket has been reissued too many times.")
    ticket.attendee_name = body.attendee_name
    ticket.attendee_email = str(body.attendee_email).lower()
    ticket.dietary = body.dietary  # the previous holder's needs are theirs, not the new guest's
    ticket.version += 1
    ticket.updated_at = now
    session.add(ticket)
    await session.flush()
    await outbox.queue_transfer(session, ticket, now=now)
    return ticket
