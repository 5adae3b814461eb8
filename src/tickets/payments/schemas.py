from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from tickets.payments.models import Refund, RefundKind, RefundStatus


class RefundCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {},
                {"amount": 2500, "reason": "Partial goodwill refund"},
                {"ticket_ids": ["tkt_4fQ9x2LmPq8ZrT1vWb3c"], "reason": "Guest cannot come"},
            ]
        },
    )

    amount: int | None = Field(
        default=None,
        ge=1,
        le=100_000_000,
        description="Minor units. Default: the tickets' prices when `ticket_ids` is given, else everything left.",
    )
    ticket_ids: list[Annotated[str, Field(pattern="^tkt_[A-Za-z0-9]{1,40}$")]] | None = Field(
        default=None, min_length=1, max_length=200, description="Tickets to void (their seats go back on sale)."
    )
    reason: str | None = Field(default=None, max_length=500)


class RefundRead(BaseModel):
    id: str
    order_id: str
    amount: int
    currency: str
    kind: RefundKind
    status: RefundStatus
    reason: str | None
    ticket_ids: list[str] | None
    stripe_refund_id: str | None
    created_at: datetime
    completed_at: datetime | None

    @classmethod
    def from_model(cls, refund: Refund) -> RefundRead:
        return cls(
            id=refund.id,
            order_id=refund.order_id,
            amount=refund.amount,
            currency=refund.currency,
            kind=RefundKind(refund.kind),
            status=RefundStatus(refund.status),
            reason=refund.reason,
            ticket_ids=refund.ticket_ids,
            stripe_refund_id=refund.stripe_refund_id,
            created_at=refund.created_at,
            completed_at=refund.completed_at,
        )


class WebhookAck(BaseModel):
    received: bool = True
    outcome: str = Field(description="What the event did, e.g. `paid`, `duplicate`, `ignored`.")
