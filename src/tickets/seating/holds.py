"""Holds on inventory: the hot path of a sale.

Each hold is one conditional `UPDATE … RETURNING`: the WHERE clause is the availability rule, so two
buyers can never both win a seat, and an expired hold is free the moment it expires. On PostgreSQL
the rows are first locked in id order (`FOR UPDATE` in a sub-select), so concurrent orders for
overlapping seats queue instead of deadlocking; general-admission places use `SKIP LOCKED`, so
buyers of one area take different places instead of queueing on the same first rows. On SQLite the
whole transaction runs under `BEGIN IMMEDIATE`: one writer at a time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Integer,
    Subquery,
    Update,
    and_,
    bindparam,
    case,
    false,
    or_,
    select,
    union_all,
    update,
)
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from tickets.seating.models import Seat, SeatStatus
from tickets.seating.service import free_clause


def taken(sell: bool, expires_at: datetime) -> dict[str, object]:
    """What a taken seat is set to: sold for good, or held until `expires_at`."""
    if sell:
        return {"status": SeatStatus.sold, "hold_expires_at": None}
    return {"status": SeatStatus.held, "hold_expires_at": expires_at}


@dataclass
class SeatHold:
    """What a seat hold did: {seat_id: (label, section_id)} of the seats it held, and of the seats of
    the gala it could not hold (taken, blocked, or of another section). A requested id in neither
    is not a seat of this gala."""

    held: dict[str, tuple[str | None, str]] = field(default_factory=dict)
    refused: dict[str, tuple[str | None, str]] = field(default_factory=dict)


async def hold_seats(
    session: AsyncSession,
    *,
    gala_id: str,
    order_id: str,
    seats: Mapping[str, tuple[str, Sequence[str]]],
    expires_at: datetime,
    now: datetime,
    include_blocked: bool = False,
    naive: bool = False,
    sell: bool = False,
) -> SeatHold:
    """Hold reserved seats {seat_id: (ticket_type_id, allowed section ids)}. With `sell` (an order paid
    at once) they are taken as sold straight away: the same rule, one write of each row instead of two."""
    if not seats:
        return SeatHold()
    ids = sorted(seats)
    conn = await session.connection()  # Core, no autoflush: these statements touch seat rows only
    if naive:
        held = await _naive_hold(
            session,
            ids,
            seats,
            order_id=order_id,
            expires_at=expires_at,
            now=now,
            include_blocked=include_blocked,
            gala_id=gala_id,
            sell=sell,
        )
        return SeatHold(held, await _refused(session, gala_id, [sid for sid in ids if sid not in held]))
    section_ok = or_(
        false(),
        *(
            and_(col(Seat.id).in_(group_ids), col(Seat.section_id).in_(sections))
            for sections, group_ids in _group_by_sections(seats).items()
        ),
    )
    # Lock in id order in a CTE (evaluated once), then update only the rows that are still free.
    locked = (
        select(col(Seat.id), col(Seat.label), col(Seat.section_id))
        .where(col(Seat.id).in_(ids), col(Seat.gala_id) == gala_id)
        .order_by(col(Seat.id))
        .with_for_update()
        .cte("locked")
    )
    update_stmt = (
        update(Seat)
        .where(
            col(Seat.id) == locked.c.id,
            col(Seat.label).is_not(None),
            section_ok,
            free_clause(now, include_blocked=include_blocked),
        )
        .values(
            **taken(sell, expires_at),
            order_id=order_id,
            ticket_type_id=case({sid: tt for sid, (tt, _) in seats.items()}, value=col(Seat.id)),
        )
        .returning(col(Seat.id), col(Seat.label), col(Seat.section_id))
    )
    if conn.dialect.name == "postgresql":
        # One round trip for the answer on every seat asked for: the UPDATE runs as a data-modifying
        # CTE, and the outer SELECT reports each locked seat of the gala and whether it was held.
        done = update_stmt.cte("held")
        rows = await conn.execute(
            select(locked.c.id, locked.c.label, locked.c.section_id, done.c.id.is_not(None)).select_from(
                locked.outerjoin(done, done.c.id == locked.c.id)
            )
        )
        result = SeatHold()
        for sid, label, section_id, was_held in rows:
            (result.held if was_held else result.refused)[sid] = (label, section_id)
        return result
    held = {sid: (label, section_id) for sid, label, section_id in await conn.execute(update_stmt)}
    return SeatHold(held, await _refused(session, gala_id, [sid for sid in ids if sid not in held]))


async def _refused(session: AsyncSession, gala_id: str, seat_ids: list[str]) -> dict[str, tuple[str | None, str]]:
    """Label and section of the asked-for seats of this gala that were not held."""
    if not seat_ids:
        return {}
    rows = await session.execute(
        select(col(Seat.id), col(Seat.label), col(Seat.section_id)).where(
            col(Seat.id).in_(seat_ids), col(Seat.gala_id) == gala_id
        )
    )
    return {sid: (label, section_id) for sid, label, section_id in rows}


def _group_by_sections(seats: Mapping[str, tuple[str, Sequence[str]]]) -> dict[tuple[str, ...], list[str]]:
    groups: dict[tuple[str, ...], list[str]] = {}
    for seat_id, (_, sections) in seats.items():
        groups.setdefault(tuple(sorted(sections)), []).append(seat_id)
    return groups


async def hold_places(
    session: AsyncSession,
    *,
    section_id: str,
    order_id: str,
    ticket_type_id: str,
    count: int,
    expires_at: datetime,
    now: datetime,
    naive: bool = False,
    sell: bool = False,
) -> list[str]:
    """Hold up to `count` free places of a general area; returns the ids held (fewer if it sold out).
    With `sell`, they are taken as sold straight away."""
    setting = taken(sell, expires_at)
    if naive:
        free = list(
            (
                await session.execute(
                    select(col(Seat.id))
                    .where(col(Seat.section_id) == section_id, free_clause(now))
                    .order_by(col(Seat.id))
                    .limit(count)
                )
            ).scalars()
        )
        await session.commit()  # the check and the write in separate transactions: the classic race
        if free:
            await session.execute(
                update(Seat)
                .where(col(Seat.id).in_(free))
                .values(
                    **setting,
                    order_id=order_id,
                    ticket_type_id=ticket_type_id,
                )
                .execution_options(synchronize_session=False)
            )
        return free

    conn = await session.connection()  # Core, no autoflush: this statement touches seat rows only
    rows = await conn.execute(
        PICK_PLACES,
        {
            "pick_section_id": section_id,
            "count": count,
            "now": now,
            "new_status": setting["status"],
            "new_order_id": order_id,
            "new_expires_at": setting["hold_expires_at"],
            "new_ticket_type_id": ticket_type_id,
        },
    )
    return [r for (r,) in rows]


def _pick_places() -> Update:
    """Take up to :count free places of area :pick_section_id, first come first served, in one statement.

    Available places first, then places whose hold has expired. Each branch is one equality on
    (section_id, status) in id order: a range scan of the index ix_seat_section_status_id from the
    first candidate, so its cost does not grow as the area sells out. (With the availability rule's
    OR in one query, PostgreSQL walked the primary key and filtered, passing every place already
    taken.) The outer LIMIT stops before the second branch runs when the first is enough, and SKIP
    LOCKED lets concurrent buyers of one area take different places instead of queueing."""
    count = bindparam("count", type_=Integer)
    now: BindParameter[datetime] = bindparam("now")

    def candidates(rule: ColumnElement[bool]) -> Subquery:
        return (
            select(col(Seat.id))
            .where(col(Seat.section_id) == bindparam("pick_section_id"), rule, col(Seat.blocked).is_(False))
            .order_by(col(Seat.id))
            .limit(count)
            .with_for_update(skip_locked=True)
            .subquery()
        )

    available = candidates(col(Seat.status) == SeatStatus.available)
    expired = candidates(and_(col(Seat.status) == SeatStatus.held, col(Seat.hold_expires_at) <= now))
    # The pick must be a CTE: PostgreSQL evaluates it once. As an `IN (sub-select … LIMIT n)` the
    # planner may rescan the sub-select after rows were updated and so take more than n places.
    picked = union_all(select(available.c.id), select(expired.c.id)).limit(count).cte("picked")
    still_free = or_(
        col(Seat.status) == SeatStatus.available,
        and_(col(Seat.status) == SeatStatus.held, col(Seat.hold_expires_at) <= now),
    )
    return (
        update(Seat)
        .where(col(Seat.id) == picked.c.id, still_free, col(Seat.blocked).is_(False))
        .values(
            status=bindparam("new_status"),
            order_id=bindparam("new_order_id"),
            hold_expires_at=bindparam("new_expires_at"),
            ticket_type_id=bindparam("new_ticket_type_id"),
        )
        .returning(col(Seat.id))
    )


PICK_PLACES = _pick_places()  # built once: every general-admission order runs it


async def _naive_hold(
    session: AsyncSession,
    ids: list[str],
    seats: Mapping[str, tuple[str, Sequence[str]]],
    *,
    gala_id: str,
    order_id: str,
    expires_at: datetime,
    now: datetime,
    include_blocked: bool,
    sell: bool,
) -> dict[str, tuple[str | None, str]]:
    rows = await session.execute(
        select(col(Seat.id), col(Seat.label), col(Seat.section_id)).where(
            col(Seat.id).in_(ids),
            col(Seat.gala_id) == gala_id,
            free_clause(now, include_blocked=include_blocked),
        )
    )
    free = {sid: (label, section) for sid, label, section in rows if section in seats[sid][1]}
    await session.commit()  # the check and the write in separate transactions: the classic race
    for sid in free:
        await session.execute(
            update(Seat)
            .where(col(Seat.id) == sid)
            .values(
                **taken(sell, expires_at),
                order_id=order_id,
                ticket_type_id=seats[sid][0],
            )
            .execution_options(synchronize_session=False)
        )
    return free


async def release_holds(session: AsyncSession, *, order_id: str) -> int:
    """Free every seat and place an order still holds."""
    result = await session.execute(
        update(Seat)
        .where(col(Seat.order_id) == order_id, col(Seat.status) == SeatStatus.held)
        .values(status=SeatStatus.available, order_id=None, hold_expires_at=None, ticket_type_id=None)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


async def sell_held(session: AsyncSession, *, order_id: str) -> int:
    """Turn an order's holds into sales (expired holds still owned by the order included)."""
    result = await session.execute(
        update(Seat)
        .where(col(Seat.order_id) == order_id, col(Seat.status) == SeatStatus.held)
        .values(status=SeatStatus.sold, hold_expires_at=None)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


async def release_expired(session: AsyncSession, *, now: datetime, limit: int = 1000) -> int:
    """Tidy expired holds back to `available` (correctness does not depend on it)."""
    ids = select(col(Seat.id)).where(col(Seat.status) == SeatStatus.held, col(Seat.hold_expires_at) <= now).limit(limit)
    result = await session.execute(
        update(Seat)
        .where(
            col(Seat.id).in_(ids.scalar_subquery()),
            col(Seat.status) == SeatStatus.held,
            col(Seat.hold_expires_at) <= now,
        )
        .values(status=SeatStatus.available, order_id=None, hold_expires_at=None, ticket_type_id=None)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]
