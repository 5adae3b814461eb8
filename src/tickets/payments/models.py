"""Stripe events we received, and refunds we made or recorded."""

from datetime import datetime
from enum import StrEnum

from sqlalchemy import JSON
from sqlmodel import Field, SQLModel

from tickets.models_base import created_at_field, utc_field


class StripeEvent(SQLModel, table=True):
    """One row per Stripe event id: a redelivered event finds its row and does nothing twice."""

    __tablename__ = "stripe_event"

    id: str = Field(primary_key=True, max_length=255)
    type: str = Field(max_length=100)
    payment_intent_id: str | None = Field(default=None, max_length=255, index=True)
    order_id: str | None = Field(default=None, max_length=32)
    stripe_created_at: datetime | None = utc_field(nullable=True)
    received_at: datetime = created_at_field()
    outcome: str | None = Field(default=None, max_length=64)


class RefundStatus(StrEnum):
    """pending (claimed, Stripe not yet confirmed) → succeeded | failed."""

    pending = "pending"
    succeeded = "succeeded"
    failed = "failed"


class RefundKind(StrEnum):
    manual = "manual"  # an admin's refund through the API
    late_payment = "late_payment"  # a payment that succeeded after its seats were gone
    gala_cancelled = "gala_cancelled"  # the gala was cancelled
    external = "external"  # made in Stripe's dashboard, learnt from a webhook


class Refund(SQLModel, table=True):
    """Money given back on an order. `idempotency_key` is unique: a job that reruns, or a retried
    request, finds the refund it already claimed instead of refunding twice."""

    __tablename__ = "refund"

    id: str = Field(primary_key=True, max_length=32)
    order_id: str = Field(foreign_key="order.id", index=True, max_length=32)
    amount: int
    currency: str = Field(max_length=3)
    kind: str = Field(max_length=24)
    status: str = Field(default=RefundStatus.pending, max_length=16)
    reason: str | None = Field(default=None, max_length=500)
    ticket_ids: list[str] | None = Field(default=None, sa_type=JSON)
    idempotency_key: str = Field(max_length=255, unique=True)
    stripe_refund_id: str | None = Field(default=None, max_length=255)
    created_by_key_id: str | None = Field(default=None, max_length=32)
    failure: str | None = Field(default=None, max_length=500)
    created_at: datetime = created_at_field()
    completed_at: datetime | None = utc_field(nullable=True)
