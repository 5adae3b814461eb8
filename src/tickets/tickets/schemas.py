from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import Path
from pydantic import BaseModel, ConfigDict, EmailStr, Field

from tickets.tickets.models import TicketStatus

TicketID = Annotated[str, Path(pattern="^tkt_[A-Za-z0-9]{1,40}$", description="Ticket id (`tkt_…`)")]


class TicketRead(BaseModel):
    id: str
    order_id: str
    gala_id: str
    ticket_type_id: str
    section_id: str
    seat_id: str | None
    seat_label: str | None
    table: str | None
    attendee_name: str | None
    attendee_email: str | None
    dietary: str | None
    status: TicketStatus
    version: int
    code: str = Field(description="The exact text of the QR code: a signed token (see docs/ticket-code.md).")
    checked_in_at: datetime | None


class TicketUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    attendee_name: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    attendee_email: EmailStr | None = None
    dietary: Annotated[str, Field(max_length=500)] | None = None
