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
