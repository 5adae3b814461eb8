"""The mail outbox: one row per message, written in the transaction of the change that causes it."""

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Index
from sqlmodel import Field, SQLModel

from tickets.models_base import created_at_field, utc_field


class MailKind(StrEnum):
    order_tickets = "order_tickets"  # the buyer's tickets when the order is paid (PDF attached)
    order_resend = "order_resend"  # the buyer's tickets again, on request
    guest_ticket = "guest_ticket"  # a guest's own ticket, when the order is paid
    ticket_transfer = "ticket_transfer"  # a transferred ticket, to its new holder
    order_lookup = "order_lookup"  # links to an address's paid orders


class MailStatus(StrEnum):
    """pending → sending (claimed by one worker) → sent | pending (retry later) | failed (gave up);
    pending → cancelled when the message became pointless before it was sent (ticket voided or
    transferred again, no paid order for a lookup)."""

    pending = "pending"
    sending = "sending"
    sent = "sent"
    failed = "failed"
    cancelled = "cancelled"


class MailMessage(SQLModel, table=True):
    """An email to send. It exists if and only if the change that asked for it committed; the body is
    rendered when it is sent, from the current state (a ticket's latest code). `dedupe_key` makes
    "at most once" a constraint: `order-paid:<order_id>`, `guest:<ticket_id>:v<version>`, ..."""

    __tablename__ = "mail_message"
    __table_args__ = (Index("ix_mail_message_status_next_attempt", "status", "next_attempt_at"),)

    id: str = Field(primary_key=True, max_length=32)
    kind: str = Field(max_length=32)
    dedupe_key: str = Field(max_length=200, unique=True)
    order_id: str | None = Field(default=None, foreign_key="order.id", index=True, max_length=32)
    ticket_id: str | None = Field(default=None, foreign_key="ticket.id", max_length=32)
    ticket_version: int | None = None
    to_address: str = Field(max_length=320)
    subject: str = Field(max_length=300)
    status: str = Field(default=MailStatus.pending, max_length=16)
    attempts: int = 0
    next_attempt_at: datetime = created_at_field()
    locked_until: datetime | None = utc_field(nullable=True)
    last_error: str | None = Field(default=None, max_length=500)
    created_at: datetime = created_at_field()
    sent_at: datetime | None = utc_field(nullable=True)
