"""Cancelling a gala: every ticket void at once, then every paid order refunded by a resumable job.

The job can stop anywhere (a crash, a deploy, Stripe down) and be run again, by any worker, as often
as needed: each order's refund is claimed under a unique key (`gala-cancel:<order id>`), so a rerun
finishes what an earlier run left and refunds nothing twice. Its progress is on the gala.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import ColumnElement, func, select, update
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from tickets.clock import utc_now
from tickets.config import Settings
from tickets.db import Database
from tickets.galas.models import CancellationState, Gala, GalaCancellation, GalaStatus
from tickets.orders.models import PAID_STATUSES, Order, OrderStatus
from tickets.payments import service as payments_service
from tickets.payments.errors import PaymentProviderError
from tickets.payments.models import Refund, RefundKind, RefundStatus
from tickets.seating.models import Seat, SeatStatus

log = logging.getLogger("tickets.payments.cancellation")


def _refundable(gala_id: str) -> ColumnElement[bool]:
    return (
        (col(Order.gala_id) == gala_id)
        & col(Order.status).in_(PAID_STATUSES)
        & (col(Order.total_amount) > col(Order.refunded_amount))
    )


async def start(session: AsyncSession, gala: Gala, *, reason: str | None, now: datetime) -> GalaCancellation:
    """In the request's transaction: the gala is cancelled, its tickets void, its holds released."""
    existing = await session.get(GalaCancellation, gala.id)
    if existing is not None:
        return existing
    gala.status = GalaStatus.cancelled
    gala.cancelled_at = now
    gala.updated_at = now
    session.add(gala)
    await payments_service.void_tickets(session, gala_id=gala.id, now=now)
    await session.execute(
        update(Order)
        .where(col(Order.gala_id) == gala.id, col(Order.status) == OrderStatus.pending)
        .values(status=OrderStatus.cancelled, cancelled_at=now, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    await session.execute(
        update(Seat)
        .where(col(Seat.gala_id) == gala.id, col(Seat.status) == SeatStatus.held)
        .values(status=SeatStatus.available, order_id=None, ticket_type_id=None, hold_expires_at=None)
        .execution_options(synchronize_session=False)
    )
    total = (await session.execute(select(func.count()).where(_refundable(gala.id)))).scalar_one()
    job = GalaCancellation(gala_id=gala.id, reason=reason, orders_total=total, started_at=now, updated_at=now)
    if total == 0:
        job.state = CancellationState.completed
        job.finished_at = now
    session.add(job)
    await session.flush()
    return job


async def run(db: Database, settings: Settings, gala_id: str) -> GalaCancellation | None:
    """Refund every paid order of a cancelled gala; safe to run again at any time."""
    async with db.read_sessions() as s:
        order_ids = list(
            (
                await s.execute(select(col(Order.id)).where(_refundable(gala_id)).order_by(col(Order.created_at)))
            ).scalars()
        )
    last_error = None
    for order_id in order_ids:
        try:
            await payments_service.refund_order(
                db,
                settings,
                order_id,
                amount=None,
                ticket_ids=None,
                reason="The gala was cancelled",
                kind=RefundKind.gala_cancelled,
                key=f"gala-cancel:{order_id}",
            )
        except PaymentProviderError as exc:
            last_error = f"{order_id}: {exc.detail}"
            log.warning("gala %s cancellation: refund of %s failed; will retry", gala_id, order_id)
        except Exception as exc:  # an order that cannot be refunded must not stop the others
            last_error = f"{order_id}: {type(exc).__name__}"
            log.exception("gala %s cancellation: refund of %s failed", gala_id, order_id)
    return await _record_progress(db, gala_id, last_error=last_error)


async def _record_progress(db: Database, gala_id: str, *, last_error: str | None) -> GalaCancellation | None:
    now = utc_now()
    async with db.sessions() as session:
        job = await session.get(GalaCancellation, gala_id, with_for_update=True)
        if job is None:
            return None
        refunds = (
            await session.execute(
                select(col(Refund.status), func.count(), func.coalesce(func.sum(col(Refund.amount)), 0))
                .join(Order, col(Order.id) == col(Refund.order_id))
                .where(col(Order.gala_id) == gala_id, col(Refund.kind) == RefundKind.gala_cancelled)
                .group_by(col(Refund.status))
            )
        ).all()
        by_status = {status: (n, amount) for status, n, amount in refunds}
        job.orders_refunded = by_status.get(RefundStatus.succeeded, (0, 0))[0]
        job.refunded_amount = int(by_status.get(RefundStatus.succeeded, (0, 0))[1])
        job.failures = by_status.get(RefundStatus.failed, (0, 0))[0]
        job.last_error = last_error
        left = (await session.execute(select(func.count()).where(_refundable(gala_id)))).scalar_one()
        if left == 0:
            job.state = CancellationState.completed
            job.finished_at = job.finished_at or now
        job.updated_at = now
        session.add(job)
        await session.commit()
        return job


async def resume_all(db: Database, settings: Settings) -> int:
    """The periodic job: carry on with every cancellation that has not finished."""
    async with db.read_sessions() as s:
        running = list(
            (
                await s.execute(
                    select(col(GalaCancellation.gala_id)).where(
                        col(GalaCancellation.state) == CancellationState.running
                    )
                )
            ).scalars()
        )
    for gala_id in running:
        await run(db, settings, gala_id)
    return len(running)
