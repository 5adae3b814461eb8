"""Orders, their items, promo codes and stored idempotent responses."""

from datetime import datetime
from enum import StrEnum

from sqlalchemy import JSON, Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from tickets.models_base import created_at_field, utc_field


class OrderStatus(StrEnum):
    """pending → paid | expired | cancelled; paid → partially_refunded → refunded.

    A pending order whose `expires_at` has passed is expired in effect at once (its holds are
    free); the sweeper only writes the status down.
    """

    pending = "pending"
    paid = "paid"
    expired = "expired"
    cancelled = "cancelled"
    partially_refunded = "partially_refunded"
    refunded = "refunded"


PAID_STATUSES = (OrderStatus.paid, OrderStatus.partially_refunded)


class PaymentProvider(StrEnum):
    stripe = "stripe"
    free = "free"
    comp = "comp"
    cash = "cash"
    invoice = "invoice"


class Order(SQLModel, table=True):
    __tablename__ = "order"
    __table_args__ = (
        Index("ix_order_status_expires_at", "status", "expires_at"),
        Index("ix_order_gala_created", "gala_id", "created_at"),
    )

    id: str = Field(primary_key=True, max_length=32)
    gala_id: str = Field(foreign_key="gala.id", max_length=32)
    status: str = Field(default=OrderStatus.pending, max_length=24)
    buyer_email: str = Field(max_length=320, index=True)
    buyer_name: str = Field(max_length=200)
    currency: str = Field(max_length=3)
    subtotal_amount: int = 0
    discount_amount: int = 0
    total_amount: int = 0
    refunded_amount: int = 0
    promo_code_id: str | None = Field(default=None, max_length=32, index=True)
    promo_code: str | None = Field(default=None, max_length=64)
    payment_provider: str = Field(max_length=16)
    payment_intent_id: str | None = Field(default=None, max_length=255, unique=True)
    client_secret: str | None = Field(default=None, max_length=255)
    created_by_key_id: str | None = Field(default=None, max_length=32)
    expires_at: datetime | None = utc_field(nullable=True)
    hold_extended_until: datetime | None = utc_field(nullable=True)
    last_payment_error: str | None = Field(default=None, max_length=500)
    late_payment: str | None = Field(default=None, max_length=16)  # "retaken" or "refunded"
    reconciled_at: datetime | None = utc_field(nullable=True)
    disputed_at: datetime | None = utc_field(nullable=True)
    created_at: datetime = created_at_field()
    updated_at: datetime = created_at_field()
    paid_at: datetime | None = utc_field(nullable=True)
    cancelled_at: datetime | None = utc_field(nullable=True)
    expired_at: datetime | None = utc_field(nullable=True)


class OrderItem(SQLModel, table=True):
    """One ticket's worth of an order: a seat, or one place of a general area."""

    __tablename__ = "order_item"

    id: str = Field(primary_key=True, max_length=32)
    order_id: str = Field(foreign_key="order.id", index=True, max_length=32)
    ticket_type_id: str = Field(foreign_key="ticket_type.id", max_length=32)
    section_id: str = Field(max_length=32)
    seat_id: str = Field(max_length=32)
    seat_label: str | None = Field(default=None, max_length=64)
    table: str | None = Field(default=None, max_length=64)
    price_amount: int
    discount_amount: int = 0
    attendee_name: str | None = Field(default=None, max_length=200)
    attendee_email: str | None = Field(default=None, max_length=320)
    dietary: str | None = Field(default=None, max_length=500)
    position: int = 0


class DiscountKind(StrEnum):
    percent = "percent"
    fixed = "fixed"


class PromoCode(SQLModel, table=True):
    """A discount code of one gala; uses are counted from live orders, so expiry releases them."""

    __tablename__ = "promo_code"
    __table_args__ = (UniqueConstraint("gala_id", "code"),)

    id: str = Field(primary_key=True, max_length=32)
    gala_id: str = Field(foreign_key="gala.id", max_length=32)
    code: str = Field(max_length=64)
    discount_kind: str = Field(max_length=16)
    percent_off: int | None = None
    amount_off: int | None = None
    ticket_type_ids: list[str] | None = Field(default=None, sa_type=JSON)
    valid_from: datetime | None = utc_field(nullable=True)
    valid_until: datetime | None = utc_field(nullable=True)
    max_uses: int | None = None
    active: bool = True
    created_at: datetime = created_at_field()


class IdempotencyRecord(SQLModel, table=True):
    """The first answer to a write carrying an `Idempotency-Key`, kept to answer its retries."""

    __tablename__ = "idempotency_record"
    __table_args__ = (UniqueConstraint("scope", "key"),)

    id: str = Field(primary_key=True, max_length=32)
    scope: str = Field(max_length=120)
    key: str = Field(max_length=255)
    request_hash: str = Field(max_length=64)
    state: str = Field(default="in_flight", max_length=16)
    status_code: int | None = None
    response_body: str | None = Field(default=None, sa_type=Text)
    created_at: datetime = created_at_field()
