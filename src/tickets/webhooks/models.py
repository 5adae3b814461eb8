"""The outbox: domain events written in the same transaction as the change they describe."""

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Index
from sqlmodel import Field, SQLModel

from tickets.models_base import created_at_field, utc_field


class OutboxEvent(SQLModel, table=True):
    """An event for integrators (`order.paid`, `ticket.checked_in`, ...). Written with the change, so it
    exists if and only if the change committed; delivered afterwards by the webhook worker."""

    __tablename__ = "outbox_event"
    __table_args__ = (Index("ix_outbox_event_dispatched_created", "dispatched_at", "created_at"),)

    id: str = Field(primary_key=True, max_length=32)
    type: str = Field(max_length=64)
    gala_id: str | None = Field(default=None, max_length=32, index=True)
    data: dict[str, Any] = Field(sa_type=JSON)
    created_at: datetime = created_at_field()
    dispatched_at: datetime | None = utc_field(nullable=True)


class WebhookEndpoint(SQLModel, table=True):
    """An integrator's URL and the events it wants. Its signing secret is derived from SECRET_KEY
    and the endpoint id, so it is never stored."""

    __tablename__ = "webhook_endpoint"

    id: str = Field(primary_key=True, max_length=32)
    url: str = Field(max_length=2000)
    events: list[str] = Field(sa_type=JSON)
    gala_id: str | None = Field(default=None, max_length=32)
    description: str | None = Field(default=None, max_length=500)
    created_by_key_id: str | None = Field(default=None, max_length=32)
    created_at: datetime = created_at_field()
    deleted_at: datetime | None = utc_field(nullable=True)


class DeliveryStatus:
    pending = "pending"
    succeeded = "succeeded"
    failed = "failed"


class WebhookDelivery(SQLModel, table=True):
    """One event for one endpoint: retried with backoff until it succeeds or gives up."""

    __tablename__ = "webhook_delivery"
    __table_args__ = (
        Index("uq_webhook_delivery_endpoint_event", "endpoint_id", "event_id", unique=True),
        Index("ix_webhook_delivery_status_next", "status", "next_attempt_at"),
    )

    id: str = Field(primary_key=True, max_length=32)
    endpoint_id: str = Field(foreign_key="webhook_endpoint.id", max_length=32)
    event_id: str = Field(foreign_key="outbox_event.id", max_length=32)
    event_type: str = Field(max_length=64)
    status: str = Field(default=DeliveryStatus.pending, max_length=16)
    attempts: int = 0
    next_attempt_at: datetime | None = utc_field(nullable=True)
    last_status_code: int | None = None
    last_error: str | None = Field(default=None, max_length=500)
    created_at: datetime = created_at_field()
    delivered_at: datetime | None = utc_field(nullable=True)


class WebhookAttempt(SQLModel, table=True):
    """The delivery log: every HTTP attempt with its outcome."""

    __tablename__ = "webhook_attempt"

    id: str = Field(primary_key=True, max_length=32)
    delivery_id: str = Field(foreign_key="webhook_delivery.id", index=True, max_length=32)
    attempt: int
    status_code: int | None = None
    error: str | None = Field(default=None, max_length=500)
    duration_ms: int = 0
    attempted_at: datetime = created_at_field()
