"""Writing events to the outbox, inside the caller's transaction."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import insert
from sqlmodel.ext.asyncio.session import AsyncSession

from tickets.clock import utc_now
from tickets.ids import new_id
from tickets.webhooks.models import OutboxEvent

EVENT_TYPES = ("order.paid", "order.refunded", "order.expired", "ticket.checked_in", "gala.sold_out")


def event_row(event_type: str, *, gala_id: str | None, data: dict[str, Any], now: datetime) -> dict[str, Any]:
    """An event's outbox row, to insert with `INSERT` in the caller's transaction."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {event_type}")
    # (`model_construct`: the values are ours, and a table model's validating constructor costs 4x more)
    event = OutboxEvent.model_construct(id=new_id("evt"), type=event_type, gala_id=gala_id, data=data, created_at=now)
    return event.model_dump()


async def emit(
    session: AsyncSession, event_type: str, *, gala_id: str | None, data: dict[str, Any], now: datetime | None = None
) -> None:
    """Record an event; it is delivered only if the caller's transaction commits."""
    row = event_row(event_type, gala_id=gala_id, data=data, now=now or utc_now())
    # A Core INSERT on the transaction's connection, not `session.add`: no unit-of-work flush for a
    # row nothing reads back in this transaction (a check-in or a sale writes one on the hot path).
    await (await session.connection()).execute(INSERT, row)


INSERT = insert(OutboxEvent)
