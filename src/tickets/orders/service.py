"""Orders: hold seats and places all or nothing, price them, and settle, cancel or expire them."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache, partial
from typing import Any, TypedDict

from sqlalchemy import (
    ARRAY,
    BindParameter,
    ColumnElement,
    Insert,
    Integer,
    Select,
    String,
    all_,
    and_,
    any_,
    bindparam,
    exists,
    func,
    insert,
    or_,
    select,
    type_coerce,
    union_all,
    update,
)
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import make_transient_to_detached
from sqlalchemy.sql.elements import Grouping
from sqlalchemy.sql.selectable import CTE
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from tickets.auth.service import Principal
from tickets.config import Settings
from tickets.db import Database, SqlValue, fetch_rows, insert_all, insert_all_at_once, no_transaction_open
from tickets.galas.errors import GalaNotFound, GalaNotOnSale
from tickets.galas.models import Gala, GalaStatus
from tickets.ids import new_id
from tickets.mail import outbox as mail_outbox
from tickets.orders.errors import (
    DuplicatePromoCode,
    InvalidItem,
    OrderExpired,
    OrderNotFound,
    OrderNotPending,
    PaymentsNotConfigured,
    PromoCodeExhausted,
    PromoCodeInvalid,
    PromoCodeNotFound,
    SalesEnded,
    SalesNotOpen,
    SeatUnavailable,
    SoldOut,
    TableNotFound,
    TooFewTickets,
    TooManyTickets,
)
from tickets.orders.models import (
    PAID_STATUSES,
    DiscountKind,
    Order,
    OrderItem,
    OrderStatus,
    PaymentProvider,
    PromoCode,
)
from tickets.orders.schemas import OrderCreate, PromoCodeCreate, PromoCodeUpdate
from tickets.pagination import each_page, paginate
from tickets.seating import holds
from tickets.seating.models import Seat, SeatStatus, Section, SectionKind
from tickets.seating.service import free_clause
from tickets.ticket_types.models import TicketType
from tickets.tickets import service as ticket_service
from tickets.tickets.models import Ticket
from tickets.webhooks import outbox

log = logging.getLogger("tickets.orders")


@dataclass
class Line:
    """One ticket to hold and sell."""

    index: int
    ticket_type: TicketType
    seat_id: str | None = None
    table: str | None = None
    section_id: str | None = None
    seat_label: str | None = None
    attendee_name: str | None = None
    attendee_email: str | None = None
    dietary: str | None = None
    price: int = 0
    discount: int = 0


class _Attendee(TypedDict):
    attendee_name: str | None
    attendee_email: str | None
    dietary: str | None


@dataclass
class Plan:
    gala: Gala
    lines: list[Line]
    sections: dict[str, Section]
    promo: PromoCode | None = None
    general: list[tuple[TicketType, str | None, list[Line]]] = field(default_factory=list)
    # The committed state of the seats the body names, read with the plan when the engine allows:
    # {seat_id: (label, section_id, free)} (a seat of another gala, or none, is missing).
    seats_asked: dict[str, tuple[str | None, str, bool]] | None = None
    # Likewise for an order of general places only: {section_id: free places}, each counted up to the
    # number of places the order asks for (every section of the gala is there).
    places_free: dict[str, int] | None = None

    @property
    def subtotal(self) -> int:
        return sum(line.price for line in self.lines)

    @property
    def discount(self) -> int:
        return sum(line.discount for line in self.lines)

    @property
    def total(self) -> int:
        return self.subtotal - self.discount


def effective_status(order: Order, now: datetime) -> OrderStatus:
    """A pending order past `expires_at` is expired at once, whether or not the sweeper has run."""
    if order.status == OrderStatus.pending and order.expires_at is not None and order.expires_at <= now:
        return OrderStatus.expired
    return OrderStatus(order.status)


def _item_error(index: int, msg: str, cls: type[InvalidItem] = InvalidItem) -> InvalidItem:
    return cls(f"items[{index}]: {msg}", errors=[{"loc": ["body", "items", index], "msg": msg}])


# The gala, the asked-for ticket types and the gala's sections in one round trip (a few rows: ticket
# types x sections) instead of three queries. Built once, like the other statements every order runs.
# Plain columns, not entities: the plan only reads them, so they are made into detached objects here
# without the ORM's loading machinery (`_detached`).
_PLAN_MODELS: tuple[type[Gala] | type[TicketType] | type[Section], ...] = (Gala, TicketType, Section)
_PLAN_TABLES = [sa_inspect(model).local_table for model in _PLAN_MODELS]
_PLAN = (
    select(*(column for table in _PLAN_TABLES for column in table.columns))
    .select_from(Gala)
    .outerjoin(
        TicketType,
        and_(col(TicketType.gala_id) == col(Gala.id), col(TicketType.id).in_(bindparam("tt_ids", expanding=True))),
    )
    .outerjoin(Section, col(Section.gala_id) == col(Gala.id))
    .where(col(Gala.id) == bindparam("gala_id"))
)
_PLAN_KEYS = [tuple(column.key for column in table.columns) for table in _PLAN_TABLES]
_SECTION_ID_AT = len(_PLAN_KEYS[0]) + len(_PLAN_KEYS[1])  # where a row's Section columns start (its id)
# The asked-for seats of a gala as they stand, each with whether the availability rule finds it free.
_SEAT_STATE = select(
    col(Seat.id), col(Seat.label), col(Seat.section_id), free_clause(bindparam("now"), include_blocked=False)
).where(col(Seat.id).in_(bindparam("ids", expanding=True)), col(Seat.gala_id) == bindparam("gala_id"))
# PostgreSQL, a public order that names seats: the plan's read also brings `_SEAT_STATE` (what
# `refuse_if_taken` reads first), as one JSON column computed once: a round trip fewer.
_SEATS_ASKED = _SEAT_STATE.subquery()
_PLAN_AND_SEATS = _PLAN.add_columns(
    select(func.json_agg(func.json_build_array(*_SEATS_ASKED.c))).scalar_subquery().label("seats_asked")
)


def _free_places(in_area: ColumnElement[bool], count: BindParameter[int], *outer: type[Section]) -> Select[int]:
    """How many places of the area(s) that `in_area` picks are free, counted up to `count`: the two
    branches of the hold's pick (available, then held and expired), each a short range of
    ix_seat_section_status_id. (`outer`: tables of an enclosing query that `in_area` refers to.)"""

    def branch(rule: ColumnElement[bool]) -> Select[str]:
        pick = select(col(Seat.id)).where(in_area, rule, col(Seat.blocked).is_(False)).limit(count)
        places = (pick.correlate(*outer) if outer else pick).subquery()
        return select(places.c.id)

    free = union_all(
        branch(col(Seat.status) == SeatStatus.available),
        branch(and_(col(Seat.status) == SeatStatus.held, col(Seat.hold_expires_at) <= bindparam("now"))),
    ).subquery()
    return select(func.count()).select_from(free)


# The free places of the areas :sections, up to :count (`refuse_if_taken`, when they did not come with the plan).
_FREE_PLACES = _free_places(
    col(Seat.section_id).in_(bindparam("sections", expanding=True)), bindparam("count", type_=Integer)
)
# PostgreSQL, a public order of general places only: the plan's read also brings, on each section's row,
# its free places up to :places_cap (the places the order asks for): a round trip fewer. (Every kind of
# section: a ticket type sold in a reserved and a general section takes its places from both.)
_PLACES_FREE = _free_places(col(Seat.section_id) == col(Section.id), bindparam("places_cap", type_=Integer), Section)
_PLAN_AND_PLACES = _PLAN.add_columns(_PLACES_FREE.scalar_subquery().label("places_free"))


def _seat_state(rows: Sequence[Sequence[Any]]) -> dict[str, tuple[str | None, str, bool]]:
    """`_SEAT_STATE`'s rows as {seat_id: (label, section_id, free)}."""
    return {sid: (label, section_id, bool(free)) for sid, label, section_id, free in rows}


