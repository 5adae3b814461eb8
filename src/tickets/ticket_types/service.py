"""Ticket types (price tiers): which sections they sell from, their quota, limits and sales window."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, select
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from tickets.auth.service import Principal
from tickets.galas import service as galas_service
from tickets.galas.errors import GalaCancelled
from tickets.galas.models import Gala, GalaStatus
from tickets.ids import new_id
from tickets.seating.errors import SectionNotFound
from tickets.seating.models import Seat, Section, SectionKind
from tickets.seating.service import free_clause, live_clause, validation_error
from tickets.ticket_types.errors import QuotaBelowSold, TicketTypeInUse, TicketTypeNotFound
from tickets.ticket_types.models import TicketType
from tickets.ticket_types.schemas import TicketTypeCreate, TicketTypeRead, TicketTypeUpdate, check_tier_rules


async def _check_sections(session: AsyncSession, gala_id: str, section_ids: Sequence[str]) -> list[Section]:
    sections = list(
        (
            await session.execute(
                select(Section).where(col(Section.gala_id) == gala_id, col(Section.id).in_(section_ids))
            )
        ).scalars()
    )
    missing = sorted(set(section_ids) - {s.id for s in sections})
    if missing:
        raise SectionNotFound(f"No such sections in gala {gala_id}: {', '.join(missing)}.", section_ids=missing)
    if len({s.kind for s in sections}) > 1:
        raise validation_error(
            ["body", "section_ids"],
            "A ticket type sells either from reserved sections or from general areas, not both.",
        )
    return sections


async def _editable_gala(session: AsyncSession, gala_id: str, principal: Principal) -> Gala:
    gala = await galas_service.get_gala_for_update(session, gala_id, principal=principal)
    if gala.status == GalaStatus.cancelled:
        raise GalaCancelled("A cancelled gala cannot be changed.")
    return gala


async def create_ticket_type(
    session: AsyncSession, gala_id: str, body: TicketTypeCreate, *, principal: Principal, now: datetime
) -> TicketTypeRead:
    """A new tier selling from the given sections of the gala."""
    gala = await _editable_gala(session, gala_id, principal)
    await _check_sections(session, gala_id, body.section_ids)
    position = (await session.execute(select(func.count()).where(col(TicketType.gala_id) == gala_id))).scalar_one()
    tt = TicketType(id=new_id("tt"), gala_id=gala_id, position=position, created_at=now, **body.model_dump())
    session.add(tt)
    await session.flush()
    (read,) = await _reads(session, gala, [tt], now=now)
    return read


async def get_ticket_type(session: AsyncSession, gala_id: str, ticket_type_id: str) -> TicketType:
    tt = await session.get(TicketType, ticket_type_id)
    if tt is None or tt.gala_id != gala_id:
        raise TicketTypeNotFound(f"No ticket type {ticket_type_id} in gala {gala_id}.")
    return tt


async def used_by_type(session: AsyncSession, ticket_type_ids: Sequence[str], *, now: datetime) -> dict[str, int]:
    """Held (unexpired) plus sold tickets per tier: what counts against a quota."""
    if not ticket_type_ids:
        return {}
    rows = await session.execute(
        select(col(Seat.ticket_type_id), func.count())
        .where(col(Seat.ticket_type_id).in_(ticket_type_ids), live_clause(now))
        .group_by(col(Seat.ticket_type_id))
    )
    return {tt_id: n for tt_id, n in rows if tt_id is not None}


async def _reads(
    session: AsyncSession, gala: Gala, tts: Sequence[TicketType], *, now: datetime
) -> list[TicketTypeRead]:
    free_rows = await session.execute(
        select(col(Seat.section_id), func.count())
        .where(col(Seat.gala_id) == gala.id, free_clause(now))
        .group_by(col(Seat.section_id))
    )
    free = dict(free_rows.all())
    used = await used_by_type(session, [t.id for t in tts if t.quota is not None], now=now)
    out = []
    for tt in tts:
        available = sum(free.get(s, 0) for s in tt.section_ids)
        if tt.quota is not None:
            available = min(available, max(tt.quota - used.get(tt.id, 0), 0))
        out.append(TicketTypeRead.from_model(tt, currency=gala.currency, available=available))
    return out


async def list_ticket_types(session: AsyncSession, gala: Gala, *, now: datetime) -> list[TicketTypeRead]:
    tts = list(
        (
            await session.execute(
                select(TicketType)
                .where(col(TicketType.gala_id) == gala.id)
                .order_by(col(TicketType.position), col(TicketType.id))
            )
        ).scalars()
    )
    return await _reads(session, gala, tts, now=now)


async def read_ticket_type(session: AsyncSession, gala: Gala, ticket_type_id: str, *, now: datetime) -> TicketTypeRead:
    tt = await get_ticket_type(session, gala.id, ticket_type_id)
    (read,) = await _reads(session, gala, [tt], now=now)
    return read


async def _has_orders(session: AsyncSession, ticket_type_id: str) -> bool:
    from tickets.orders.models import OrderItem

    row = await session.execute(
        select(col(OrderItem.id)).where(col(OrderItem.ticket_type_id) == ticket_type_id).limit(1)
    )
    return row.first() is not None


async def update_ticket_type(
    session: AsyncSession,
    gala_id: str,
    ticket_type_id: str,
    body: TicketTypeUpdate,
    *,
    principal: Principal,
    now: datetime,
) -> TicketTypeRead:
    """Change a tier. Prices apply to new orders; sold inventory is never stranded."""
    gala = await _editable_gala(session, gala_id, principal)
    tt = await get_ticket_type(session, gala_id, ticket_type_id)
    changes = body.model_dump(exclude_unset=True)
    for required in ("name", "price_amount", "section_ids", "min_per_order"):
        if required in changes and changes[required] is None:
            raise validation_error(["body", required], f"{required} may not be null")
    merged = {**tt.model_dump(), **changes}
    try:
        check_tier_rules(merged["min_per_order"], merged["max_per_order"], merged["sales_start"], merged["sales_end"])
    except ValueError as exc:
        raise validation_error(["body"], str(exc)) from exc
    if "section_ids" in changes:
        new_sections = await _check_sections(session, gala_id, changes["section_ids"])
        old_kind = (
            await session.execute(select(col(Section.kind)).where(col(Section.id) == tt.section_ids[0]))
        ).scalar()
        if old_kind is not None and new_sections[0].kind != old_kind and await _has_orders(session, tt.id):
            raise TicketTypeInUse("A tier with orders cannot switch between reserved and general sections.")
        dropped = set(tt.section_ids) - set(changes["section_ids"])
        if dropped:
            sold = await session.execute(
                select(col(Seat.id))
                .where(col(Seat.ticket_type_id) == tt.id, col(Seat.section_id).in_(dropped), live_clause(now))
                .limit(1)
            )
            if sold.first() is not None:
                raise TicketTypeInUse("This tier has held or sold seats in a section being removed from it.")
    if changes.get("quota") is not None:
        used = (await used_by_type(session, [tt.id], now=now)).get(tt.id, 0)
        if changes["quota"] < used:
            raise QuotaBelowSold(f"{used} tickets of this tier are held or sold; the quota cannot go below that.")
    for field, value in changes.items():
        setattr(tt, field, value)
    session.add(tt)
    await session.flush()
    (read,) = await _reads(session, gala, [tt], now=now)
    return read


async def delete_ticket_type(session: AsyncSession, gala_id: str, ticket_type_id: str, *, principal: Principal) -> None:
    """Remove a tier that has never been ordered."""
    await _editable_gala(session, gala_id, principal)
    tt = await get_ticket_type(session, gala_id, ticket_type_id)
    if await _has_orders(session, tt.id):
        raise TicketTypeInUse("This tier has orders; stop its sales with `sales_end` instead.")
    await session.delete(tt)
    await session.flush()


def section_kind_of(sections: Sequence[Section]) -> SectionKind:
    return SectionKind(sections[0].kind)
