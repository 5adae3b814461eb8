"""Tickets: one per seat or place of a paid order."""

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Index, text
from sqlmodel import Field, SQLModel

from tickets.models_base import created_at_field, utc_field


class TicketStatus(StrEnum):
    """valid → void (order refunded or cancelled, or superseded by a transfer's new version)."""

    valid = "valid"
    void = "void"


class Ticket(SQLModel, table=True):
    __tablename__ = "ticket"
    __table_args__ = (
        # The database's own guarantee that no seat or place is ever sold twice.
        Index(
            "uq_ticket_valid_seat",
            "seat_id",
            unique=True,
            postgresql_where=text("status = 'valid'"),
            sqlite_where=text("status = 'valid'"),
        ),
        Index("ix_ticket_gala_updated", "gala_id", "updated_at"),
    )

    id: str = Field(primary_key=True, max_length=32)
    order_id: str = Field(foreign_key="order.id", index=True, max_length=32)
    order_item_id: str = Field(max_length=32, unique=True)
    gala_id: str = Field(foreign_key="gala.id", max_length=32)
    ticket_type_id: str = Field(max_length=32)
    section_id: str = Field(max_length=32)
    seat_id: str = Field(max_length=32)
    seat_label: str | None = Field(default=None, max_length=64)
    table: str | None = Field(default=None, max_length=64)
    attendee_name: str | None = Field(default=None, max_length=200)
    attendee_email: str | None = Field(default=None, max_length=320)
    dietary: str | None = Field(default=None, max_length=500)
    status: str = Field(default=TicketStatus.valid, max_length=16)
    version: int = 1
    price_amount: int = 0
    issued_at: datetime = created_at_field()
    updated_at: datetime = created_at_field()
    voided_at: datetime | None = utc_field(nullable=True)
    checked_in_at: datetime | None = utc_field(nullable=True)
    checked_in_gate: str | None = Field(default=None, max_length=64)
