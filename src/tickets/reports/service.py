"""Exports and figures for organizers: the attendee list and a gala's sales statistics."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from sqlalchemy import and_, case, func, select
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from tickets.galas.models import Gala
from tickets.orders.models import PAID_STATUSES, Order, OrderStatus
from tickets.pagination import each_page, paginate
from tickets.reports.schemas import (
    AttendeeRead,
    CheckInStats,
    Counts,
    GalaStats,
    RevenueStats,
    SectionStats,
    TicketTypeStats,
)
from tickets.seating.models import Seat, SeatStatus, Section
from tickets.ticket_types.models import TicketType
from tickets.tickets.models import Ticket, TicketStatus

CSV_COLUMNS = list(AttendeeRead.model_fields)


def _attendee_query() -> Any:
    return (
        select(
            Ticket,
            col(Order.buyer_name),
            col(Order.buyer_email),
            col(Order.payment_provider),
            col(TicketType.name),
            col(Section.name),
        )
        .join(Order, col(Order.id) == col(Ticket.order_id))
        .join(TicketType, col(TicketType.id) == col(Ticket.ticket_type_id))
        .join(Section, col(Section.id) == col(Ticket.section_id))
    )


def _attendee(row: Any) -> AttendeeRead:
    ticket, buyer_name, buyer_email, provider, tt_name, section_name = row
    return AttendeeRead(
        ticket_id=ticket.id,
        order_id=ticket.order_id,
        ticket_type_id=ticket.ticket_type_id,
        ticket_type=tt_name,
        section=section_name,
        seat_label=ticket.seat_label,
        table=ticket.table,
        attendee_name=ticket.attendee_name,
        attendee_email=ticket.attendee_email,
        dietary=ticket.dietary,
        buyer_name=buyer_name,
        buyer_email=buyer_email,
        payment_provider=provider,
        checked_in_at=ticket.checked_in_at,
    )


async def attendees_page(
    session: AsyncSession, gala_id: str, *, limit: int, cursor: str | None
) -> tuple[list[AttendeeRead], str | None]:
    """Valid tickets of the gala, in issue order, one page."""
    stmt = _attendee_query().where(col(Ticket.gala_id) == gala_id, col(Ticket.status) == TicketStatus.valid)
    rows, next_cursor = await paginate(
        session, stmt, created_col=Ticket.issued_at, id_col=Ticket.id, limit=limit, cursor=cursor, whole_rows=True
    )
    return [_attendee(r) for r in rows], next_cursor


async def attendees_all(session: AsyncSession, gala_id: str, *, batch: int = 1000) -> AsyncIterator[AttendeeRead]:
    """Every valid ticket of the gala, streamed in batches (for CSV)."""
    async for page in each_page(lambda cursor: attendees_page(session, gala_id, limit=batch, cursor=cursor)):
        for attendee in page:
            yield attendee


async def gala_stats(session: AsyncSession, gala: Gala, *, now: datetime) -> GalaStats:
    """Sold, held and available by tier and section; revenue and refunds; check-ins."""
    live_hold = and_(col(Seat.status) == SeatStatus.held, col(Seat.hold_expires_at) > now)
    sold_expr = func.sum(case((col(Seat.status) == SeatStatus.sold, 1), else_=0))
    held_expr = func.sum(case((live_hold, 1), else_=0))
    blocked_expr = func.sum(
        case((and_(col(Seat.blocked), col(Seat.status) != SeatStatus.sold, ~live_hold), 1), else_=0)
    )
    sections = list(
        (
            await session.execute(
                select(Section).where(col(Section.gala_id) == gala.id).order_by(col(Section.position))
            )
        ).scalars()
    )
    rows = await session.execute(
        select(col(Seat.section_id), func.count(), sold_expr, held_expr, blocked_expr)
        .where(col(Seat.gala_id) == gala.id)
        .group_by(col(Seat.section_id))
    )
    per_section = {r[0]: (int(r[1]), int(r[2] or 0), int(r[3] or 0), int(r[4] or 0)) for r in rows}
    by_section = []
    for s in sections:
        cap, sold, held, blocked = per_section.get(s.id, (0, 0, 0, 0))
        by_section.append(
            SectionStats(
                section_id=s.id,
                name=s.name,
                kind=s.kind,
                capacity=cap,
                sold=sold,
                held=held,
                blocked=blocked,
                available=cap - sold - held - blocked,
            )
        )
    totals = Counts(
        capacity=sum(x.capacity for x in by_section),
        sold=sum(x.sold for x in by_section),
        held=sum(x.held for x in by_section),
        blocked=sum(x.blocked for x in by_section),
        available=sum(x.available for x in by_section),
    )
    tts = list(
        (
            await session.execute(
                select(TicketType).where(col(TicketType.gala_id) == gala.id).order_by(col(TicketType.position))
            )
        ).scalars()
    )
    tt_rows = await session.execute(
        select(col(Seat.ticket_type_id), sold_expr, held_expr)
        .where(col(Seat.gala_id) == gala.id, col(Seat.ticket_type_id).is_not(None))
        .group_by(col(Seat.ticket_type_id))
    )
    per_tt = {r[0]: (int(r[1] or 0), int(r[2] or 0)) for r in tt_rows}
    revenue_rows = await session.execute(
        select(col(Ticket.ticket_type_id), func.sum(col(Ticket.price_amount)))
        .where(col(Ticket.gala_id) == gala.id, col(Ticket.status) == TicketStatus.valid)
        .group_by(col(Ticket.ticket_type_id))
    )
    per_tt_revenue = {r[0]: int(r[1] or 0) for r in revenue_rows}
    free_by_section = {x.section_id: x.available for x in by_section}
    by_type = []
    for tt in tts:
        sold, held = per_tt.get(tt.id, (0, 0))
        available = sum(free_by_section.get(s, 0) for s in tt.section_ids)
        if tt.quota is not None:
            available = min(available, max(tt.quota - sold - held, 0))
        by_type.append(
            TicketTypeStats(
                ticket_type_id=tt.id,
                name=tt.name,
                price_amount=tt.price_amount,
                quota=tt.quota,
                sold=sold,
                held=held,
                available=available,
                revenue_amount=per_tt_revenue.get(tt.id, 0),
            )
        )
    status_rows = await session.execute(
        select(col(Order.status), func.count()).where(col(Order.gala_id) == gala.id).group_by(col(Order.status))
    )
    by_status: dict[str, int] = {s.value: 0 for s in OrderStatus}
    for status, n in status_rows:
        by_status[status] = by_status.get(status, 0) + int(n)
    lapsed = (
        await session.execute(
            select(func.count()).where(
                col(Order.gala_id) == gala.id, col(Order.status) == OrderStatus.pending, col(Order.expires_at) <= now
            )
        )
    ).scalar_one()
    by_status[OrderStatus.pending] -= int(lapsed)  # pending past expiry is expired, swept or not
    by_status[OrderStatus.expired] += int(lapsed)
    money = await session.execute(
        select(col(Order.payment_provider), func.sum(col(Order.total_amount)), func.sum(col(Order.refunded_amount)))
        .where(
            col(Order.gala_id) == gala.id,
            col(Order.status).in_([*PAID_STATUSES, OrderStatus.refunded]),
            col(Order.late_payment).is_(None) | (col(Order.late_payment) != "refunded"),
        )
        .group_by(col(Order.payment_provider))
    )
    gross = refunded = 0
    by_provider: dict[str, int] = {}
    for provider, total, refund in money:
        by_provider[provider] = int(total or 0)
        gross += int(total or 0)
        refunded += int(refund or 0)
    checked = (
        await session.execute(
            select(func.count(), func.count(col(Ticket.checked_in_at))).where(
                col(Ticket.gala_id) == gala.id, col(Ticket.status) == TicketStatus.valid
            )
        )
    ).one()
    return GalaStats(
        gala_id=gala.id,
        currency=gala.currency,
        tickets=totals,
        by_ticket_type=by_type,
        by_section=by_section,
        orders=by_status,
        revenue=RevenueStats(
            gross_amount=gross, refunded_amount=refunded, net_amount=gross - refunded, by_provider=by_provider
        ),
        check_ins=CheckInStats(admitted=int(checked[1]), expected=int(checked[0])),
    )