def _detached(rows: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
    """The rows of `_PLAN` as detached objects, one per model: {id: object} (outer joins that found
    nothing leave no object)."""
    found: list[dict[str, Any]] = [{} for _ in _PLAN_MODELS]
    for row in rows:
        start = 0
        for model, keys, objects in zip(_PLAN_MODELS, _PLAN_KEYS, found, strict=True):
            ident = row[start]
            if ident is not None and ident not in objects:
                values = row[start : start + len(keys)]
                objects[ident] = model.model_construct(**dict(zip(keys, values, strict=True)))
            start += len(keys)
    return found


async def _load_plan(
    session: AsyncSession, body: OrderCreate, *, box_office: bool, now: datetime, glance: Database | None
) -> Plan:
    tt_ids = sorted({item.ticket_type_id for item in body.items})
    seat_ids = sorted({item.seat_id for item in body.items if item.seat_id is not None})
    places_only = all(item.seat_id is None and item.table is None for item in body.items)
    public_pg = not box_office and (glance.engine if glance else session.get_bind()).dialect.name == "postgresql"
    with_seats = public_pg and bool(seat_ids)
    with_places = public_pg and places_only
    params: dict[str, Any] = {"gala_id": body.gala_id, "tt_ids": tt_ids}
    if with_seats:
        params.update(ids=seat_ids, now=now)
    elif with_places:
        params.update(places_cap=sum(item.quantity or 1 for item in body.items), now=now)
    statement = _PLAN_AND_SEATS if with_seats else _PLAN_AND_PLACES if with_places else _PLAN
    if glance is not None:
        rows = await glance.glance(statement, params)
    else:
        rows = await fetch_rows(await session.connection(), statement, params)
    galas, tts, all_sections = _detached(rows)
    gala: Gala | None = next(iter(galas.values()), None)
    if gala is None or (gala.status == GalaStatus.draft and not box_office):
        raise GalaNotFound(f"No gala {body.gala_id}.")
    if box_office:
        if gala.status not in (GalaStatus.on_sale, GalaStatus.closed):
            raise GalaNotOnSale(f"Gala {gala.id} is {gala.status}.", status=gala.status)
    elif gala.status != GalaStatus.on_sale:
        raise GalaNotOnSale(f"Gala {gala.id} is {gala.status}, not on sale.", status=gala.status)

    wanted = {s for tt in tts.values() for s in tt.section_ids}
    sections = {sid: section for sid, section in all_sections.items() if sid in wanted}
    plan = Plan(gala=gala, lines=[], sections=sections)
    if with_seats:
        plan.seats_asked = _seat_state(rows[0][-1] or [])  # (json_agg is typed JSON: already decoded)
    elif with_places:
        plan.places_free = {row[_SECTION_ID_AT]: row[-1] for row in rows if row[-1] is not None}
    tables: dict[str, list[tuple[int, TicketType]]] = {}
    general: dict[tuple[str, str | None], list[Line]] = {}
    for index, item in enumerate(body.items):
        tt = tts.get(item.ticket_type_id)
        if tt is None:
            raise _item_error(index, f"no ticket type {item.ticket_type_id} in this gala")
        if not box_office:
            if tt.sales_start is not None and now < tt.sales_start:
                raise SalesNotOpen(f"Sales for {tt.name} open at {tt.sales_start.isoformat()}.", ticket_type_id=tt.id)
            if tt.sales_end is not None and now >= tt.sales_end:
                raise SalesEnded(f"Sales for {tt.name} ended at {tt.sales_end.isoformat()}.", ticket_type_id=tt.id)
        kinds = {sections[s].kind for s in tt.section_ids if s in sections}
        reserved = kinds == {SectionKind.reserved}
        attendee: _Attendee = {
            "attendee_name": item.attendee_name,
            "attendee_email": item.attendee_email,
            "dietary": item.dietary,
        }
        if reserved:
            if item.seat_id is not None:
                plan.lines.append(Line(index=index, ticket_type=tt, seat_id=item.seat_id, **attendee))
            elif item.table is not None:
                tables.setdefault(item.table, []).append((index, tt))
            else:
                raise _item_error(index, f"{tt.name} is for reserved seating: give a seat_id or a table")
        else:
            if item.seat_id is not None or item.table is not None:
                raise _item_error(index, f"{tt.name} is general admission: give a quantity, not a seat or table")
            if item.section_id is not None and item.section_id not in tt.section_ids:
                raise _item_error(index, f"{tt.name} is not sold in section {item.section_id}")
            bucket = general.setdefault((tt.id, item.section_id), [])
            for _ in range(item.quantity or 1):
                line = Line(index=index, ticket_type=tt, section_id=item.section_id, **attendee)
                plan.lines.append(line)
                bucket.append(line)
    if tables:
        await _expand_tables(session, plan, tables)
    plan.general = [(tts[tt_id], section_id, lines) for (tt_id, section_id), lines in general.items()]

    seen: set[str] = set()
    for line in plan.lines:
        if line.seat_id is not None:
            if line.seat_id in seen:
                raise _item_error(line.index, f"seat {line.seat_id} is asked for twice")
            seen.add(line.seat_id)
    _check_counts(plan, box_office=box_office)
    return plan


async def _expand_tables(session: AsyncSession, plan: Plan, tables: dict[str, list[tuple[int, TicketType]]]) -> None:
    rows = await session.execute(
        select(col(Seat.id), col(Seat.table), col(Seat.section_id))
        .where(col(Seat.gala_id) == plan.gala.id, col(Seat.table).in_(sorted(tables)))
        .order_by(col(Seat.position))
    )
    by_table: dict[str, list[tuple[str, str]]] = {}
    for seat_id, table, section_id in rows:
        by_table.setdefault(table, []).append((seat_id, section_id))
    for table, requests in tables.items():
        for index, tt in requests:
            if len(requests) > 1:
                raise _item_error(index, f"table {table} is asked for twice")
            seats = by_table.get(table)
            if not seats:
                raise _item_error(index, f"no table {table} in this gala", TableNotFound)
            if any(section_id not in tt.section_ids for _, section_id in seats):
                raise _item_error(index, f"{tt.name} is not sold at table {table}")
            for seat_id, _ in seats:
                plan.lines.append(Line(index=index, ticket_type=tt, seat_id=seat_id, table=table))


def _check_counts(plan: Plan, *, box_office: bool) -> None:
    per_type: dict[str, int] = {}
    for line in plan.lines:
        per_type[line.ticket_type.id] = per_type.get(line.ticket_type.id, 0) + 1
    types = {line.ticket_type.id: line.ticket_type for line in plan.lines}
    for tt_id, count in per_type.items():
        tt = types[tt_id]
        if count < tt.min_per_order:
            raise TooFewTickets(f"{tt.name}: at least {tt.min_per_order} per order.", ticket_type_id=tt_id)
        if tt.max_per_order is not None and count > tt.max_per_order and not box_office:
            raise TooManyTickets(f"{tt.name}: at most {tt.max_per_order} per order.", ticket_type_id=tt_id)
    limit = plan.gala.max_tickets_per_order
    if limit is not None and len(plan.lines) > limit and not box_office:
        raise TooManyTickets(f"At most {limit} tickets per order.", max_tickets_per_order=limit)


async def find_promo(session: AsyncSession, gala_id: str, code: str) -> PromoCode | None:
    return (
        await session.execute(
            select(PromoCode).where(col(PromoCode.gala_id) == gala_id, col(PromoCode.code) == code.upper())
        )
    ).scalar_one_or_none()


def _price(plan: Plan, *, comp: bool) -> None:
    for line in plan.lines:
        line.price = 0 if comp else line.ticket_type.price_amount
        line.discount = 0
    promo = plan.promo
    if promo is None or comp:
        return
    eligible = [
        line for line in plan.lines if promo.ticket_type_ids is None or line.ticket_type.id in promo.ticket_type_ids
    ]
    if not eligible:
        raise PromoCodeInvalid("The promo code does not apply to any ticket in this order.")
    if promo.discount_kind == DiscountKind.percent:
        for line in eligible:
            line.discount = (line.price * (promo.percent_off or 0) + 50) // 100  # half up, per ticket
    else:
        remaining = promo.amount_off or 0
        for line in eligible:
            line.discount = min(remaining, line.price)
            remaining -= line.discount


async def promo_uses(session: AsyncSession, promo_ids: Sequence[str], *, now: datetime) -> dict[str, int]:
    """Orders counting against a promo code's limit: paid ones and pending ones still holding."""
    if not promo_ids:
        return {}
    rows = await session.execute(
        select(col(Order.promo_code_id), func.count())
        .where(
            col(Order.promo_code_id).in_(promo_ids),
            or_(
                col(Order.status).in_([*PAID_STATUSES, OrderStatus.refunded]),
                (col(Order.status) == OrderStatus.pending) & (col(Order.expires_at) > now),
            ),
        )
        .group_by(col(Order.promo_code_id))
    )
    return {pid: n for pid, n in rows if pid is not None}


async def _take_promo(session: AsyncSession, plan: Plan, code: str, *, now: datetime) -> None:
    promo = await find_promo(session, plan.gala.id, code)
    if promo is None or not promo.active:
        raise PromoCodeInvalid(f"Unknown promo code {code!r}.")
    if (promo.valid_from is not None and now < promo.valid_from) or (
        promo.valid_until is not None and now >= promo.valid_until
    ):
        raise PromoCodeInvalid(f"The promo code {code!r} is not valid now.")
    plan.promo = promo


async def _check_promo_limit(session: AsyncSession, promo: PromoCode, *, now: datetime) -> None:
    if promo.max_uses is None:
        return
    # The row lock serialises orders using this code; the count then sees every committed use.
    await session.execute(select(col(PromoCode.id)).where(col(PromoCode.id) == promo.id).with_for_update())
    used = (await promo_uses(session, [promo.id], now=now)).get(promo.id, 0)
    if used >= promo.max_uses:
        raise PromoCodeExhausted(f"The promo code {promo.code!r} has been used up.")


async def _check_quotas(session: AsyncSession, plan: Plan, *, now: datetime) -> list[dict[str, str]]:
    from tickets.ticket_types.service import used_by_type

    wanted: dict[str, int] = {}
    for line in plan.lines:
        if line.ticket_type.quota is not None:
            wanted[line.ticket_type.id] = wanted.get(line.ticket_type.id, 0) + 1
    if not wanted:
        return []
    ids = sorted(wanted)
    await session.execute(
        select(col(TicketType.id)).where(col(TicketType.id).in_(ids)).order_by(col(TicketType.id)).with_for_update()
    )
    used = await used_by_type(session, ids, now=now)
    quotas = {line.ticket_type.id: line.ticket_type.quota or 0 for line in plan.lines}
    return [{"ticket_type_id": tt_id} for tt_id in ids if used.get(tt_id, 0) + wanted[tt_id] > quotas[tt_id]]


async def _hold(
    session: AsyncSession,
    plan: Plan,
    order_id: str,
    *,
    expires_at: datetime,
    now: datetime,
    box_office: bool,
    naive: bool,
    sell: bool = False,
) -> None:
    """Hold everything the plan asks for (as sold at once with `sell`), or raise (the caller's
    rollback then releases it all)."""
    sold_out = await _check_quotas(session, plan, now=now)
    seat_lines = {line.seat_id: line for line in plan.lines if line.seat_id is not None}
    hold = await holds.hold_seats(
        session,
        gala_id=plan.gala.id,
        order_id=order_id,
        seats={sid: (line.ticket_type.id, line.ticket_type.section_ids) for sid, line in seat_lines.items()},
        expires_at=expires_at,
        now=now,
        include_blocked=box_office,
        naive=naive,
        sell=sell,
    )
    unavailable: list[dict[str, str | None]] = []
    for sid in sorted(set(seat_lines) - set(hold.held)):
        line = seat_lines[sid]
        label, seat_section = hold.refused.get(sid, (None, ""))
        if label is None:  # not a seat of this gala (or a general-admission place)
            raise _item_error(line.index, f"no seat {sid} in this gala")
        if seat_section not in line.ticket_type.section_ids:
            raise _item_error(line.index, f"{line.ticket_type.name} is not sold for seat {label}")
        unavailable.append({"seat_id": sid, "label": label})
    for sid, (label, seat_section_id) in hold.held.items():
        seat_lines[sid].seat_label = label
        seat_lines[sid].section_id = seat_section_id
    for tt, section_id, lines in plan.general:
        remaining = list(lines)
        for candidate in [section_id] if section_id else list(tt.section_ids):
            if not remaining:
                break
            got = await holds.hold_places(
                session,
                section_id=candidate,
                order_id=order_id,
                ticket_type_id=tt.id,
                count=len(remaining),
                expires_at=expires_at,
                now=now,
                naive=naive,
                sell=sell,
            )
            for place_id, line in zip(got, remaining, strict=False):
                line.seat_id, line.section_id = place_id, candidate
            remaining = remaining[len(got) :]
        if remaining:
            sold_out.append({"section_id": section_id} if section_id else {"ticket_type_id": tt.id})
    if unavailable:
        raise _seat_unavailable(unavailable)
    if sold_out:
        raise _sold_out(sold_out)


def _seat_unavailable(unavailable: list[dict[str, str | None]]) -> SeatUnavailable:
    labels = ", ".join(str(u["label"]) for u in unavailable)
    return SeatUnavailable(f"Not available: {labels}.", unavailable=unavailable)


def _sold_out(unavailable: list[dict[str, str]]) -> SoldOut:
    return SoldOut("Not enough tickets left for this order.", unavailable=unavailable)


async def refuse_if_taken(db: Database, plan: Plan, *, now: datetime) -> None:
    """Refuse a public order at once when what it asks for is already taken in the committed state,
    with the very answer the hold would give, and without taking a lock.

    In a sell-out most orders are refused. Each refusal decided here costs a short read or none (the
    seats' state may have come with the plan: `Plan.seats_asked`) instead of a
    transaction that locks the asked-for seats (and makes the buyers of those seats wait); a seat or
    place that is taken in the committed state is taken at that instant, so refusing then is a correct
    answer. Whatever this cannot decide exactly as the hold would (an unknown seat, a promo code with a
    limit, quotas, areas shared between lines) is left to the hold, and so is everything that looks free."""
    if plan.promo is not None and plan.promo.max_uses is not None:
        return  # the promo code's limit is checked before the hold, and may refuse first
    seat_lines = {line.seat_id: line for line in plan.lines if line.seat_id is not None}
    if seat_lines:
        state = plan.seats_asked
        if state is None or not seat_lines.keys() <= state.keys():  # not read with the plan (or a table's seats)
            rows = await db.glance(_SEAT_STATE, {"ids": sorted(seat_lines), "gala_id": plan.gala.id, "now": now})
            state = _seat_state(rows)
        unavailable: list[dict[str, str | None]] = []
        for sid in sorted(seat_lines):
            label, seat_section, free = state.get(sid, (None, "", False))
            if label is None or seat_section not in seat_lines[sid].ticket_type.section_ids:
                return  # the hold names the item that is wrong
            if not free:
                unavailable.append({"seat_id": sid, "label": label})
        if unavailable:
            raise _seat_unavailable(unavailable)
    if not plan.general or any(line.ticket_type.quota is not None for line in plan.lines):
        return
    areas = [[section_id] if section_id else sorted(tt.section_ids) for tt, section_id, _ in plan.general]
    if len({a for group in areas for a in group}) < sum(len(group) for group in areas):
        return  # two lines draw on one area: the hold takes them one after the other
    sold_out: list[dict[str, str]] = []
    for (tt, section_id, lines), sections in zip(plan.general, areas, strict=True):
        if plan.places_free is not None:  # read with the plan, each area's count capped at least at len(lines)
            places = sum(plan.places_free.get(area, 0) for area in sections)
        else:
            places = (await db.glance(_FREE_PLACES, {"sections": sections, "count": len(lines), "now": now}))[0][0]
        if places < len(lines):
            sold_out.append({"section_id": section_id} if section_id else {"ticket_type_id": tt.id})
    if sold_out:
        raise _sold_out(sold_out)


async def plan_order(
    session: AsyncSession,
    body: OrderCreate,
    *,
    settings: Settings,
    now: datetime,
    payment_method: PaymentProvider | None = None,
    principal: Principal | None = None,
    glance: Database | None = None,
) -> Plan:
    """What an order asks for, checked against the gala's rules and priced: everything decided before
    any seat is touched. Only reads, and takes no lock. With `glance` (a plan read before the order's
    transaction), the plan's own read is `glance.glance`: the latest committed state, on PostgreSQL on
    the driver in autocommit, without making a connection of the session's."""
    box_office = payment_method is not None
    if principal is not None:
        principal.require_gala(body.gala_id)
    plan = await _load_plan(session, body, box_office=box_office, now=now, glance=glance)
    if body.promo_code:
        await _take_promo(session, plan, body.promo_code, now=now)
    _price(plan, comp=payment_method == PaymentProvider.comp)
    if plan.total > 0 and not box_office and not settings.payments_enabled:
        raise PaymentsNotConfigured("This gala's tickets cost money, and card payments are not set up on this server.")
    return plan


async def place_order(
    session: AsyncSession,
    body: OrderCreate,
    *,
    settings: Settings,
    now: datetime,
    payment_method: PaymentProvider | None = None,
    principal: Principal | None = None,
    plan: Plan | None = None,
    also: Callable[[Order, list[OrderItem]], Sequence[tuple[Insert, Sequence[dict[str, Any]]]]] | None = None,
) -> tuple[Order, list[OrderItem]]:
    """Hold seats and places for a new order, all or nothing.

    The public's orders are `pending` until paid through Stripe (or `paid` at once when free); box office
    orders (`payment_method` comp, cash or invoice) are `paid` at once and may take blocked seats.
    `plan` is `plan_order`'s answer for this very body, when the caller has it already. `also` gives rows
    of the caller's to insert with the order's own (its Idempotency-Key's answer, say).

    Everything is written in `session`'s transaction, except on PostgreSQL for a public order of
    reserved seats alone, or of places of one area, when `session` has no transaction open yet: that
    order is one statement that commits on its own (`_sell_at_once`), and whatever the caller writes
    afterwards is a transaction of its own.
    """
    box_office = payment_method is not None
    if plan is None:
        plan = await plan_order(
            session, body, settings=settings, now=now, payment_method=payment_method, principal=principal
        )
    total = plan.total
    if plan.promo is not None:
        await _check_promo_limit(session, plan.promo, now=now)

    order_id = new_id("ord")
    expires_at = now + timedelta(seconds=settings.order_hold_seconds)
    if payment_method is not None:
        provider = payment_method
    else:
        provider = PaymentProvider.free if total == 0 else PaymentProvider.stripe
    # An order that needs no card payment is paid at once: its seats are taken as sold and the order
    # is written as paid, instead of held and pending first and then updated (two fewer writes).
    paid_at_once = provider != PaymentProvider.stripe
    hold = partial(
        _hold,
        session,
        plan,
        order_id,
        expires_at=expires_at,
        now=now,
        box_office=box_office,
        naive=settings.unsafe_naive_holds,
        sell=paid_at_once,
    )
    at_once = not settings.unsafe_naive_holds and _sold_in_one_statement(plan) and await no_transaction_open(session)
    if at_once:
        _lines_from_plan(plan)
    else:
        await hold()
    order = Order(
        id=order_id,
        gala_id=plan.gala.id,
        status=OrderStatus.paid if paid_at_once else OrderStatus.pending,
        buyer_email=str(body.buyer_email).lower(),
        buyer_name=body.buyer_name,
        currency=plan.gala.currency,
        subtotal_amount=plan.subtotal,
        discount_amount=plan.discount,
        total_amount=total,
        promo_code_id=plan.promo.id if plan.promo else None,
        promo_code=plan.promo.code if plan.promo else None,
        payment_provider=provider,
        created_by_key_id=principal.key_id if principal else None,
        expires_at=None if paid_at_once else expires_at,
        created_at=now,
        updated_at=now,
        paid_at=now if paid_at_once else None,
    )
    item_ids = [new_id("itm") for _ in plan.lines]

    async def rows() -> tuple[list[OrderItem], list[tuple[Insert, Sequence[dict[str, Any]]]]]:
        """The order's items, and every row to write: made again after a one-statement sale fell back to
        the hold, which has then picked the places (the same ids: the caller's `also` answer names them)."""
        items = [
            OrderItem.model_construct(  # plain values of ours, read and inserted, never flushed
                id=item_id,
                order_id=order_id,
                ticket_type_id=line.ticket_type.id,
                section_id=line.section_id or "",
                seat_id=line.seat_id or "",
                seat_label=line.seat_label,
                table=line.table,
                price_amount=line.price,
                discount_amount=line.discount,
                attendee_name=line.attendee_name,
                attendee_email=str(line.attendee_email).lower() if line.attendee_email else None,
                dietary=line.dietary,
                position=i,
            )
            for i, (item_id, line) in enumerate(zip(item_ids, plan.lines, strict=True))
        ]
        # Written as Core INSERTs, no unit-of-work flush: with the tickets, mail and event of an order paid
        # at once, in one round trip on PostgreSQL. The order then joins the session as a persistent
        # object, so a later change to it (the PaymentIntent) is flushed as an UPDATE.
        item_rows = [item.model_dump() for item in items]
        writes: list[tuple[Insert, Sequence[dict[str, Any]]]] = [
            (_INSERT_ORDER, [order.model_dump()]),
            (_INSERT_ITEMS, item_rows),
            *(also(order, items) if also is not None else ()),
        ]
        if paid_at_once:
            writes += await _issue_rows(session, order, items, now=now, gala_title=plan.gala.title)
        if at_once and plan.general:
            # The places that the one statement is to take are not known yet: the rows name each as the
            # statement's n-th place taken.
            places = {row["id"]: _nth_place(n) for n, row in enumerate(item_rows)}
            for _, batch in writes:
                for row in batch:
                    if "seat_id" in row and not row["seat_id"]:
                        row["seat_id"] = places[row.get("order_item_id", row["id"])]
        return items, writes

    items, writes = await rows()
    left: bool | None = None
    if at_once:
        left = await _sell_at_once(session, plan, order, writes, now=now, sell=paid_at_once)
        if left is None:  # a seat or place was taken since the plan's read: the hold gives the exact answer
            at_once = False
            await hold()
            items, writes = await rows()
    if not at_once:
        # Whether anything is left for the public, read in the same round trip as the writes: it reads
        # only seats, which the hold has written, and needs none of these rows.
        probe = (_ANYTHING_LEFT, {"gala_id": plan.gala.id, "now": now})
        first = await insert_all(session, writes, then=probe if plan.gala.sold_out_at is None else None)
        left = None if first is None else bool(first[0])
    if left is False and plan.gala.sold_out_at is None:
        await _mark_sold_out(session, plan.gala, now=now, committed=at_once)
    make_transient_to_detached(order)
    session.add(order)
    return order, items


def _sold_in_one_statement(plan: Plan) -> bool:
    """Whether the order can be sold by `_sell_at_once`: a public order, read with its seats' state or
    its areas' free places (`Plan.seats_asked`, `Plan.places_free`: PostgreSQL), with nothing else to
    lock first (a quota, a promo code's limit), of
    - reserved seats alone (no tables, no places), each of a section its ticket type is sold in; or
    - places alone, of one ticket type in one area."""
    if not plan.lines or any(line.ticket_type.quota is not None for line in plan.lines):
        return False
    if plan.promo is not None and plan.promo.max_uses is not None:
        return False
    if plan.places_free is not None:
        return len(plan.general) == 1 and len(_area_of(plan)) == 1
    state = plan.seats_asked
    if state is None or plan.general:
        return False
    for line in plan.lines:
        seat = state.get(line.seat_id or "")
        if line.table is not None or seat is None or seat[0] is None or seat[1] not in line.ticket_type.section_ids:
            return False  # (the hold names the item that is wrong)
    return True


def _area_of(plan: Plan) -> list[str]:
    """The areas that the places of a plan's one general line may come from."""
    ((tt, section_id, _),) = plan.general
    return [section_id] if section_id else list(tt.section_ids)


def _lines_from_plan(plan: Plan) -> None:
    """What the hold would fill in of each line, from what the plan read: a seat's label and section
    (neither ever changes), a place's area."""
    if plan.seats_asked is None:
        (area,) = _area_of(plan)
        for line in plan.lines:
            line.section_id = area
        return
    for line in plan.lines:
        assert line.seat_id is not None
        line.seat_label, line.section_id = plan.seats_asked[line.seat_id][:2]


async def _sell_at_once(
    session: AsyncSession,
    plan: Plan,
    order: Order,
    writes: Sequence[tuple[Insert, Sequence[dict[str, Any]]]],
    *,
    now: datetime,
    sell: bool,
) -> bool | None:
    """PostgreSQL: hold (or, with `sell`, sell) the plan's seats or places and write the order's rows in
    one statement, committed on its own (`insert_all_at_once`; the caller's session has no transaction
    open). Returns whether anything is left for the public; None, with nothing written, if not everything
    asked for was free."""
    taken = holds.taken(sell, order.expires_at or now)
    params: dict[str, Any] = {"gala_id": plan.gala.id, "now": now, "count": len(plan.lines)}
    params.update(new_status=taken["status"], new_expires_at=taken["hold_expires_at"], new_order_id=order.id)
    if plan.general:
        ((tt, _, _),) = plan.general
        params.update(pick_section_id=_area_of(plan)[0], new_ticket_type_id=tt.id)
        sale = _PLACE_SALE
    else:
        seats = sorted((line.seat_id, line.ticket_type.id) for line in plan.lines if line.seat_id is not None)
        params.update(seat_ids=[seat_id for seat_id, _ in seats], ticket_type_ids=[tt_id for _, tt_id in seats])
        sale = _SEAT_SALE
    try:
        row = await insert_all_at_once(session, writes, then=(sale, params))
    except DBAPIError as exc:
        if getattr(exc.orig, "sqlstate", None) == REQUIREMENT_FAILED:
            return None
        raise
    return bool(row[1])


_INSERT_ORDER = insert(Order)
_INSERT_ITEMS = insert(OrderItem)


def _left_for_the_public(other_than: ColumnElement[bool] | None = None) -> ColumnElement[bool]:
    """Whether any seat or place of :gala_id is left for the public (of those `other_than` picks): two
    index probes on (gala_id, status), each stopping at its first row, an available seat or one whose
    hold has expired. (The availability rule's OR in one query made PostgreSQL collect every available
    seat of the gala first.)"""

    def any_seat(*rule: ColumnElement[bool]) -> ColumnElement[bool]:
        others = () if other_than is None else (other_than,)
        return exists().where(col(Seat.gala_id) == bindparam("gala_id"), *rule, col(Seat.blocked).is_(False), *others)

    return or_(
        any_seat(col(Seat.status) == SeatStatus.available),
        any_seat(col(Seat.status) == SeatStatus.held, col(Seat.hold_expires_at) <= bindparam("now")),
    )


_ANYTHING_LEFT = select(_left_for_the_public())


def _sale(taken: CTE, other_than: ColumnElement[bool]) -> Select[Any, Any]:
    """The read after a one-statement sale's INSERTs (`insert_all_at_once`), given the CTE of its hold,
    `taken` (an UPDATE … RETURNING the ids it took):
    - `tickets_require` ends the statement with SQLSTATE TK001, undoing all of it, unless the hold took
      :count seats or places (a migration of ours defines it);
    - whether anything else is left for the public (in one statement the read still sees what the hold
      took as it was, hence `other_than`)."""
    all_taken = select(func.count()).select_from(taken).scalar_subquery() == bindparam("count", type_=Integer)
    return select(
        func.tickets_require(all_taken, "not everything asked for was free"), _left_for_the_public(other_than)
    )


def _seat_sale() -> Select[Any, Any]:
    """`_sale` of reserved seats: lock the asked-for seats of :gala_id in id order (`FOR UPDATE`,
    re-checked after any wait, as `hold_seats` does), and take those that are free."""
    ids = bindparam("seat_ids", type_=ARRAY(String))
    locked = (
        select(col(Seat.id))
        .where(col(Seat.id) == any_(ids), col(Seat.gala_id) == bindparam("gala_id"), col(Seat.label).is_not(None))
        .order_by(col(Seat.id))
        .with_for_update()
        .cte("locked")
    )
    # (in parentheses: PostgreSQL subscripts a cast only then)
    ticket_types = type_coerce(Grouping(bindparam("ticket_type_ids", type_=ARRAY(String))), ARRAY(String))
    held = (
        update(Seat)
        .where(col(Seat.id) == locked.c.id, free_clause(bindparam("now")))
        .values(
            status=bindparam("new_status"),
            hold_expires_at=bindparam("new_expires_at"),
            order_id=bindparam("new_order_id"),
            ticket_type_id=ticket_types[func.array_position(ids, col(Seat.id))],
        )
        .returning(col(Seat.id))
        .cte("held")
    )
    return _sale(held, col(Seat.id) != all_(ids))


_SEAT_SALE = _seat_sale()
# `_sale` of general places: the hold's own pick (`holds.PICK_PLACES`), and the places it took numbered,
# for the rows that name them (`_nth_place`).
_PLACES_TAKEN = holds.PICK_PLACES.cte("taken")
_PLACES_NUMBERED = select(_PLACES_TAKEN.c.id, func.row_number().over(order_by=_PLACES_TAKEN.c.id).label("n")).cte(
    "numbered"
)
_PLACE_SALE = _sale(_PLACES_TAKEN, col(Seat.id).not_in(select(_PLACES_TAKEN.c.id)))


@lru_cache(maxsize=64)
def _nth_place(n: int) -> SqlValue:
    """The id of the (n+1)-th place that `_PLACE_SALE` took, as SQL in the row that names it."""
    place = select(_PLACES_NUMBERED.c.id).where(_PLACES_NUMBERED.c.n == n + 1).scalar_subquery()
    return SqlValue(f"place {n}", place)


REQUIREMENT_FAILED = "TK001"  # tickets_require's SQLSTATE


async def _mark_sold_out(session: AsyncSession, gala: Gala, *, now: datetime, committed: bool = False) -> None:
    """Nothing is left for the public (`_ANYTHING_LEFT` found nothing): the first time, tell integrators
    (`gala.sold_out`), once. After a sale already `committed`, in the session's own transaction, and a
    failure to mark (a lock wait that timed out) does not fail the sale: it is logged."""
    try:
        marked = await session.execute(
            update(Gala).where(col(Gala.id) == gala.id, col(Gala.sold_out_at).is_(None)).values(sold_out_at=now)
        )
        if marked.rowcount:  # type: ignore[attr-defined]
            await outbox.emit(
                session, "gala.sold_out", gala_id=gala.id, data={"gala_id": gala.id, "title": gala.title}, now=now
            )
    except DBAPIError:
        if not committed:
            raise
        await session.rollback()
        log.warning("gala %s sold out, but marking it so failed", gala.id, exc_info=True)


async def mark_paid(session: AsyncSession, order: Order, items: Sequence[OrderItem], *, now: datetime) -> None:
    """Sell the order's holds and issue its tickets, in the caller's transaction."""
    await holds.sell_held(session, order_id=order.id)
    order.status = OrderStatus.paid
    order.paid_at = now
    order.updated_at = now
    order.expires_at = None
    session.add(order)
    await _issue(session, order, items, now=now)


async def _issue(session: AsyncSession, order: Order, items: Sequence[OrderItem], *, now: datetime) -> None:
    """Issue a paid order's tickets, queue its emails and tell integrators, in the caller's transaction."""
    await insert_all(session, await _issue_rows(session, order, items, now=now))
    await session.flush()


async def _issue_rows(
    session: AsyncSession, order: Order, items: Sequence[OrderItem], *, now: datetime, gala_title: str | None = None
) -> list[tuple[Insert, Sequence[dict[str, Any]]]]:
    """The rows that issue a paid order's tickets, queue its emails and tell integrators, for one
    `insert_all`. (`gala_title` when the caller has the gala at hand: one query fewer.)"""
    tickets = ticket_service.new_tickets(order, items, now=now)
    # The buyer's and guests' emails: queued here, so they exist if and only if the payment commits.
    title = gala_title or await mail_outbox.title_of_gala(session, order.gala_id)
    # (Ticket objects only for the tickets with a guest's address: the others get no mail of their own.)
    guests = [Ticket(**row) for row in tickets if row["attendee_email"]]
    mail = mail_outbox.paid_order_mail(order, guests, now=now, gala_title=title)
    event = outbox.event_row("order.paid", gala_id=order.gala_id, data=order_event_data(order, len(items)), now=now)
    dialect = (await session.connection()).dialect.name
    return [
        (ticket_service.INSERT_TICKETS, tickets),
        (mail_outbox.INSERT_ONCE[dialect], mail),
        (outbox.INSERT, [event]),
    ]


def order_event_data(order: Order, tickets: int | None = None) -> dict[str, object]:
    """What integrators get about an order in a webhook: figures and ids, no personal data."""
    data: dict[str, object] = {
        "order_id": order.id,
        "gala_id": order.gala_id,
        "status": order.status,
        "total_amount": order.total_amount,
        "refunded_amount": order.refunded_amount,
        "currency": order.currency,
        "payment_provider": order.payment_provider,
    }
    if tickets is not None:
        data["tickets"] = tickets
    return data


async def get_items(session: AsyncSession, order_id: str) -> list[OrderItem]:
    return list(
        (
            await session.execute(
                select(OrderItem).where(col(OrderItem.order_id) == order_id).order_by(col(OrderItem.position))
            )
        ).scalars()
    )


async def get_items_for(session: AsyncSession, order_ids: Sequence[str]) -> dict[str, list[OrderItem]]:
    out: dict[str, list[OrderItem]] = {oid: [] for oid in order_ids}
    if order_ids:
        rows = await session.execute(
            select(OrderItem)
            .where(col(OrderItem.order_id).in_(order_ids))
            .order_by(col(OrderItem.order_id), col(OrderItem.position))
        )
        for item in rows.scalars():
            out[item.order_id].append(item)
    return out


async def get_order(session: AsyncSession, order_id: str, *, lock: bool = False) -> Order:
    stmt = select(Order).where(col(Order.id) == order_id)
    if lock:
        stmt = stmt.with_for_update()
    order: Order | None = (await session.execute(stmt)).scalar_one_or_none()
    if order is None:
        raise OrderNotFound(f"No order {order_id}.")
    return order


async def cancel_order(session: AsyncSession, order_id: str, *, now: datetime) -> Order:
    """Cancel a pending order and free its holds at once. Cancelling twice is harmless."""
    order = await get_order(session, order_id, lock=True)
    if order.status == OrderStatus.cancelled:
        return order
    status = effective_status(order, now)
    if status == OrderStatus.expired:
        raise OrderExpired("The order has expired; its seats were already released.")
    if status != OrderStatus.pending:
        raise OrderNotPending(
            f"A {status} order cannot be cancelled (paid orders are refunded instead).", status=status
        )
    await holds.release_holds(session, order_id=order.id)
    order.status = OrderStatus.cancelled
    order.cancelled_at = now
    order.updated_at = now
    session.add(order)
    await session.flush()
    return order


async def list_orders(
    session: AsyncSession,
    *,
    principal: Principal,
    gala_id: str | None,
    status: OrderStatus | None,
    email: str | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[Order], str | None]:
    stmt = select(Order)
    if gala_id is not None:
        principal.require_gala(gala_id)
        stmt = stmt.where(col(Order.gala_id) == gala_id)
    elif principal.gala_ids is not None:
        stmt = stmt.where(col(Order.gala_id).in_(sorted(principal.gala_ids)))
    if status is not None:
        stmt = stmt.where(col(Order.status) == status)
    if email is not None:
        stmt = stmt.where(col(Order.buyer_email) == email.strip().lower())
    return await paginate(session, stmt, created_col=Order.created_at, id_col=Order.id, limit=limit, cursor=cursor)


async def all_orders(
    session: AsyncSession,
    *,
    principal: Principal,
    gala_id: str | None,
    status: OrderStatus | None,
    email: str | None,
    batch: int = 500,
) -> AsyncIterator[tuple[Order, int]]:
    """Every order `list_orders` would page through, with its number of tickets (for CSV)."""
    async for orders in each_page(
        lambda cursor: list_orders(
            session, principal=principal, gala_id=gala_id, status=status, email=email, limit=batch, cursor=cursor
        )
    ):
        rows = await session.execute(
            select(col(OrderItem.order_id), func.count())
            .where(col(OrderItem.order_id).in_([o.id for o in orders]))
            .group_by(col(OrderItem.order_id))
        )
        counts = dict(rows.all())  # (not `dict(result)`: a Result has `keys()`, the column names)
        for order in orders:
            yield order, counts.get(order.id, 0)


async def expire_due_orders(
    db: Database, *, now: datetime | None = None, batch: int = 500, include_card_orders: bool = True
) -> int:
    """Write down expiry of pending orders past `expires_at` and tidy expired holds. Idempotent.

    With Stripe configured, card orders are left to the payments reconciliation, which asks Stripe
    first (a payment may have succeeded, or be mid-3-D Secure) before expiring them."""
    from tickets.clock import utc_now

    now = now or utc_now()
    async with db.sessions() as session:
        due_stmt = select(col(Order.id)).where(col(Order.status) == OrderStatus.pending, col(Order.expires_at) <= now)
        if not include_card_orders:
            due_stmt = due_stmt.where(col(Order.payment_provider) != PaymentProvider.stripe)
        due = due_stmt.limit(batch).scalar_subquery()
        result = await session.execute(
            update(Order)
            .where(col(Order.id).in_(due), col(Order.status) == OrderStatus.pending)
            .values(status=OrderStatus.expired, expired_at=now, updated_at=now)
            .returning(col(Order.id))
            .execution_options(synchronize_session=False)
        )
        expired = [r for (r,) in result]
        if expired:
            rows = await session.execute(select(Order).where(col(Order.id).in_(expired)))
            for order in rows.scalars():
                await outbox.emit(
                    session, "order.expired", gala_id=order.gala_id, data=order_event_data(order), now=now
                )
        await holds.release_expired(session, now=now)
        await session.commit()
    return len(expired)


# --- promo codes ---------------------------------------------------------------------------------


async def create_promo_code(session: AsyncSession, gala_id: str, body: PromoCodeCreate, *, now: datetime) -> PromoCode:
    """A new discount code for one gala (codes are case-insensitive)."""
    gala = await session.get(Gala, gala_id)
    if gala is None:
        raise GalaNotFound(f"No gala {gala_id}.")
    if body.ticket_type_ids:
        known = set(
            (
                await session.execute(
                    select(col(TicketType.id)).where(
                        col(TicketType.gala_id) == gala_id, col(TicketType.id).in_(body.ticket_type_ids)
                    )
                )
            ).scalars()
        )
        unknown = sorted(set(body.ticket_type_ids) - known)
        if unknown:
            raise InvalidItem(
                f"No such ticket types in this gala: {', '.join(unknown)}.",
                errors=[{"loc": ["body", "ticket_type_ids"], "msg": "unknown ticket type"}],
            )
    if await find_promo(session, gala_id, body.code) is not None:
        raise DuplicatePromoCode(f"Gala {gala_id} already has the code {body.code.upper()!r}.")
    promo = PromoCode(
        id=new_id("prm"), gala_id=gala_id, created_at=now, **{**body.model_dump(), "code": body.code.upper()}
    )
    session.add(promo)
    await session.flush()
    return promo


async def get_promo_code(session: AsyncSession, gala_id: str, promo_id: str) -> PromoCode:
    promo = await session.get(PromoCode, promo_id)
    if promo is None or promo.gala_id != gala_id:
        raise PromoCodeNotFound(f"No promo code {promo_id} in gala {gala_id}.")
    return promo


async def update_promo_code(session: AsyncSession, gala_id: str, promo_id: str, body: PromoCodeUpdate) -> PromoCode:
    promo = await get_promo_code(session, gala_id, promo_id)
    changes = body.model_dump(exclude_unset=True)
    valid_from = changes.get("valid_from", promo.valid_from)
    valid_until = changes.get("valid_until", promo.valid_until)
    if valid_from is not None and valid_until is not None and valid_until <= valid_from:
        raise InvalidItem(
            "valid_until must be after valid_from.",
            errors=[{"loc": ["body", "valid_until"], "msg": "must be after valid_from"}],
        )
    for key, value in changes.items():
        setattr(promo, key, value)
    session.add(promo)
    await session.flush()
    return promo


async def list_promo_codes(session: AsyncSession, gala_id: str) -> list[PromoCode]:
    return list(
        (
            await session.execute(
                select(PromoCode).where(col(PromoCode.gala_id) == gala_id).order_by(col(PromoCode.created_at))
            )
        ).scalars()
    )
