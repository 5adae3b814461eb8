from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class AttendeeRead(BaseModel):
    ticket_id: str
    order_id: str
    ticket_type_id: str
    ticket_type: str
    section: str
    seat_label: str | None
    table: str | None
    attendee_name: str | None
    attendee_email: str | None
    dietary: str | None
    buyer_name: str
    buyer_email: str
    payment_provider: str
    checked_in_at: datetime | None


class Counts(BaseModel):
    capacity: int
    sold: int
    held: int = Field(description="Held by pending orders whose hold has not expired.")
    blocked: int = Field(description="Withheld from the public and not sold.")
    available: int


class TicketTypeStats(BaseModel):
    ticket_type_id: str
    name: str
    price_amount: int
    quota: int | None
    sold: int
    held: int
    available: int
    revenue_amount: int = Field(description="What buyers paid for this tier's valid tickets, net of discounts.")


class SectionStats(Counts):
    section_id: str
    name: str
    kind: str


class RevenueStats(BaseModel):
    gross_amount: int = Field(description="Paid orders' totals, before refunds.")
    refunded_amount: int
    net_amount: int
    by_provider: dict[str, int] = Field(description="Gross per payment provider (stripe, cash, invoice, comp, free).")


class CheckInStats(BaseModel):
    admitted: int
    expected: int


class GalaStats(BaseModel):
    gala_id: str
    currency: str
    tickets: Counts
    by_ticket_type: list[TicketTypeStats]
    by_section: list[SectionStats]
    orders: dict[str, int] = Field(description="Orders by status.")
    revenue: RevenueStats
    check_ins: CheckInStats
