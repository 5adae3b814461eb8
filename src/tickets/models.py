"""Every table, imported in one place for Alembic and the metadata."""

from tickets.auth.models import ApiKey
from tickets.galas.models import Gala
from tickets.orders.models import IdempotencyRecord, Order, OrderItem, PromoCode
from tickets.seating.models import Seat, Section
from tickets.ticket_types.models import TicketType
from tickets.tickets.models import Ticket

__all__ = [
    "ApiKey",
    "Gala",
    "IdempotencyRecord",
    "Order",
    "OrderItem",
    "PromoCode",
    "Seat",
    "Section",
    "Ticket",
    "TicketType",
]
