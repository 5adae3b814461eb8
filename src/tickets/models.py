"""Every table, imported in one place for Alembic and the metadata."""

from tickets.auth.models import ApiKey
from tickets.checkin.models import Scan
from tickets.galas.models import Gala, GalaCancellation
from tickets.mail.models import MailMessage
from tickets.orders.models import IdempotencyRecord, Order, OrderItem, PromoCode
from tickets.payments.models import Refund, StripeEvent
from tickets.seating.models import Seat, Section
from tickets.ticket_types.models import TicketType
from tickets.tickets.models import Ticket
from tickets.webhooks.models import OutboxEvent, WebhookAttempt, WebhookDelivery, WebhookEndpoint

__all__ = [
    "ApiKey",
    "Gala",
    "GalaCancellation",
    "IdempotencyRecord",
    "MailMessage",
    "Order",
    "OrderItem",
    "OutboxEvent",
    "PromoCode",
    "Refund",
    "Scan",
    "Seat",
    "Section",
    "StripeEvent",
    "Ticket",
    "TicketType",
    "WebhookAttempt",
    "WebhookDelivery",
    "WebhookEndpoint",
]
