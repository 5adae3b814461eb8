from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal, Self

from fastapi import Path
from pydantic import AwareDatetime, BaseModel, ConfigDict, EmailStr, Field, model_validator

from tickets.orders.models import DiscountKind, OrderStatus, PaymentProvider, PromoCode
from tickets.validation import Label, Name

OrderID = Annotated[str, Path(pattern="^ord_[A-Za-z0-9]{1,40}$", description="Order id (`ord_…`)")]
PromoCodeID = Annotated[str, Path(pattern="^prm_[A-Za-z0-9]{1,40}$", description="Promo code id (`prm_…`)")]
MAX_ITEMS = 100


class OrderItemCreate(BaseModel):
    """One line: a seat (`seat_id`), a whole banquet table (`table`), or places in a general area (`quantity`)."""

    model_config = ConfigDict(extra="forbid")

    ticket_type_id: Annotated[str, Field(pattern="^tt_[A-Za-z0-9]{1,40}$")]
    seat_id: Annotated[str, Field(pattern="^seat_[A-Za-z0-9]{1,40}$")] | None = None
    table: Label | None = None
    quantity: int | None = Field(default=None, ge=1, le=MAX_ITEMS)
    section_id: Annotated[str, Field(pattern="^sec_[A-Za-z0-9]{1,40}$")] | None = Field(
        default=None,
        description="For general admission: the area to take places from (any of the tier's by default).",
    )
    attendee_name: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    attendee_email: EmailStr | None = None
    dietary: Annotated[str, Field(max_length=500)] | None = None

    @model_validator(mode="after")
    def _one_way(self) -> Self:
        if sum(x is not None for x in (self.seat_id, self.table, self.quantity)) > 1:
            raise ValueError("give one of seat_id, table or quantity")
        return self


class OrderCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "gala_id": "gal_4fQ9x2LmPq8ZrT1vWb3c",
                    "buyer_email": "leyla@example.org",
                    "buyer_name": "Leyla Mammadova",
                    "items": [
                        {"ticket_type_id": "tt_vip0000000000000000", "seat_id": "seat_B12000000000000000"},
                        {"ticket_type_id": "tt_youth000000000000", "quantity": 2},
                    ],
                    "promo_code": "YOUTH10",
                }
            ]
        },
    )

    gala_id: Annotated[str, Field(pattern="^gal_[A-Za-z0-9]{1,40}$")]
    buyer_email: EmailStr
    buyer_name: Name
    items: list[OrderItemCreate] = Field(min_length=1, max_length=MAX_ITEMS)
    promo_code: Annotated[str, Field(min_length=1, max_length=64)] | None = None


class CompOrderCreate(OrderCreate):
    payment_method: Literal["comp", "cash", "invoice"] = Field(
        description="`comp`: free of charge; `cash` or `invoice`: paid outside Stripe at the listed prices."
    )


class OrderItemRead(BaseModel):
    id: str
    ticket_type_id: str
    section_id: str
    seat_id: str | None = Field(description="The seat, for reserved sections.")
    seat_label: str | None
    table: str | None
    price_amount: int
    discount_amount: int
    attendee_name: str | None
    attendee_email: str | None
    dietary: str | None


class PaymentRead(BaseModel):
    provider: PaymentProvider
    payment_intent_id: str | None = None
    client_secret: str | None = None


class OrderRead(BaseModel):
    id: str
    status: OrderStatus
    gala_id: str
    buyer_email: str
    buyer_name: str
    items: list[OrderItemRead]
    subtotal_amount: int
    discount_amount: int
    total_amount: int
    refunded_amount: int
    currency: str
    promo_code: str | None
    expires_at: datetime | None = Field(description="Until when the seats are held (pending orders).")
    created_at: datetime
    paid_at: datetime | None
    cancelled_at: datetime | None
    access_token: str = Field(description="Send as `X-Order-Token` to read this order and its tickets.")
    payment: PaymentRead


class PromoCodeCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: Annotated[str, Field(min_length=2, max_length=64, pattern="^[A-Za-z0-9_-]+$")]
    discount_kind: DiscountKind
    percent_off: int | None = Field(default=None, ge=1, le=100)
    amount_off: int | None = Field(default=None, ge=1, le=100_000_000, description="Minor units, once per order.")
    ticket_type_ids: list[Annotated[str, Field(pattern="^tt_")]] | None = Field(default=None, max_length=100)
    valid_from: AwareDatetime | None = None
    valid_until: AwareDatetime | None = None
    max_uses: int | None = Field(default=None, ge=1, le=1_000_000, description="Orders that may use it.")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.discount_kind == DiscountKind.percent and (self.percent_off is None or self.amount_off is not None):
            raise ValueError("a percent discount needs percent_off (and no amount_off)")
        if self.discount_kind == DiscountKind.fixed and (self.amount_off is None or self.percent_off is not None):
            raise ValueError("a fixed discount needs amount_off (and no percent_off)")
        if self.valid_from and self.valid_until and self.valid_until <= self.valid_from:
            raise ValueError("valid_until must be after valid_from")
        return self


class PromoCodeUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    active: bool = True
    max_uses: int | None = Field(default=None, ge=1, le=1_000_000)
    valid_from: AwareDatetime | None = None
    valid_until: AwareDatetime | None = None


class PromoCodeRead(BaseModel):
    id: str
    gala_id: str
    code: str
    discount_kind: DiscountKind
    percent_off: int | None
    amount_off: int | None
    ticket_type_ids: list[str] | None
    valid_from: datetime | None
    valid_until: datetime | None
    max_uses: int | None
    uses: int = Field(description="Live orders (pending or paid) using the code.")
    active: bool
    created_at: datetime

    @classmethod
    def from_model(cls, promo: PromoCode, *, uses: int) -> PromoCodeRead:
        return cls(
            id=promo.id,
            gala_id=promo.gala_id,
            code=promo.code,
            discount_kind=DiscountKind(promo.discount_kind),
            percent_off=promo.percent_off,
            amount_off=promo.amount_off,
            ticket_type_ids=promo.ticket_type_ids,
            valid_from=promo.valid_from,
            valid_until=promo.valid_until,
            max_uses=promo.max_uses,
            uses=uses,
            active=promo.active,
            created_at=promo.created_at,
        )
