"""Galas: the events that are sold."""

from datetime import datetime
from enum import StrEnum

from sqlmodel import Field, SQLModel

from tickets.models_base import created_at_field, utc_field


class GalaStatus(StrEnum):
    """draft → on_sale ⇄ closed; any but cancelled → cancelled (voids and refunds everything)."""

    draft = "draft"
    on_sale = "on_sale"
    closed = "closed"
    cancelled = "cancelled"


class Gala(SQLModel, table=True):
    __tablename__ = "gala"

    id: str = Field(primary_key=True, max_length=32)
    title: str = Field(max_length=200)
    description: str | None = Field(default=None, max_length=5000)
    venue_name: str = Field(max_length=200)
    venue_address: str | None = Field(default=None, max_length=500)
    starts_at: datetime = utc_field()
    ends_at: datetime | None = utc_field(nullable=True)
    timezone: str = Field(max_length=64)
    currency: str = Field(default="CAD", max_length=3)
    max_tickets_per_order: int | None = None
    name_change_cutoff: datetime | None = utc_field(nullable=True)
    status: str = Field(default=GalaStatus.draft, max_length=16, index=True)
    created_at: datetime = created_at_field()
    updated_at: datetime = created_at_field()
    published_at: datetime | None = utc_field(nullable=True)
    closed_at: datetime | None = utc_field(nullable=True)
    cancelled_at: datetime | None = utc_field(nullable=True)
    sold_out_at: datetime | None = utc_field(nullable=True)


class CancellationState(StrEnum):
    running = "running"
    completed = "completed"


class GalaCancellation(SQLModel, table=True):
    """The resumable job that refunds every paid order of a cancelled gala, and its progress."""

    __tablename__ = "gala_cancellation"

    gala_id: str = Field(primary_key=True, foreign_key="gala.id", max_length=32)
    state: str = Field(default=CancellationState.running, max_length=16)
    reason: str | None = Field(default=None, max_length=500)
    orders_total: int = 0
    orders_refunded: int = 0
    refunded_amount: int = 0
    failures: int = 0
    last_error: str | None = Field(default=None, max_length=500)
    started_at: datetime = created_at_field()
    updated_at: datetime = created_at_field()
    finished_at: datetime | None = utc_field(nullable=True)
