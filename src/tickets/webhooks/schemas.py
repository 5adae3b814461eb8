from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import Path
from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field

from tickets.webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint

EventType = Literal["order.paid", "order.refunded", "order.expired", "ticket.checked_in", "gala.sold_out"]
EndpointID = Annotated[str, Path(pattern="^whe_[A-Za-z0-9]{1,40}$", description="Webhook endpoint id (`whe_…`)")]
DeliveryID = Annotated[str, Path(pattern="^whd_[A-Za-z0-9]{1,40}$", description="Webhook delivery id (`whd_…`)")]


class WebhookEndpointCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"url": "https://crm.example.org/hooks/tickets", "events": ["order.paid", "order.refunded"]}]
        },
    )

    url: AnyHttpUrl = Field(description="Where to POST events (https recommended).")
    events: list[EventType] = Field(min_length=1, max_length=5)
    gala_id: Annotated[str, Field(pattern="^gal_[A-Za-z0-9]{1,40}$")] | None = Field(
        default=None, description="Only this gala's events (e.g. for a co-hosting partner)."
    )
    description: str | None = Field(default=None, max_length=500)


class WebhookEndpointRead(BaseModel):
    id: str
    url: str
    events: list[str]
    gala_id: str | None
    description: str | None
    secret: str = Field(
        description="Verifies our `Tickets-Signature` header: HMAC-SHA256 of `<t>.<raw body>` with this secret."
    )
    created_at: datetime

    @classmethod
    def from_model(cls, endpoint: WebhookEndpoint, secret: str) -> WebhookEndpointRead:
        return cls(
            id=endpoint.id,
            url=endpoint.url,
            events=list(endpoint.events),
            gala_id=endpoint.gala_id,
            description=endpoint.description,
            secret=secret,
            created_at=endpoint.created_at,
        )


class WebhookAttemptRead(BaseModel):
    attempt: int
    status_code: int | None
    error: str | None
    duration_ms: int
    attempted_at: datetime

    @classmethod
    def from_model(cls, a: WebhookAttempt) -> WebhookAttemptRead:
        return cls(
            attempt=a.attempt,
            status_code=a.status_code,
            error=a.error,
            duration_ms=a.duration_ms,
            attempted_at=a.attempted_at,
        )


class WebhookDeliveryRead(BaseModel):
    id: str
    endpoint_id: str
    event_id: str
    event_type: str
    status: Literal["pending", "succeeded", "failed"]
    attempts: int
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None
    log: list[WebhookAttemptRead] = Field(default_factory=list)

    @classmethod
    def from_model(cls, d: WebhookDelivery, log: list[WebhookAttempt] | None = None) -> WebhookDeliveryRead:
        return cls(
            id=d.id,
            endpoint_id=d.endpoint_id,
            event_id=d.event_id,
            event_type=d.event_type,
            status=d.status,
            attempts=d.attempts,
            next_attempt_at=d.next_attempt_at,
            last_status_code=d.last_status_code,
            last_error=d.last_error,
            created_at=d.created_at,
            delivered_at=d.delivered_at,
            log=[WebhookAttemptRead.from_model(a) for a in log or []],
        )
