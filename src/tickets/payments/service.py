"""Payments through Stripe: starting a PaymentIntent, settling it (webhook or reconciliation),
holds that follow the payment, late payments, refunds, and the refunds of a cancelled gala.

Stripe is the source of truth for money. Webhooks are the fast path; every decision they trigger is
also reached by asking Stripe (when an order is read, and by the periodic reconciliation), so a missed
webhook never loses a paid order. Every settlement locks the order row and re-checks its state, so
duplicate, late and out-of-order events are harmless.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from tickets.auth.service import Principal
from tickets.clock import utc_now
from tickets.config import Settings
from tickets.db import Database
from tickets.ids import new_id
from tickets.orders import service as orders_service
from tickets.orders.errors import OrderNotFound
from tickets.orders.models import PAID_STATUSES, Order, OrderItem, OrderStatus, PaymentProvider
from tickets.payments.errors import InvalidRefund, OrderNotRefundable, PaymentProviderError, RefundExceedsBalance
from tickets.payments.models import Refund, RefundKind, RefundStatus
from tickets.payments.stripe_client import Intent, StripeGateway
from tickets.seating import holds
from tickets.seating.models import Seat, SeatStatus
from tickets.seating.service import free_clause
from tickets.tickets.models import Ticket, TicketStatus
from tickets.webhooks import outbox

log = logging.getLogger("tickets.payments")

# While the buyer is mid-payment (3-D Secure, or a payment that is processing) the hold is extended,
# at most this far past the order's original expiry, so the timer does not beat the bank.
MAX_HOLD_EXTENSION = timedelta(minutes=15)
EXTENSION_STEP = timedelta(minutes=5)

_gateways: dict[int, StripeGateway] = {}


def gateway(settings: Settings) -> StripeGateway:
    """One Stripe client (and its connection pool) per settings object."""
    gw = _gateways.get(id(settings))
    if gw is None:
        gw = _gateways[id(settings)] = StripeGateway(settings)
    return gw


async def close_gateway(settings: Settings) -> None:
    """Close the Stripe client of a settings object, if one was made (at shutdown)."""
    gw = _gateways.pop(id(settings), None)
    if gw is not None:
        await gw.close()


async def start_payment(
    session: AsyncSession,
    db: Database,
    order: Order,
    *,
    settings: Settings,
    answered: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Create the PaymentIntent of an order whose holds are committed, and write it down in `session`.
    `answered`, if given, is awaited once Stripe has answered, before that write (the order route goes
    back through its gate then).

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
                .values(
                    status=OrderStatus.cancelled, cancelled_at=utc_now(), last_payment_error="payment_provider_error"
                )
            )
            await cleanup.commit()
        raise
    if answered is not None:
        await answered()
    order.payment_intent_id = intent.id
    order.client_secret = intent.client_secret
    session.add(order)
    await session.flush()


# --- settling a payment ---------------------------------------------------------------------------


async def _lock_order(session: AsyncSession, order_id: str) -> Order | None:
    order: Order | None = (
        await session.execute(select(Order).where(col(Order.id) == order_id).with_for_update())
    ).scalar_one_or_none()
    return order


async def _order_id_for_intent(db: Database, intent: Intent) -> str | None:
    if intent.metadata.get("order_id"):
        return intent.metadata["order_id"]
    async with db.read_sessions() as s:
        found: str | None = (
            await s.execute(select(col(Order.id)).where(col(Order.payment_intent_id) == intent.id))
        ).scalar_one_or_none()
        return found


async def _retake(session: AsyncSession, order: Order, items: Sequence[OrderItem], *, now: datetime) -> bool:
    """Take again, as sold, every seat or place of an order whose hold lapsed. All or nothing:
    returns False (and the caller rolls back) if any of them is gone."""
    await holds.sell_held(session, order_id=order.id)
    owned = {
        sid
        for (sid,) in await session.execute(
            select(col(Seat.id)).where(col(Seat.order_id) == order.id, col(Seat.status) == SeatStatus.sold)
        )
    }
    for item in items:
        if item.seat_id in owned:
            continue
        if item.seat_label is not None:  # a reserved seat: only that very seat will do
            got = await session.execute(
                update(Seat)
                .where(col(Seat.id) == item.seat_id, free_clause(now))
                .values(
                    status=SeatStatus.sold, order_id=order.id, ticket_type_id=item.ticket_type_id, hold_expires_at=None
                )
                .returning(col(Seat.id))
                .execution_options(synchronize_session=False)
            )
            if got.first() is None:
                return False
        else:  # a general-admission place: any free place of the same area will do
            places = await holds.hold_places(
                session,
                section_id=item.section_id,
                order_id=order.id,
                ticket_type_id=item.ticket_type_id,
                count=1,
                expires_at=now,
                now=now,
            )
            if not places:
                return False
            await session.execute(
                update(Seat).where(col(Seat.id) == places[0]).values(status=SeatStatus.sold, hold_expires_at=None)
            )
            item.seat_id = places[0]
            session.add(item)
        owned.add(item.seat_id)
    await session.flush()
    return True


async def settle_intent(db: Database, settings: Settings, intent: Intent, *, now: datetime | None = None) -> str:
    """Apply a PaymentIntent's state to its order. Returns what happened (for the event log)."""
    now = now or utc_now()
    order_id = await _order_id_for_intent(db, intent)
    if order_id is None:
        return "unknown_order"
    async with db.sessions() as session:
        order = await _lock_order(session, order_id)
        if order is None or order.payment_intent_id != intent.id:
            return "unknown_order"
        if intent.status in ("requires_action", "processing"):
            extended = await _extend_hold(session, order, now=now)
            await session.commit()
            return "hold_extended" if extended else "ignored"
        if intent.status != "succeeded":
            return "ignored"
        if order.status in (*PAID_STATUSES, OrderStatus.refunded):
            return "already_settled"
        if intent.amount != order.total_amount or intent.currency != order.currency:
            log.error(
                "payment %s amount %s %s does not match order %s", intent.id, intent.amount, intent.currency, order.id
            )
            return "amount_mismatch"
        items = await orders_service.get_items(session, order.id)
        late = orders_service.effective_status(order, now) != OrderStatus.pending
        if await _retake(session, order, items, now=now):
            if late:
                order.late_payment = "retaken"
            await orders_service.mark_paid(session, order, items, now=now)
            await session.commit()
            log.info("order %s paid", order.id, extra={"event": "order.paid", "order_id": order.id})
            return "paid_late" if late else "paid"
        await session.rollback()
    # The seats are gone: give the money back, in full, automatically.
    return await _refund_late_payment(db, settings, order_id, now=now)


