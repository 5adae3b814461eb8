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
from datetime import datetime

from sqlalchemy import and_, case, false, or_, select, update
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from tickets.seating.models import Seat, SeatStatus
from tickets.seating.service import free_clause


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
) -> dict[str, tuple[str | None, str]]:
    """Hold reserved seats {seat_id: (ticket_type_id, allowed section ids)}; returns {seat_id: (label, section_id)}
    for those held."""
    if not seats:
        return {}
    ids = sorted(seats)
    if naive:
        return await _naive_hold(
            session,
            ids,
            seats,
            order_id=order_id,
            expires_at=expires_at,
            now=now,
            include_blocked=include_blocked,
            gala_id=gala_id,
        )
    section_ok = or_(
        false(),
        *(
            and_(col(Seat.id).in_(group_ids), col(Seat.section_id).in_(sections))
            for sections, group_ids in _group_by_sections(seats).items()
        ),
    )
    # Lock in id order in a CTE (evaluated once), then update only the rows that are still free.
    locked = (
        select(col(Seat.id))
        .where(col(Seat.id).in_(ids), col(Seat.gala_id) == gala_id)
        .order_by(col(Seat.id))
        .with_for_update()
        .cte("locked")
    )
    stmt = (
        update(Seat)
        .where(
            col(Seat.id) == locked.c.id,
            col(Seat.label).is_not(None),
            section_ok,
            free_clause(now, include_blocked=include_blocked),
        )
        .values(
            status=SeatStatus.held,
            order_id=order_id,
            hold_expires_at=expires_at,
            ticket_type_id=case({sid: tt for sid, (tt, _) in seats.items()}, value=col(Seat.id)),
        )
        .returning(col(Seat.id), col(Seat.label), col(Seat.section_id))
        .execution_options(synchronize_session=False)
    )
    return {sid: (label, section_id) for sid, label, section_id in (await session.execute(stmt)).tuples()}


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
) -> list[str]:
    """Hold up to `count` free places of a general area; returns the ids held (fewer if it sold out)."""
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
                    status=SeatStatus.held,
                    order_id=order_id,
                    hold_expires_at=expires_at,
                    ticket_type_id=ticket_type_id,
                )
                .execution_options(synchronize_session=False)
            )
        return free
    # The pick must be a CTE: PostgreSQL evaluates it once. As an `IN (sub-select … LIMIT n)` the
    # planner may rescan the sub-select after rows were updated and so take more than n places.
    picked = (
        select(col(Seat.id))
        .where(col(Seat.section_id) == section_id, free_clause(now))
        .order_by(col(Seat.id))
        .limit(count)
        .with_for_update(skip_locked=True)
        .cte("picked")
    )
    stmt = (
        update(Seat)
        .where(col(Seat.id) == picked.c.id, free_clause(now))
        .values(status=SeatStatus.held, order_id=order_id, hold_expires_at=expires_at, ticket_type_id=ticket_type_id)
        .returning(col(Seat.id))
        .execution_options(synchronize_session=False)
    )
    return [r for (r,) in await session.execute(stmt)]


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
) -> dict[str, tuple[str | None, str]]:
    rows = await session.execute(
        select(col(Seat.id), col(Seat.label), col(Seat.section_id)).where(
            col(Seat.id).in_(ids),
            col(Seat.gala_id) == gala_id,
            free_clause(now, include_blocked=include_blocked),
        )
    )
    free = {sid: (label, section) for sid, label, section in rows.tuples() if section in seats[sid][1]}
    await session.commit()  # the check and the write in separate transactions: the classic race
    for sid in free:
        await session.execute(
            update(Seat)
            .where(col(Seat.id) == sid)
            .values(
                status=SeatStatus.held,
                order_id=order_id,
                hold_expires_at=expires_at,
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
