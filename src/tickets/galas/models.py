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
