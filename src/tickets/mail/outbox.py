"""Queueing mail inside the caller's transaction: the message exists if and only if the change commits.

Each message has a dedupe key; inserting a key that exists does nothing, so a retried request, a
duplicate webhook or a second reconciliation never queues a second copy.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from tickets.galas.models import Gala
from tickets.ids import new_id
from tickets.mail.models import MailKind, MailMessage, MailStatus
from tickets.orders.models import Order
from tickets.tickets.models import Ticket

# A buyer may ask for their tickets again, and anyone may ask for an address's orders; both are
# throttled per order or address so that the endpoints cannot be used to flood an inbox.
RESEND_WINDOW_SECONDS = 300
LOOKUP_WINDOW_SECONDS = 900


def _subject(text: str) -> str:
    return " ".join(text.split())[:300]


async def title_of_gala(session: AsyncSession, gala_id: str) -> str:
    title: str | None = (
        await session.execute(select(col(Gala.title)).where(col(Gala.id) == gala_id))
    ).scalar_one_or_none()
    return title or "your gala"


async def _insert_once(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> int:
    """Insert the messages whose dedupe key is new; returns how many were queued."""
    if not rows:
        return 0
    conn = await session.connection()
    # A prebuilt statement run with a list of rows (one round trip, batched by SQLAlchemy, compiled once)
    # instead of a multi-row VALUES built per call (compiled on every call).
    return len((await conn.execute(_INSERT_ONCE[conn.dialect.name], list(rows))).all())


# Queue a message unless its dedupe key is queued already (for `db.insert_all`), and the same
# reporting which rows it inserted.
INSERT_ONCE = {
    name: dialect.insert(MailMessage).on_conflict_do_nothing(index_elements=["dedupe_key"])
    for name, dialect in (("postgresql", postgresql), ("sqlite", sqlite))
}
_INSERT_ONCE = {
    name: statement.returning(col(MailMessage.id), sort_by_parameter_order=True)
    for name, statement in INSERT_ONCE.items()
}


def _row(
    *,
    kind: MailKind,
    dedupe_key: str,
    to: str,
    subject: str,
    now: datetime,
    order_id: str | None = None,
    ticket_id: str | None = None,
    ticket_version: int | None = None,
) -> dict[str, Any]:
    return {
        "id": new_id("msg"),
        "kind": kind.value,
        "dedupe_key": dedupe_key,
        "order_id": order_id,
        "ticket_id": ticket_id,
        "ticket_version": ticket_version,
        "to_address": to,
        "subject": _subject(subject),
        "status": MailStatus.pending.value,
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
    }


def guest_key(ticket_id: str, version: int) -> str:
    return f"guest:{ticket_id}:v{version}"


def paid_order_mail(order: Order, tickets: Sequence[Ticket], *, now: datetime, gala_title: str) -> list[dict[str, Any]]:
    """The rows of a paid order's messages, to insert with `INSERT_ONCE` in the transaction that marks
    it paid: the buyer's tickets (all of them, in one PDF), and each named guest's own ticket."""
    rows = [
        _row(
            kind=MailKind.order_tickets,
            dedupe_key=f"order-paid:{order.id}",
            to=order.buyer_email,
            subject=f"Your tickets for {gala_title}",
            order_id=order.id,
            now=now,
        )
    ]
    for ticket in tickets:
        email = (ticket.attendee_email or "").lower()
        if email and email != order.buyer_email.lower():
            rows.append(_guest_row(ticket, guest_key(ticket.id, ticket.version), title=gala_title, now=now))
    return rows


def _guest_row(ticket: Ticket, dedupe_key: str, *, title: str, now: datetime) -> dict[str, Any]:
    return _row(
        kind=MailKind.guest_ticket,
        dedupe_key=dedupe_key,
        to=(ticket.attendee_email or "").lower(),
        subject=f"Your ticket for {title}",
        order_id=ticket.order_id,
        ticket_id=ticket.id,
        ticket_version=ticket.version,
        now=now,
    )


async def queue_new_guest_address(session: AsyncSession, ticket: Ticket, *, buyer_email: str, now: datetime) -> int:
    """A guest's email filled in or changed after payment (a sponsor naming the guests of a table): that
    guest gets their ticket. Once per address and version; nothing when the guest is the buyer, or while
    a message of this ticket is still waiting (it is written when sent, to the address as it is then)."""
    email = (ticket.attendee_email or "").lower()
    if not email or email == buyer_email.lower():
        return 0
    waiting = (
        await session.execute(
            select(col(MailMessage.id))
            .where(
                col(MailMessage.ticket_id) == ticket.id,
                col(MailMessage.ticket_version) == ticket.version,
                col(MailMessage.status) == MailStatus.pending,
            )
            .limit(1)
        )
    ).first()
    if waiting is not None:
        return 0
    title = await title_of_gala(session, ticket.gala_id)
    key = f"{guest_key(ticket.id, ticket.version)}:{hashlib.sha256(email.encode()).hexdigest()[:16]}"
    return await _insert_once(session, [_guest_row(ticket, key, title=title, now=now)])


async def queue_transfer(session: AsyncSession, ticket: Ticket, *, now: datetime) -> int:
    """The reissued ticket, to its new holder."""
    if not ticket.attendee_email:
        return 0
    title = await title_of_gala(session, ticket.gala_id)
    row = _row(
        kind=MailKind.ticket_transfer,
        dedupe_key=guest_key(ticket.id, ticket.version),
        to=ticket.attendee_email.lower(),
        subject=f"A ticket for {title} is yours",
        order_id=ticket.order_id,
        ticket_id=ticket.id,
        ticket_version=ticket.version,
        now=now,
    )
    return await _insert_once(session, [row])


async def queue_resend(session: AsyncSession, order: Order, *, now: datetime) -> int:
    """The buyer's tickets again; nothing new is queued while an earlier copy is still waiting."""
    waiting = (
        await session.execute(
            select(col(MailMessage.id))
            .where(
                col(MailMessage.order_id) == order.id,
                col(MailMessage.kind).in_([MailKind.order_tickets, MailKind.order_resend]),
                col(MailMessage.status).in_([MailStatus.pending, MailStatus.sending]),
            )
            .limit(1)
        )
    ).first()
    if waiting is not None:
        return 0
    title = await title_of_gala(session, order.gala_id)
    window = int(now.timestamp()) // RESEND_WINDOW_SECONDS
    row = _row(
        kind=MailKind.order_resend,
        dedupe_key=f"order-resend:{order.id}:{window}",
        to=order.buyer_email,
        subject=f"Your tickets for {title}",
        order_id=order.id,
        now=now,
    )
    return await _insert_once(session, [row])


async def queue_lookup(session: AsyncSession, email: str, *, now: datetime) -> int:
    """Links to an address's paid orders. Queued whatever the address, so the answer and its timing
    say nothing about whether it has orders; the sender drops it if there are none."""
    address = email.strip().lower()
    digest = hashlib.sha256(address.encode()).hexdigest()[:32]
    window = int(now.timestamp()) // LOOKUP_WINDOW_SECONDS
    row = _row(
        kind=MailKind.order_lookup,
        dedupe_key=f"lookup:{digest}:{window}",
        to=address,
        subject="Your ticket orders",
        now=now,
    )
    return await _insert_once(session, [row])
