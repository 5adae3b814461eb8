from __future__ import annotations

import unicodedata
from datetime import datetime
from typing import Annotated

from fastapi import Path
from pydantic import AfterValidator, BaseModel, ConfigDict, EmailStr, Field, StringConstraints

from tickets.tickets.models import TicketStatus

TicketID = Annotated[str, Path(pattern="^tkt_[A-Za-z0-9]{1,40}$", description="Ticket id (`tkt_…`)")]


def _no_control_characters(allowed: str) -> AfterValidator:
    """Names are printed on tickets and in emails; a NUL byte cannot even be stored by PostgreSQL."""

    def check(value: str) -> str:
        if any(unicodedata.category(c) == "Cc" and c not in allowed for c in value):
            raise ValueError("must not contain control characters")
        return value

    return AfterValidator(check)


AttendeeName = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200), _no_control_characters("")
]
Dietary = Annotated[str, StringConstraints(max_length=500), _no_control_characters("\n\r\t")]


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

    attendee_name: AttendeeName | None = None
    attendee_email: EmailStr | None = None
    dietary: Dietary | None = None


class TicketTransfer(BaseModel):
    """The new holder. The ticket gets a new version and code; the old code stops working."""

    model_config = ConfigDict(extra="forbid")

    attendee_name: AttendeeName
    attendee_email: EmailStr
    dietary: Dietary | None = None


class OrderLookup(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: EmailStr = Field(description="The email address the orders were placed with.")


class DeliveryAccepted(BaseModel):
    """The message is queued; it is sent within moments (and retried if the mail server is down)."""

    detail: str
