"""Incoming Stripe webhooks: each event id is handled once; each handler is idempotent anyway."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlmodel import col

from tickets.clock import utc_now
from tickets.config import Settings
from tickets.db import Database
from tickets.payments import service as payments_service
from tickets.payments.models import StripeEvent
from tickets.payments.stripe_client import intent_from_event

log = logging.getLogger("tickets.payments.webhooks")

INTENT_EVENTS = {
    "payment_intent.succeeded",
    "payment_intent.processing",
    "payment_intent.requires_action",
}


async def handle_event(db: Database, settings: Settings, event: dict[str, Any]) -> str:
    """Record the event once, apply it, and note what it did."""
    event_id = str(event["id"])
    event_type = str(event["type"])
    obj: dict[str, Any] = (event.get("data") or {}).get("object") or {}
    intent_id = obj.get("id") if event_type.startswith("payment_intent.") else obj.get("payment_intent")
    created = event.get("created")
    async with db.sessions() as session:
        existing = await session.get(StripeEvent, event_id)
        if existing is not None and existing.outcome is not None:
            return "duplicate"
        if existing is None:
            session.add(
                StripeEvent(
                    id=event_id,
                    type=event_type[:100],
                    payment_intent_id=str(intent_id) if intent_id else None,
                    order_id=(obj.get("metadata") or {}).get("order_id"),
                    stripe_created_at=datetime.fromtimestamp(created, UTC) if isinstance(created, int) else None,
                )
            )
            try:
                await session.commit()
            except IntegrityError:
                return "duplicate"  # the same event is being handled by another delivery right now
    outcome = await _apply(db, settings, event_type, obj)
    async with db.sessions() as session:
        await session.execute(update(StripeEvent).where(col(StripeEvent.id) == event_id).values(outcome=outcome))
        await session.commit()
    log.info("stripe event %s %s: %s", event_type, event_id, outcome, extra={"event": "payments.webhook"})
    return outcome


async def _apply(db: Database, settings: Settings, event_type: str, obj: dict[str, Any]) -> str:
    now = utc_now()
    if event_type in INTENT_EVENTS:
        return await payments_service.settle_intent(db, settings, intent_from_event(obj), now=now)
    if event_type == "payment_intent.payment_failed":
        error = obj.get("last_payment_error") or {}
        message = str(error.get("message") or error.get("code") or "payment failed")
        return await payments_service.record_payment_failure(db, str(obj.get("id")), message, now=now)
    if event_type == "charge.refunded":
        return await payments_service.record_external_refund(db, obj, now=now)
    if event_type == "charge.dispute.created":
        intent_id = obj.get("payment_intent")
        return await payments_service.record_dispute(db, str(intent_id) if intent_id else None, now=now)
    return "ignored"