async def _refund_late_payment(db: Database, settings: Settings, order_id: str, *, now: datetime) -> str:
    async with db.sessions() as session:
        order = await _lock_order(session, order_id)
        if order is None or order.status in (*PAID_STATUSES, OrderStatus.refunded):
            return "already_settled"
        await holds.release_holds(session, order_id=order.id)
        order.status = OrderStatus.refunded
        order.late_payment = "refunded"
        order.paid_at = now
        order.updated_at = now
        session.add(order)
        refund = Refund(
            id=new_id("rfd"),
            order_id=order.id,
            amount=order.total_amount,
            currency=order.currency,
            kind=RefundKind.late_payment,
            reason="Paid after the hold expired and the seats were taken",
            idempotency_key=f"late:{order.id}",
            created_at=now,
        )
        session.add(refund)
        await session.commit()
    await _complete_refund(db, settings, refund.id)
    log.warning(
        "late payment for order %s refunded", order_id, extra={"event": "order.late_refund", "order_id": order_id}
    )
    return "refunded_late"


async def _extend_hold(session: AsyncSession, order: Order, *, now: datetime) -> bool:
    """Push the hold of a pending order forward while its payment is in progress (bounded)."""
    if order.status != OrderStatus.pending or order.expires_at is None:
        return False
    # `hold_extended_until` is the cap, fixed at the first extension: the original expiry + 15 minutes.
    limit = order.hold_extended_until or order.expires_at + MAX_HOLD_EXTENSION
    target = min(max(order.expires_at, now + EXTENSION_STEP), limit)
    if target <= order.expires_at or order.expires_at <= now:
        return False  # nothing to gain, or already lapsed (a late success re-takes or refunds)
    result = await session.execute(
        update(Seat)
        .where(col(Seat.order_id) == order.id, col(Seat.status) == SeatStatus.held, col(Seat.hold_expires_at) > now)
        .values(hold_expires_at=target)
        .execution_options(synchronize_session=False)
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        return False
    order.expires_at = target
    order.hold_extended_until = limit
    order.updated_at = now
    session.add(order)
    await session.flush()
    return True


async def record_payment_failure(db: Database, intent_id: str, message: str, *, now: datetime) -> str:
    """Note a declined attempt on the order; the buyer may try again until the hold expires."""
    async with db.sessions() as session:
        result = await session.execute(
            update(Order)
            .where(col(Order.payment_intent_id) == intent_id, col(Order.status) == OrderStatus.pending)
            .values(last_payment_error=message[:500], updated_at=now)
        )
        await session.commit()
    return "recorded" if result.rowcount else "ignored"  # type: ignore[attr-defined]


# --- reconciliation -------------------------------------------------------------------------------


async def reconcile_order(db: Database, settings: Settings, order_id: str, *, now: datetime | None = None) -> str:
    """Ask Stripe about a pending order's payment and apply the answer."""
    now = now or utc_now()
    async with db.read_sessions() as s:
        row = (
            await s.execute(select(col(Order.payment_intent_id), col(Order.status)).where(col(Order.id) == order_id))
        ).first()
    if row is None or row.payment_intent_id is None or row.status != OrderStatus.pending:
        return "nothing_to_do"
    intent = await gateway(settings).retrieve_intent(row.payment_intent_id)
    outcome = await settle_intent(db, settings, intent, now=now)
    async with db.sessions() as session:
        await session.execute(update(Order).where(col(Order.id) == order_id).values(reconciled_at=now))
        await session.commit()
    if outcome == "ignored" and intent.status in ("requires_payment_method", "canceled", "requires_confirmation"):
        return await _expire_if_due(db, settings, order_id, intent, now=now)
    return outcome


async def _expire_if_due(db: Database, settings: Settings, order_id: str, intent: Intent, *, now: datetime) -> str:
    async with db.sessions() as session:
        order = await _lock_order(session, order_id)
        if order is None or orders_service.effective_status(order, now) != OrderStatus.expired:
            return "pending"
        if order.status != OrderStatus.pending:
            return "nothing_to_do"
        await holds.release_holds(session, order_id=order.id)
        order.status = OrderStatus.expired
        order.expired_at = now
        order.updated_at = now
        session.add(order)
        await outbox.emit(
            session, "order.expired", gala_id=order.gala_id, data=orders_service.order_event_data(order), now=now
        )
        await session.commit()
    if intent.status != "canceled":
        try:  # so that it cannot succeed late; if it already did, the next pass settles it
            await gateway(settings).cancel_intent(intent.id)
        except PaymentProviderError:
            log.warning("could not cancel payment intent of expired order %s", order_id)
    return "expired"


async def reconcile_pending(db: Database, settings: Settings, *, now: datetime | None = None, batch: int = 25) -> int:
    """The periodic job: settle pending card orders whose webhook has not come, extend holds that are
    mid-payment, and expire the rest once due. Safe with several workers (each step locks the order)."""
    if not settings.payments_enabled:
        return 0
    now = now or utc_now()
    quiet = now - timedelta(seconds=60)
    async with db.read_sessions() as s:
        due = list(
            (
                await s.execute(
                    select(col(Order.id))
                    .where(
                        col(Order.status) == OrderStatus.pending,
                        col(Order.payment_provider) == PaymentProvider.stripe,
                        col(Order.payment_intent_id).is_not(None),
                        (col(Order.expires_at) <= now + timedelta(seconds=90))
                        | (
                            (col(Order.created_at) <= quiet)
                            & ((col(Order.reconciled_at).is_(None)) | (col(Order.reconciled_at) <= quiet))
                        ),
                    )
                    .order_by(col(Order.expires_at))
                    .limit(batch)
                )
            ).scalars()
        )
    done = 0
    for order_id in due:
        try:
            await reconcile_order(db, settings, order_id, now=now)
            done += 1
        except PaymentProviderError:
            log.warning("reconciliation: Stripe unreachable for order %s", order_id)
            break
    return done


# --- refunds --------------------------------------------------------------------------------------


async def _pending_refunds(session: AsyncSession, order_id: str) -> int:
    total = (
        await session.execute(
            select(func.coalesce(func.sum(Refund.amount), 0)).where(
                col(Refund.order_id) == order_id, col(Refund.status) == RefundStatus.pending
            )
        )
    ).scalar_one()
    return int(total)


async def refund_order(
    db: Database,
    settings: Settings,
    order_id: str,
    *,
    amount: int | None,
    ticket_ids: Sequence[str] | None,
    reason: str | None,
    kind: RefundKind = RefundKind.manual,
    key: str | None = None,
    principal: Principal | None = None,
    now: datetime | None = None,
) -> Refund:
    """Refund all or part of a paid order: through Stripe for card orders, recorded for cash and
    invoice. Refunded tickets become void and their seats go back on sale. Over-refunds are refused
    here (Stripe's stand-in would not): pending refunds count against the balance."""
    now = now or utc_now()
    async with db.sessions() as session:
        order = await _lock_order(session, order_id)
        if order is None or (principal is not None and not principal.can_access_gala(order.gala_id)):
            raise OrderNotFound(f"No order {order_id}.")
        if key is not None:
            # A refund under this key was claimed already (another run of the same job, under the order's
            # lock just taken, or a retry): finish it. Its pending amount must not count against itself.
            claimed = (
                await session.execute(select(Refund).where(col(Refund.idempotency_key) == key).with_for_update())
            ).scalar_one_or_none()
            if claimed is not None and claimed.order_id == order.id:
                return await _resume_refund(session, db, settings, claimed)
        if order.status not in PAID_STATUSES:
            raise OrderNotRefundable(f"A {order.status} order cannot be refunded.", status=order.status)
        balance = order.total_amount - order.refunded_amount - await _pending_refunds(session, order.id)
        chosen: list[Ticket] = []
        if ticket_ids:
            found = {
                t.id: t
                for t in (await session.execute(select(Ticket).where(col(Ticket.id).in_(list(ticket_ids))))).scalars()
            }
            for tid in ticket_ids:
                t = found.get(tid)
                if t is None or t.order_id != order.id:
                    raise InvalidRefund(
                        f"Ticket {tid} is not part of order {order.id}.",
                        errors=[{"loc": ["body", "ticket_ids"], "msg": f"{tid} is not in this order"}],
                    )
                if t.status != TicketStatus.valid:
                    raise InvalidRefund(
                        f"Ticket {tid} is already void.",
                        errors=[{"loc": ["body", "ticket_ids"], "msg": f"{tid} is void"}],
                    )
                chosen.append(t)
        if amount is None:
            amount = sum(t.price_amount for t in chosen) if chosen else balance
            amount = min(amount, balance)
        if amount > balance:
            raise RefundExceedsBalance(
                f"Only {balance} {order.currency} minor units are left to refund on this order.",
                refundable_amount=balance,
            )
        if amount <= 0 and not chosen and order.total_amount == 0:
            # A free order has no money to give back: refunding it whole gives back its places.
            chosen = list(
                (
                    await session.execute(
                        select(Ticket).where(col(Ticket.order_id) == order.id, col(Ticket.status) == TicketStatus.valid)
                    )
                ).scalars()
            )
        if amount <= 0 and not chosen:
            raise InvalidRefund("Nothing to refund.", errors=[{"loc": ["body", "amount"], "msg": "nothing to refund"}])
        refund = Refund(
            id=new_id("rfd"),
            order_id=order.id,
            amount=amount,
            currency=order.currency,
            kind=kind,
            reason=reason,
            ticket_ids=[t.id for t in chosen] or None,
            idempotency_key=key or f"refund:{new_id('rk')}",
            created_by_key_id=principal.key_id if principal else None,
            created_at=now,
        )
        session.add(refund)
        try:
            await session.commit()
        except IntegrityError:
            # This refund was claimed meanwhile (a job rerun, or a retry): finish it, never repeat it.
            await session.rollback()
            existing: Refund = (
                await session.execute(
                    select(Refund).where(col(Refund.idempotency_key) == refund.idempotency_key).with_for_update()
                )
            ).scalar_one()
            return await _resume_refund(session, db, settings, existing)
    return await _complete_refund(db, settings, refund.id)


async def _resume_refund(session: AsyncSession, db: Database, settings: Settings, refund: Refund) -> Refund:
    """Finish a refund claimed before (locked in `session`): a failed one is tried again."""
    if refund.status == RefundStatus.failed:
        refund.status = RefundStatus.pending
        refund.failure = None
        session.add(refund)
    await session.commit()
    return await _complete_refund(db, settings, refund.id)


async def _complete_refund(db: Database, settings: Settings, refund_id: str) -> Refund:
    """Send a claimed refund to Stripe (card orders), then book it: amounts, statuses, void tickets."""
    async with db.read_sessions() as s:
        refund = await s.get(Refund, refund_id)
        order = await s.get(Order, refund.order_id) if refund else None
    assert refund is not None and order is not None
    if refund.status != RefundStatus.pending:
        return refund
    stripe_id = None
    if refund.amount > 0 and order.payment_provider == PaymentProvider.stripe and order.payment_intent_id:
        try:
            stripe_id = await gateway(settings).refund(
                intent_id=order.payment_intent_id, amount=refund.amount, idempotency_key=f"refund:{refund.id}"
            )
        except PaymentProviderError as exc:
            async with db.sessions() as session:
                await session.execute(
                    update(Refund)
                    .where(col(Refund.id) == refund.id, col(Refund.status) == RefundStatus.pending)
                    .values(status=RefundStatus.failed, failure=str(exc.detail)[:500], completed_at=utc_now())
                )
                await session.commit()
            raise
    now = utc_now()
    async with db.sessions() as session:
        locked = await _lock_order(session, order.id)
        booked = await session.get(Refund, refund.id, with_for_update=True)
        assert locked is not None and booked is not None
        if booked.status != RefundStatus.pending:
            return booked
        booked.status = RefundStatus.succeeded
        booked.stripe_refund_id = stripe_id
        booked.completed_at = now
        session.add(booked)
        if booked.kind != RefundKind.late_payment:
            locked.refunded_amount += booked.amount
            # All the money is back: every ticket goes. A free order has no money to give back, so naming
            # some of its tickets voids those only (0 refunded of 0 is not "everything").
            full = locked.refunded_amount >= locked.total_amount and (locked.total_amount > 0 or not booked.ticket_ids)
            if full:
                await void_tickets(session, order_id=locked.id, now=now)
            elif booked.ticket_ids:
                await void_tickets(session, order_id=locked.id, ticket_ids=booked.ticket_ids, now=now)
            remaining = (
                await session.execute(
                    select(func.count()).where(
                        col(Ticket.order_id) == locked.id, col(Ticket.status) == TicketStatus.valid
                    )
                )
            ).scalar_one()
            locked.status = OrderStatus.refunded if full or remaining == 0 else OrderStatus.partially_refunded
        else:
            locked.refunded_amount = booked.amount
        locked.updated_at = now
        session.add(locked)
        await outbox.emit(
            session,
            "order.refunded",
            gala_id=locked.gala_id,
            data={
                **orders_service.order_event_data(locked),
                "refund_id": booked.id,
                "refund_amount": booked.amount,
                "refund_kind": booked.kind,
            },
            now=now,
        )
        await session.commit()
        return booked


async def void_tickets(
    session: AsyncSession,
    *,
    order_id: str | None = None,
    gala_id: str | None = None,
    ticket_ids: Sequence[str] | None = None,
    now: datetime,
) -> int:
    """Void valid tickets (of an order, some of its tickets, or a whole gala) and put their seats
    back on sale."""
    stmt = select(col(Ticket.id), col(Ticket.seat_id)).where(col(Ticket.status) == TicketStatus.valid)
    if order_id is not None:
        stmt = stmt.where(col(Ticket.order_id) == order_id)
    if gala_id is not None:
        stmt = stmt.where(col(Ticket.gala_id) == gala_id)
    if ticket_ids is not None:
        stmt = stmt.where(col(Ticket.id).in_(list(ticket_ids)))
    rows = (await session.execute(stmt)).all()
    if not rows:
        return 0
    ids = [tid for tid, _ in rows]
    seats = [sid for _, sid in rows]
    for i in range(0, len(ids), 500):
        await session.execute(
            update(Ticket)
            .where(col(Ticket.id).in_(ids[i : i + 500]), col(Ticket.status) == TicketStatus.valid)
            .values(status=TicketStatus.void, voided_at=now, updated_at=now)
            .execution_options(synchronize_session=False)
        )
        await session.execute(
            update(Seat)
            .where(col(Seat.id).in_(seats[i : i + 500]), col(Seat.status) == SeatStatus.sold)
            .values(status=SeatStatus.available, order_id=None, ticket_type_id=None, hold_expires_at=None)
            .execution_options(synchronize_session=False)
        )
    return len(ids)


async def list_refunds(session: AsyncSession, order_id: str) -> list[Refund]:
    return list(
        (
            await session.execute(
                select(Refund).where(col(Refund.order_id) == order_id).order_by(col(Refund.created_at))
            )
        ).scalars()
    )


# --- events made outside this API ----------------------------------------------------------------


async def record_external_refund(db: Database, charge: Any, *, now: datetime) -> str:
    """A refund made in Stripe's dashboard: book the difference; a full refund voids every ticket."""
    intent_id = charge.get("payment_intent")
    refunded = int(charge.get("amount_refunded") or 0)
    if not intent_id:
        return "ignored"
    async with db.sessions() as session:
        order: Order | None = (
            await session.execute(select(Order).where(col(Order.payment_intent_id) == intent_id).with_for_update())
        ).scalar_one_or_none()
        if order is None:
            return "unknown_order"
        known = order.refunded_amount + await _pending_refunds(session, order.id)
        if order.late_payment == "refunded" or refunded <= known:
            return "already_recorded"
        diff = refunded - order.refunded_amount
        session.add(
            Refund(
                id=new_id("rfd"),
                order_id=order.id,
                amount=diff,
                currency=order.currency,
                kind=RefundKind.external,
                status=RefundStatus.succeeded,
                reason="Refunded outside this API",
                completed_at=now,
                idempotency_key=f"external:{order.id}:{refunded}",
                created_at=now,
            )
        )
        order.refunded_amount = refunded
        if refunded >= order.total_amount:
            await void_tickets(session, order_id=order.id, now=now)
            order.status = OrderStatus.refunded
        elif order.status == OrderStatus.paid:
            order.status = OrderStatus.partially_refunded
        order.updated_at = now
        session.add(order)
        await session.commit()
    return "refund_recorded"


async def record_dispute(db: Database, intent_id: str | None, *, now: datetime) -> str:
    """A chargeback: the money is contested, so the order's tickets stop admitting."""
    if not intent_id:
        return "ignored"
    async with db.sessions() as session:
        order: Order | None = (
            await session.execute(select(Order).where(col(Order.payment_intent_id) == intent_id).with_for_update())
        ).scalar_one_or_none()
        if order is None:
            return "unknown_order"
        if order.disputed_at is None:
            order.disputed_at = now
            order.updated_at = now
            session.add(order)
            await void_tickets(session, order_id=order.id, now=now)
        await session.commit()
    return "tickets_voided"
