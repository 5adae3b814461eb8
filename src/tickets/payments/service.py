"""Payments: starting a Stripe PaymentIntent for a pending order."""

from __future__ import annotations

from sqlalchemy import update
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from tickets.config import Settings
from tickets.db import Database
from tickets.orders.models import Order, OrderStatus
from tickets.payments.stripe_client import StripeGateway
from tickets.seating import holds

_gateways: dict[int, StripeGateway] = {}


def gateway(settings: Settings) -> StripeGateway:
    """One Stripe client (and its connection pool) per settings object."""
    gw = _gateways.get(id(settings))
    if gw is None:
        gw = _gateways[id(settings)] = StripeGateway(settings)
    return gw


async def start_payment(session: AsyncSession, db: Database, order: Order, *, settings: Settings) -> None:
    """Create the PaymentIntent of an order whose holds are committed.

    If Stripe fails, the holds are released and the order cancelled in a transaction of their own
    (committed before the problem is raised, so the request's rollback cannot undo it).
    """
    try:
        intent = await gateway(settings).create_intent(
            amount=order.total_amount,
            currency=order.currency,
            metadata={"order_id": order.id, "gala_id": order.gala_id},
            idempotency_key=f"order:{order.id}:intent",
            description=f"Order {order.id}",
        )
    except Exception:
        async with db.sessions() as cleanup:
            await holds.release_holds(cleanup, order_id=order.id)
            await cleanup.execute(
                update(Order)
                .where(col(Order.id) == order.id, col(Order.status) == OrderStatus.pending)
                .values(status=OrderStatus.cancelled, cancelled_at=order.created_at)
            )
            await cleanup.commit()
        raise
    order.payment_intent_id = intent.id
    order.client_secret = intent.client_secret
    session.add(order)
    await session.flush()
