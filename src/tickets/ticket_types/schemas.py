from __future__ import annotations

from datetime import datetime
from typing import Annotated, Self

from fastapi import Path
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from tickets.ticket_types.models import TicketType
from tickets.validation import Name

TicketTypeID = Annotated[str, Path(pattern="^tt_[A-Za-z0-9]{1,40}$", description="Ticket type id (`tt_…`)")]
SectionRef = Annotated[str, Field(pattern="^sec_[A-Za-z0-9]{1,40}$")]


class TicketTypeCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"name": "VIP", "price_amount": 25000, "section_ids": ["sec_orchestra"], "max_per_order": 6},
                {
                    "name": "Youth / student",
                    "price_amount": 4000,
                    "section_ids": ["sec_balcony"],
                    "quota": 100,
                },
            ]
        },
    )

    name: Name
    description: str | None = Field(default=None, max_length=2000)
    price_amount: int = Field(ge=0, le=100_000_000, description="Price per ticket in minor units (cents).")
    section_ids: list[SectionRef] = Field(min_length=1, max_length=100)
    quota: int | None = Field(default=None, ge=0, le=1_000_000, description="Caps this tier across its sections.")
    min_per_order: int = Field(default=1, ge=1, le=1000)
    max_per_order: int | None = Field(default=None, ge=1, le=1000)
    sales_start: AwareDatetime | None = None
    sales_end: AwareDatetime | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        check_tier_rules(self.min_per_order, self.max_per_order, self.sales_start, self.sales_end)
        if len(set(self.section_ids)) != len(self.section_ids):
            raise ValueError("section_ids has duplicates")
        return self


def check_tier_rules(
    min_per_order: int, max_per_order: int | None, sales_start: datetime | None, sales_end: datetime | None
) -> None:
    if max_per_order is not None and max_per_order < min_per_order:
        raise ValueError("max_per_order must be at least min_per_order")
    if sales_start is not None and sales_end is not None and sales_end <= sales_start:
        raise ValueError("sales_end must be after sales_start")


class TicketTypeUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    description: str | None = Field(default=None, max_length=2000)
    price_amount: int | None = Field(default=None, ge=0, le=100_000_000)
    section_ids: list[SectionRef] | None = Field(default=None, min_length=1, max_length=100)
    quota: int | None = Field(default=None, ge=0, le=1_000_000)
    min_per_order: int | None = Field(default=None, ge=1, le=1000)
    max_per_order: int | None = Field(default=None, ge=1, le=1000)
    sales_start: AwareDatetime | None = None
    sales_end: AwareDatetime | None = None


class TicketTypeRead(BaseModel):
    id: str
    gala_id: str
    name: str
    description: str | None
    price_amount: int
    currency: str
    section_ids: list[str]
    quota: int | None
    min_per_order: int
    max_per_order: int | None
    sales_start: datetime | None
    sales_end: datetime | None
    available: int = Field(description="Tickets of this type that can still be bought now.")
    created_at: datetime

    @classmethod
    def from_model(cls, tt: TicketType, *, currency: str, available: int) -> TicketTypeRead:
        return cls(
            id=tt.id,
            gala_id=tt.gala_id,
            name=tt.name,
            description=tt.description,
            price_amount=tt.price_amount,
            currency=currency,
            section_ids=list(tt.section_ids),
            quota=tt.quota,
            min_per_order=tt.min_per_order,
            max_per_order=tt.max_per_order,
            sales_start=tt.sales_start,
            sales_end=tt.sales_end,
            available=available,
            created_at=tt.created_at,
        )
