"""Galas: create, read, update, and move through draft → on_sale ⇄ closed."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import exists, select
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from tickets.auth.service import Principal
from tickets.galas.errors import (
    GalaCancelled,
    GalaHasOrders,
    GalaNotFound,
    GalaNotOnSale,
    GalaNotReady,
    InvalidGalaTransition,
)
from tickets.galas.models import Gala, GalaStatus
from tickets.galas.schemas import GalaCreate, GalaUpdate
from tickets.ids import new_id
from tickets.orders.models import Order
from tickets.pagination import paginate
from tickets.problems import ValidationFailed
from tickets.ticket_types.models import TicketType


async def create_gala(session: AsyncSession, body: GalaCreate, *, now: datetime) -> Gala:
    """A new gala in draft."""
    gala = Gala(id=new_id("gal"), **body.model_dump(), created_at=now, updated_at=now)
    session.add(gala)
    await session.flush()
    return gala


def is_public(gala: Gala) -> bool:
    return gala.status != GalaStatus.draft


async def get_gala(session: AsyncSession, gala_id: str, *, principal: Principal | None) -> Gala:
    """A gala the caller may see: the public sees published galas, a key sees its galas."""
    gala = await session.get(Gala, gala_id)
    if gala is None:
        raise GalaNotFound(f"No gala {gala_id}.")
    if principal is None:
        if not is_public(gala):
            raise GalaNotFound(f"No gala {gala_id}.")
    elif not principal.can_access_gala(gala_id):
        raise GalaNotFound(f"No gala {gala_id}.")
    return gala


async def get_gala_for_update(session: AsyncSession, gala_id: str, *, principal: Principal) -> Gala:
    principal.require_gala(gala_id)
    gala: Gala | None = (
        await session.execute(select(Gala).where(col(Gala.id) == gala_id).with_for_update())
    ).scalar_one_or_none()
    if gala is None:
        raise GalaNotFound(f"No gala {gala_id}.")
    return gala


async def list_galas(
    session: AsyncSession,
    *,
    principal: Principal | None,
    status: GalaStatus | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[Gala], str | None]:
    stmt = select(Gala)
    if principal is None:
        stmt = stmt.where(col(Gala.status) != GalaStatus.draft)
    elif principal.gala_ids is not None:
        stmt = stmt.where(col(Gala.id).in_(sorted(principal.gala_ids)))
    if status is not None:
        stmt = stmt.where(col(Gala.status) == status)
    return await paginate(session, stmt, created_col=Gala.created_at, id_col=Gala.id, limit=limit, cursor=cursor)


async def has_orders(session: AsyncSession, gala_id: str) -> bool:
    return bool((await session.execute(select(exists().where(col(Order.gala_id) == gala_id)))).scalar())


async def update_gala(
    session: AsyncSession, gala_id: str, body: GalaUpdate, *, principal: Principal, now: datetime
) -> Gala:
    """Change a gala's details; the currency is fixed once it has orders."""
    gala = await get_gala_for_update(session, gala_id, principal=principal)
    if gala.status == GalaStatus.cancelled:
        raise GalaCancelled("A cancelled gala cannot be changed.")
    changes = body.model_dump(exclude_unset=True)
    for required in ("title", "venue_name", "starts_at", "timezone", "currency"):
        if required in changes and changes[required] is None:
            raise ValidationFailed(
                f"{required} cannot be null.", errors=[{"loc": ["body", required], "msg": "may not be null"}]
            )
    starts_at = changes.get("starts_at", gala.starts_at)
    ends_at = changes.get("ends_at", gala.ends_at)
    if ends_at is not None and ends_at <= starts_at:
        raise ValidationFailed(
            "ends_at must be after starts_at.",
            errors=[{"loc": ["body", "ends_at"], "msg": "must be after starts_at"}],
        )
    if "currency" in changes and changes["currency"] != gala.currency and await has_orders(session, gala_id):
        raise GalaHasOrders("The currency cannot change once the gala has orders.")
    for field, value in changes.items():
        setattr(gala, field, value)
    gala.updated_at = now
    session.add(gala)
    await session.flush()
    return gala


async def publish_gala(session: AsyncSession, gala_id: str, *, principal: Principal, now: datetime) -> Gala:
    """draft or closed → on_sale; needs at least one ticket type."""
    gala = await get_gala_for_update(session, gala_id, principal=principal)
    if gala.status == GalaStatus.on_sale:
        return gala
    if gala.status not in (GalaStatus.draft, GalaStatus.closed):
        raise InvalidGalaTransition(f"A {gala.status} gala cannot go on sale.", status=gala.status)
    has_types = (await session.execute(select(exists().where(col(TicketType.gala_id) == gala_id)))).scalar()
    if not has_types:
        raise GalaNotReady("Add at least one ticket type before publishing.")
    gala.status = GalaStatus.on_sale
    gala.published_at = gala.published_at or now
    gala.updated_at = now
    session.add(gala)
    await session.flush()
    return gala


async def close_gala(session: AsyncSession, gala_id: str, *, principal: Principal, now: datetime) -> Gala:
    """on_sale → closed: no more sales; the door still works."""
    gala = await get_gala_for_update(session, gala_id, principal=principal)
    if gala.status == GalaStatus.closed:
        return gala
    if gala.status != GalaStatus.on_sale:
        raise InvalidGalaTransition(f"A {gala.status} gala cannot be closed.", status=gala.status)
    gala.status = GalaStatus.closed
    gala.closed_at = now
    gala.updated_at = now
    session.add(gala)
    await session.flush()
    return gala


def require_on_sale(gala: Gala) -> None:
    if gala.status != GalaStatus.on_sale:
        raise GalaNotOnSale(f"Gala {gala.id} is {gala.status}, not on sale.", status=gala.status)
