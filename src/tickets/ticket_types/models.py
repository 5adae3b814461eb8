"""Ticket types: the price tiers of a gala, each sold from a set of sections."""

from datetime import datetime

from sqlalchemy import JSON
from sqlmodel import Field, SQLModel

from tickets.models_base import created_at_field, utc_field


class TicketType(SQLModel, table=True):
    """A tier. `quota` caps its tickets across its sections (held and sold count against it)."""

    __tablename__ = "ticket_type"

    id: str = Field(primary_key=True, max_length=32)
    gala_id: str = Field(foreign_key="gala.id", index=True, max_length=32)
    name: str = Field(max_length=200)
    description: str | None = Field(default=None, max_length=2000)
    price_amount: int
    section_ids: list[str] = Field(sa_type=JSON)
    quota: int | None = None
    min_per_order: int = 1
    max_per_order: int | None = None
    sales_start: datetime | None = utc_field(nullable=True)
    sales_end: datetime | None = utc_field(nullable=True)
    position: int = 0
    created_at: datetime = created_at_field()
