from __future__ import annotations

from datetime import datetime
from typing import Annotated, Self

from fastapi import Path
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from tickets.galas.models import CancellationState, Gala, GalaCancellation, GalaStatus
from tickets.validation import CurrencyCode, TimeZoneName

GalaID = Annotated[str, Path(pattern="^gal_[A-Za-z0-9]{1,40}$", description="Gala id (`gal_…`)")]


class GalaCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "title": "Heritage Gala 2027",
                    "venue_name": "Meridian Arts Centre",
                    "venue_address": "5040 Yonge St, Toronto, ON",
                    "starts_at": "2027-05-28T23:00:00Z",
                    "ends_at": "2027-05-29T03:00:00Z",
                    "timezone": "America/Toronto",
                    "currency": "CAD",
                    "max_tickets_per_order": 10,
                }
            ]
        },
    )

    title: str = Field(min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=5000)
    venue_name: str = Field(min_length=1, max_length=200)
    venue_address: str | None = Field(default=None, max_length=500)
    starts_at: AwareDatetime
    ends_at: AwareDatetime | None = None
    timezone: TimeZoneName
    currency: CurrencyCode = "CAD"
    max_tickets_per_order: int | None = Field(default=None, ge=1, le=1000)
    name_change_cutoff: AwareDatetime | None = Field(
        default=None, description="Until when buyers may change attendee names (admins always may)."
    )

    @model_validator(mode="after")
    def _end_after_start(self) -> Self:
        if self.ends_at is not None and self.ends_at <= self.starts_at:
            raise ValueError("ends_at must be after starts_at")
        return self


class GalaUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=5000)
    venue_name: str | None = Field(default=None, min_length=1, max_length=200)
    venue_address: str | None = Field(default=None, max_length=500)
    starts_at: AwareDatetime | None = None
    ends_at: AwareDatetime | None = None
    timezone: TimeZoneName | None = None
    currency: CurrencyCode | None = None
    max_tickets_per_order: int | None = Field(default=None, ge=1, le=1000)
    name_change_cutoff: AwareDatetime | None = None


class CancellationRead(BaseModel):
    """Progress of the job that refunds every paid order of a cancelled gala."""

    state: CancellationState
    reason: str | None
    orders_total: int = Field(description="Paid orders to refund.")
    orders_refunded: int
    refunded_amount: int
    failures: int = Field(description="Refunds that failed and will be retried.")
    last_error: str | None
    started_at: datetime
    finished_at: datetime | None


class GalaCancel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(default=None, max_length=500)


class GalaRead(BaseModel):
    id: str = Field(examples=["gal_4fQ9x2LmPq8ZrT1vWb3c"])
    title: str
    description: str | None
    venue_name: str
    venue_address: str | None
    starts_at: datetime
    ends_at: datetime | None
    timezone: str
    currency: str
    max_tickets_per_order: int | None
    name_change_cutoff: datetime | None
    status: GalaStatus
    created_at: datetime
    updated_at: datetime
    published_at: datetime | None
    closed_at: datetime | None
    cancelled_at: datetime | None
    cancellation: CancellationRead | None = None

    @classmethod
    def from_model(cls, gala: Gala, cancellation: GalaCancellation | None = None) -> GalaRead:
        read = cls.model_validate(gala, from_attributes=True)
        if cancellation is not None:
            read.cancellation = CancellationRead.model_validate(cancellation, from_attributes=True)
        return read
