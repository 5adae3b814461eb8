"""Tickets: issued when an order is paid, one per seat or place; names can change, codes are signed."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import insert, select
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from tickets.ids import new_id
from tickets.keys import KeyRing
from tickets.orders.models import Order, OrderItem
from tickets.tickets import codes
from tickets.tickets.errors import TicketNotFound
from tickets.tickets.models import Ticket, TicketStatus
from tickets.tickets.schemas import TicketRead, TicketUpdate


async def issue_tickets(session: AsyncSession, order: Order, items: Sequence[OrderItem], *, now: datetime) -> None:
    """One valid ticket per item. The unique index on (seat, valid) makes a double sale impossible."""
    rows = [
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
    if rows:
        await session.execute(insert(Ticket), rows)


def ticket_read(keys: KeyRing, ticket: Ticket) -> TicketRead:
    code = codes.encode(keys, codes.CodePayload(ticket_id=ticket.id, gala_id=ticket.gala_id, version=ticket.version))
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
    return list(
        (
            await session.execute(
                select(Ticket).where(col(Ticket.order_id) == order_id).order_by(col(Ticket.issued_at), col(Ticket.id))
            )
        ).scalars()
    )


async def get_ticket(session: AsyncSession, ticket_id: str, *, lock: bool = False) -> Ticket:
    stmt = select(Ticket).where(col(Ticket.id) == ticket_id)
    if lock:
        stmt = stmt.with_for_update()
    ticket: Ticket | None = (await session.execute(stmt)).scalar_one_or_none()
    if ticket is None:
        raise TicketNotFound(f"No ticket {ticket_id}.")
    return ticket


async def update_ticket(session: AsyncSession, ticket: Ticket, body: TicketUpdate, *, now: datetime) -> Ticket:
    """Change the attendee's details; the code (and version) stay the same."""
    for key, value in body.model_dump(exclude_unset=True).items():
        if key == "attendee_email" and value is not None:
            value = str(value).lower()
        setattr(ticket, key, value)
    ticket.updated_at = now
    session.add(ticket)
    await session.flush()
    return ticket
