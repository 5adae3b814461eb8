"""Sections and their inventory rows.

Every sellable unit is a `Seat` row: a labelled seat of a reserved section, or one unlabelled place
of a general-admission area (an area of capacity 400 has 400 place rows). One representation means
one mechanism for holds: a conditional UPDATE whose WHERE clause is the availability rule, so an
expired hold is free the instant it expires, without waiting for a sweeper.

Seat lifecycle: available → held (by a pending order, until `hold_expires_at`) → sold; a hold that
expires or is released goes back to available. `blocked` is a separate flag: a blocked seat is
withheld from the public but may still be held or sold by a box-office comp order.
"""

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Index, UniqueConstraint
from sqlmodel import Field, SQLModel

from tickets.models_base import created_at_field, utc_field


class SectionKind(StrEnum):
    reserved = "reserved"
    general = "general"


class SeatStatus(StrEnum):
    available = "available"
    held = "held"
    sold = "sold"


class Section(SQLModel, table=True):
    __tablename__ = "section"
    __table_args__ = (UniqueConstraint("gala_id", "name"),)

    id: str = Field(primary_key=True, max_length=32)
    gala_id: str = Field(foreign_key="gala.id", index=True, max_length=32)
    name: str = Field(max_length=200)
    kind: str = Field(max_length=16)
    capacity: int = 0
    position: int = 0
    created_at: datetime = created_at_field()


class Seat(SQLModel, table=True):
    __tablename__ = "seat"
    __table_args__ = (
        UniqueConstraint("gala_id", "label"),
        # Serves the general-admission pick: free places of an area, in id order (seating.holds).
        Index("ix_seat_section_status_id", "section_id", "status", "id"),
        Index("ix_seat_gala_table", "gala_id", "table"),
        Index("ix_seat_ticket_type_status", "ticket_type_id", "status"),
        Index("ix_seat_gala_status", "gala_id", "status"),
    )

    id: str = Field(primary_key=True, max_length=32)
    gala_id: str = Field(foreign_key="gala.id", max_length=32)
    section_id: str = Field(foreign_key="section.id", max_length=32)
    label: str | None = Field(default=None, max_length=64)
    row: str | None = Field(default=None, max_length=32)
    number: int | None = None
    table: str | None = Field(default=None, max_length=64)
    position: int = 0
    blocked: bool = False
    status: str = Field(default=SeatStatus.available, max_length=16)
    order_id: str | None = Field(default=None, max_length=32, index=True)
    ticket_type_id: str | None = Field(default=None, max_length=32)
    hold_expires_at: datetime | None = utc_field(nullable=True)
