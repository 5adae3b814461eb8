from __future__ import annotations

import hashlib

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from tickets import idempotency
from tickets.auth.deps import AdminKey
from tickets.auth.errors import GalaNotAllowed, RoleRequired
from tickets.config import Settings
from tickets.db import SessionDep
from tickets.orders.errors import IdempotencyKeyReused, OrderNotFound, PaymentsNotConfigured
from tickets.orders.router import IdempotencyKey
from tickets.orders.schemas import OrderID
from tickets.payments import service as payments_service
from tickets.payments import webhooks
from tickets.payments.errors import (
    InvalidRefund,
    InvalidSignature,
    OrderNotRefundable,
    PaymentProviderError,
    RefundExceedsBalance,
)
from tickets.payments.schemas import RefundCreate, RefundRead, WebhookAck
from tickets.payments.stripe_client import verify_webhook
from tickets.problems import Busy, InvalidApiKey, Unauthenticated, problem_responses

router = APIRouter(tags=["Payments"])


def _refund_key(key_id: str, order_id: str, idempotency_key: str) -> str:
    """The refund's own unique key for an API request's Idempotency-Key: per API key and order (the same
    Idempotency-Key on another order is another refund), and of a fixed length (the column holds 255)."""
    digest = hashlib.sha256(f"{key_id}\x00{order_id}\x00{idempotency_key}".encode()).hexdigest()
    return f"api:{digest}"


@router.post(
    "/payments/stripe/webhook",
    summary="Receive a Stripe webhook",
    responses=problem_responses(InvalidSignature, PaymentsNotConfigured, Busy),
)
async def stripe_webhook(request: Request) -> WebhookAck:
    """Stripe calls this with signed events. The `Stripe-Signature` header is verified with
    `STRIPE_WEBHOOK_SECRET` (unsigned, wrongly signed or stale events are refused with 400). Each event
    id is handled once; duplicates and out-of-order events are harmless. Handled:
    `payment_intent.succeeded` (the order is paid and its tickets issued), `payment_intent.processing`
    and `payment_intent.requires_action` (the hold is extended), `payment_intent.payment_failed`
    (recorded), `charge.refunded` and `charge.dispute.created` (the affected tickets are voided)."""
    settings: Settings = request.app.state.settings
    if not settings.payments_enabled or settings.stripe_webhook_secret is None:
        raise PaymentsNotConfigured("Stripe is not configured on this server.")
    signature = request.headers.get("stripe-signature")
    if not signature:
        raise InvalidSignature("The Stripe-Signature header is missing.")
    try:
        event = verify_webhook(await request.body(), signature, settings.stripe_webhook_secret.get_secret_value())
    except ValueError as exc:
        raise InvalidSignature("The Stripe-Signature does not match this payload, or is too old.") from exc
    outcome = await webhooks.handle_event(request.app.state.db, settings, event)
    return WebhookAck(outcome=outcome)


@router.post(
    "/orders/{order_id}/refunds",
    status_code=201,
    response_model=RefundRead,
    summary="Refund an order",
    responses=problem_responses(
        Unauthenticated,
        InvalidApiKey,
        RoleRequired,
        GalaNotAllowed,
        OrderNotFound,
        OrderNotRefundable,
        RefundExceedsBalance,
        InvalidRefund,
        IdempotencyKeyReused,
        PaymentProviderError,
        Busy,
    ),
)
async def refund_order(
    request: Request,
    order_id: OrderID,
    body: RefundCreate,
    session: SessionDep,
    principal: AdminKey,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Admin: refund a paid order in full (empty body), by amount, or by tickets (their seats go back on
    sale). Card payments are refunded through Stripe; cash and invoice refunds are recorded. Refunded
    tickets become `void`; the order becomes `partially_refunded` or `refunded`. More than what is left
    to refund is refused (`refund_exceeds_balance`)."""
    settings: Settings = request.app.state.settings

    async def handler() -> RefundRead:
        # The refund runs in transactions of its own (around the Stripe call): end the request's one,
        # which on SQLite would otherwise hold the write lock they need.
        await session.commit()
        refund = await payments_service.refund_order(
            request.app.state.db,
            settings,
            order_id,
            amount=body.amount,
            ticket_ids=body.ticket_ids,
            reason=body.reason,
            key=_refund_key(principal.key_id, order_id, idempotency_key) if idempotency_key else None,
            principal=principal,
        )
        return RefundRead.from_model(refund)

    return await idempotency.run(
        request,
        session,
        scope=f"refunds:{principal.key_id}:{order_id}",
        key=idempotency_key,
        body=body,
        status_code=201,
        handler=handler,
    )


@router.get(
    "/orders/{order_id}/refunds",
    summary="List an order's refunds",
    responses=problem_responses(Unauthenticated, InvalidApiKey, RoleRequired, GalaNotAllowed, OrderNotFound),
)
async def list_refunds(order_id: OrderID, session: SessionDep, principal: AdminKey) -> list[RefundRead]:
    """Every refund of the order, with its kind (`manual`, `late_payment`, `gala_cancelled`, `external`)."""
    from tickets.orders import service as orders_service

    order = await orders_service.get_order(session, order_id)
    if not principal.can_access_gala(order.gala_id):
        raise OrderNotFound(f"No order {order_id}.")
    return [RefundRead.from_model(r) for r in await payments_service.list_refunds(session, order_id)]
