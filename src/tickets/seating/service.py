"""Sections, seats and places: the gala's inventory, its seat map, blocks, and the holds on it."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import BindParameter, ColumnElement, and_, delete, func, insert, or_, select, update
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from tickets.auth.service import Principal
from tickets.galas import service as galas_service
from tickets.galas.errors import GalaCancelled
from tickets.galas.models import Gala, GalaStatus
from tickets.ids import new_id
from tickets.problems import ValidationFailed
from tickets.seating.errors import (
    DuplicateLabel,
    DuplicateSectionName,
    InventoryInUse,
    SeatNotFound,
    SectionInUse,
    SectionNotFound,
    WrongSectionKind,
)
from tickets.seating.models import Seat, SeatStatus, Section, SectionKind
from tickets.seating.schemas import (
    GeneralSectionCreate,
    ReservedSectionCreate,
    SeatCreate,
    SeatRead,
    SectionRead,
    SectionUpdate,
)
from tickets.ticket_types.models import TicketType

_CHUNK = 900  # stay well under SQLite's bound-parameter limit


def free_clause(now: datetime | BindParameter[datetime], *, include_blocked: bool = False) -> ColumnElement[bool]:
    """The availability rule: unsold, and not held, or held by a hold that has expired. `now` is a time,
    or a bound parameter for a statement built once."""
    free = or_(
        col(Seat.status) == SeatStatus.available,
        and_(col(Seat.status) == SeatStatus.held, col(Seat.hold_expires_at) <= now),
    )
    return free if include_blocked else and_(free, col(Seat.blocked).is_(False))


def live_clause(now: datetime) -> ColumnElement[bool]:
    """Taken: sold, or held by a hold that has not expired yet."""
    return or_(
        col(Seat.status) == SeatStatus.sold,
        and_(col(Seat.status) == SeatStatus.held, col(Seat.hold_expires_at) > now),
    )


def seat_status(seat: Any, now: datetime) -> Literal["available", "held", "sold", "blocked"]:
    """The status shown for a seat: sold, held, blocked or available."""
    if seat.status == SeatStatus.sold:
        return "sold"
    if seat.status == SeatStatus.held and seat.hold_expires_at is not None and seat.hold_expires_at > now:
        return "held"
    return "blocked" if seat.blocked else "available"


def _chunks(items: Sequence[Any]) -> list[Sequence[Any]]:
    return [items[i : i + _CHUNK] for i in range(0, len(items), _CHUNK)]


async def _editable_gala(session: AsyncSession, gala_id: str, principal: Principal) -> Gala:
    gala = await galas_service.get_gala_for_update(session, gala_id, principal=principal)
    if gala.status == GalaStatus.cancelled:
        raise GalaCancelled("A cancelled gala cannot be changed.")
    return gala


async def _check_new_seats(
    session: AsyncSession, gala_id: str, section_id: str | None, seats: list[SeatCreate]
) -> None:
    labels = [s.label for s in seats]
    taken: list[str] = []
    for chunk in _chunks(labels):
        rows = await session.execute(
            select(col(Seat.label)).where(col(Seat.gala_id) == gala_id, col(Seat.label).in_(chunk))
        )
        taken.extend(r for (r,) in rows)
    if taken:
        raise DuplicateLabel(f"Seat labels already used in this gala: {', '.join(sorted(taken)[:20])}.", labels=taken)
    tables = sorted({s.table for s in seats if s.table is not None})
    if tables:
        stmt = select(col(Seat.table)).distinct().where(col(Seat.gala_id) == gala_id, col(Seat.table).in_(tables))
        if section_id is not None:
            stmt = stmt.where(col(Seat.section_id) != section_id)
        clashes = [r for (r,) in await session.execute(stmt)]
        if clashes:
            raise DuplicateLabel(
                f"Table labels already used by another section: {', '.join(sorted(clashes))}.", tables=clashes
            )


async def _insert_seats(session: AsyncSession, section: Section, seats: list[SeatCreate], *, start: int) -> None:
    rows = [
        {
            "id": new_id("seat"),
            "gala_id": section.gala_id,
            "section_id": section.id,
            "label": s.label,
            "row": s.row,
            "number": s.number,
            "table": s.table,
            "position": start + i,
            "blocked": False,
            "status": SeatStatus.available.value,
        }
        for i, s in enumerate(seats)
    ]
    for chunk in _chunks(rows):
        await session.execute(insert(Seat), list(chunk))


async def _insert_places(session: AsyncSession, section: Section, count: int, *, start: int) -> None:
    rows = [
        {
            "id": new_id("seat"),
            "gala_id": section.gala_id,
            "section_id": section.id,
            "position": start + i,
            "blocked": False,
            "status": SeatStatus.available.value,
        }
        for i in range(count)
    ]
    for chunk in _chunks(rows):
        await session.execute(insert(Seat), list(chunk))


async def create_section(
    session: AsyncSession,
    gala_id: str,
    body: ReservedSectionCreate | GeneralSectionCreate,
    *,
    principal: Principal,
    now: datetime,
) -> Section:
    """A reserved section with its seats, or a general area with `capacity` places."""
    await _editable_gala(session, gala_id, principal)
    name_taken = await session.execute(
        select(col(Section.id)).where(col(Section.gala_id) == gala_id, col(Section.name) == body.name)
    )
    if name_taken.first() is not None:
        raise DuplicateSectionName(f"This gala already has a section named {body.name!r}.")
    position = (await session.execute(select(func.count()).where(col(Section.gala_id) == gala_id))).scalar_one()
    section = Section(
        id=new_id("sec"), gala_id=gala_id, name=body.name, kind=body.kind, position=position, created_at=now
    )
    if isinstance(body, ReservedSectionCreate):
        await _check_new_seats(session, gala_id, None, body.seats)
        section.capacity = len(body.seats)
        session.add(section)
        await session.flush()
        await _insert_seats(session, section, body.seats, start=0)
    else:
        section.capacity = body.capacity
        session.add(section)
        await session.flush()
        await _insert_places(session, section, body.capacity, start=0)
    return section


async def get_section(session: AsyncSession, gala_id: str, section_id: str) -> Section:
    section = await session.get(Section, section_id)
    if section is None or section.gala_id != gala_id:
        raise SectionNotFound(f"No section {section_id} in gala {gala_id}.")
    return section


async def _available_by_section(session: AsyncSession, gala_id: str, now: datetime) -> dict[str, int]:
    rows = await session.execute(
        select(col(Seat.section_id), func.count())
        .where(col(Seat.gala_id) == gala_id, free_clause(now))
        .group_by(col(Seat.section_id))
    )
    return dict(rows.all())


def section_read(section: Section, available: int) -> SectionRead:
    return SectionRead(
        id=section.id,
        gala_id=section.gala_id,
        name=section.name,
        kind=SectionKind(section.kind),
        capacity=section.capacity,
        available=available,
    )


async def list_sections(session: AsyncSession, gala_id: str, *, now: datetime) -> list[SectionRead]:
    sections = (
        await session.execute(
            select(Section).where(col(Section.gala_id) == gala_id).order_by(col(Section.position), col(Section.id))
        )
    ).scalars()
    available = await _available_by_section(session, gala_id, now)
    return [section_read(s, available.get(s.id, 0)) for s in sections]


async def seat_map(session: AsyncSession, gala_id: str, *, now: datetime) -> dict[str, Any]:
    """The whole seat map in three queries: sections, reserved seats, and free places per area.

    The `SeatMap` document as plain data, ready to encode: a large hall has thousands of seats, and a
    model per seat cost more than reading and encoding them together (the shape is checked against
    `SeatMap` by the tests and the schema fuzzing)."""
    sections = list(
        (
            await session.execute(
                select(Section).where(col(Section.gala_id) == gala_id).order_by(col(Section.position), col(Section.id))
            )
        ).scalars()
    )
    reserved_ids = [s.id for s in sections if s.kind == SectionKind.reserved]
    seats_by_section: dict[str, list[dict[str, Any]]] = {sid: [] for sid in reserved_ids}
    if reserved_ids:
        rows = await session.execute(
            select(
                col(Seat.id),
                col(Seat.section_id),
                col(Seat.label),
                col(Seat.row),
                col(Seat.number),
                col(Seat.table),
                col(Seat.status),
                col(Seat.blocked),
                col(Seat.hold_expires_at),
            )
            .where(col(Seat.gala_id) == gala_id, col(Seat.label).is_not(None))
            .order_by(col(Seat.section_id), col(Seat.position))
        )
        for r in rows:
            seats_by_section[r.section_id].append(
                {
                    "id": r.id,
                    "label": r.label,
                    "row": r.row,
                    "number": r.number,
                    "table": r.table,
                    "status": seat_status(r, now),
                }
            )
    out: list[dict[str, Any]] = []
    general = [s for s in sections if s.kind == SectionKind.general]
    available = await _available_by_section(session, gala_id, now) if general else {}
    for s in sections:
        if s.kind == SectionKind.reserved:
            out.append(
                {
                    "id": s.id,
                    "name": s.name,
                    "kind": "reserved",
                    "capacity": None,
                    "available": None,
                    "seats": seats_by_section[s.id],
                }
            )
        else:
            out.append(
                {
                    "id": s.id,
                    "name": s.name,
                    "kind": "general",
                    "capacity": s.capacity,
                    "available": available.get(s.id, 0),
                    "seats": [],
                }
            )
    return {"gala_id": gala_id, "sections": out}


async def _load_seats(session: AsyncSession, gala_id: str, seat_ids: Sequence[str]) -> list[Seat]:
    found: list[Seat] = []
    for chunk in _chunks(sorted(set(seat_ids))):
        found.extend(
            (
                await session.execute(
                    select(Seat).where(
                        col(Seat.gala_id) == gala_id, col(Seat.id).in_(chunk), col(Seat.label).is_not(None)
                    )
                )
            ).scalars()
        )
    missing = sorted(set(seat_ids) - {s.id for s in found})
    if missing:
        raise SeatNotFound(f"No such seats in gala {gala_id}: {', '.join(missing[:20])}.", seat_ids=missing)
    return found


async def set_blocked(
    session: AsyncSession,
    gala_id: str,
    seat_ids: Sequence[str],
    *,
    blocked: bool,
    principal: Principal,
    now: datetime,
) -> list[SeatRead]:
    """Block (withhold from the public) or unblock seats. Held and sold seats keep their buyer."""
    await _editable_gala(session, gala_id, principal)
    seats = await _load_seats(session, gala_id, seat_ids)
    ids = [s.id for s in seats]
    for chunk in _chunks(ids):
        await session.execute(update(Seat).where(col(Seat.id).in_(chunk)).values(blocked=blocked))
    out = []
    for s in sorted(seats, key=lambda s: (s.section_id, s.position)):
        s.blocked = blocked
        out.append(
            SeatRead(id=s.id, label=s.label, row=s.row, number=s.number, table=s.table, status=seat_status(s, now))
        )
    return out


async def _section_in_use(session: AsyncSession, section: Section, now: datetime) -> bool:
    row = await session.execute(
        select(col(Seat.id)).where(col(Seat.section_id) == section.id, live_clause(now)).limit(1)
    )
    return row.first() is not None


async def update_section(
    session: AsyncSession,
    gala_id: str,
    section_id: str,
    body: SectionUpdate,
    *,
    principal: Principal,
    now: datetime,
) -> SectionRead:
    """Rename a section, or resize a general area (never below what is held and sold)."""
    await _editable_gala(session, gala_id, principal)
    section = await get_section(session, gala_id, section_id)
    if body.name is not None and body.name != section.name:
        clash = await session.execute(
            select(col(Section.id)).where(col(Section.gala_id) == gala_id, col(Section.name) == body.name)
        )
        if clash.first() is not None:
            raise DuplicateSectionName(f"This gala already has a section named {body.name!r}.")
        section.name = body.name
    if body.capacity is not None and body.capacity != section.capacity:
        if section.kind != SectionKind.general:
            raise WrongSectionKind("A reserved section's capacity is its seats: add or remove seats instead.")
        if body.capacity > section.capacity:
            last = (
                await session.execute(select(func.max(col(Seat.position))).where(col(Seat.section_id) == section.id))
            ).scalar()
            await _insert_places(session, section, body.capacity - section.capacity, start=(last or 0) + 1)
        else:
            surplus = section.capacity - body.capacity
            free_ids = [
                r
                for (r,) in await session.execute(
                    select(col(Seat.id))
                    .where(col(Seat.section_id) == section.id, free_clause(now, include_blocked=True))
                    .order_by(col(Seat.position).desc())
                    .limit(surplus)
                    .with_for_update()
                )
            ]
            if len(free_ids) < surplus:
                raise InventoryInUse(
                    f"Only {len(free_ids)} places are free; capacity cannot drop below held + sold "
                    f"({section.capacity - len(free_ids)}).",
                )
            for chunk in _chunks(free_ids):
                await session.execute(delete(Seat).where(col(Seat.id).in_(chunk)))
        section.capacity = body.capacity
    session.add(section)
    await session.flush()
    available = (await _available_by_section(session, gala_id, now)).get(section.id, 0)
    return section_read(section, available)


async def _ticket_types_using(session: AsyncSession, gala_id: str, section_id: str) -> list[str]:
    rows = await session.execute(
        select(col(TicketType.id), col(TicketType.section_ids)).where(col(TicketType.gala_id) == gala_id)
    )
    return [tt_id for tt_id, section_ids in rows if section_id in section_ids]


async def _has_history(session: AsyncSession, where: ColumnElement[bool]) -> bool:
    from tickets.orders.models import OrderItem

    return (await session.execute(select(col(OrderItem.id)).where(where).limit(1))).first() is not None


async def delete_section(
    session: AsyncSession, gala_id: str, section_id: str, *, principal: Principal, now: datetime
) -> None:
    """Remove a section and its seats, unless anything in it was ever ordered or a tier sells from it."""
    from tickets.orders.models import OrderItem

    await _editable_gala(session, gala_id, principal)
    section = await get_section(session, gala_id, section_id)
    if await _section_in_use(session, section, now) or await _has_history(
        session, col(OrderItem.section_id) == section.id
    ):
        raise InventoryInUse("This section has held, sold or ordered seats; it cannot be removed.")
    users = await _ticket_types_using(session, gala_id, section_id)
    if users:
        raise SectionInUse(f"Ticket types still sell from this section: {', '.join(users)}.", ticket_type_ids=users)
    await session.execute(delete(Seat).where(col(Seat.section_id) == section.id))
    await session.delete(section)
    await session.flush()


async def add_seats(
    session: AsyncSession, gala_id: str, section_id: str, seats: list[SeatCreate], *, principal: Principal
) -> SectionRead:
    """Add seats to a reserved section."""
    await _editable_gala(session, gala_id, principal)
    section = await get_section(session, gala_id, section_id)
    if section.kind != SectionKind.reserved:
        raise WrongSectionKind("A general area has places, not seats: change its capacity instead.")
    await _check_new_seats(session, gala_id, section.id, seats)
    last = (
        await session.execute(select(func.max(col(Seat.position))).where(col(Seat.section_id) == section.id))
    ).scalar()
    await _insert_seats(session, section, seats, start=(last or 0) + 1)
    section.capacity += len(seats)
    session.add(section)
    await session.flush()
    return section_read(section, 0)


async def delete_seat(
    session: AsyncSession, gala_id: str, seat_id: str, *, principal: Principal, now: datetime
) -> None:
    """Remove one seat, unless it is held or sold, or was ever ordered."""
    from tickets.orders.models import OrderItem

    await _editable_gala(session, gala_id, principal)
    (seat,) = await _load_seats(session, gala_id, [seat_id])
    if seat_status(seat, now) in ("held", "sold") or await _has_history(session, col(OrderItem.seat_id) == seat.id):
        raise InventoryInUse(f"Seat {seat.label} is held, sold or was ordered; it cannot be removed.")
    section = await get_section(session, gala_id, seat.section_id)
    await session.delete(seat)
    section.capacity -= 1
    session.add(section)
    await session.flush()


def validation_error(loc: list[str | int], msg: str) -> ValidationFailed:
    return ValidationFailed(msg, errors=[{"loc": loc, "msg": msg}])
