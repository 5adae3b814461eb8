"""Every domain router under /v1, in one place."""

from fastapi import APIRouter

from tickets.auth.router import router as api_keys_router
from tickets.checkin.router import router as checkin_router
from tickets.galas.router import router as galas_router
from tickets.orders.router import comp_router, promo_router
from tickets.orders.router import router as orders_router
from tickets.payments.router import router as payments_router
from tickets.reports.router import router as reports_router
from tickets.seating.router import router as seating_router
from tickets.ticket_types.router import router as ticket_types_router
from tickets.tickets.router import router as tickets_router
from tickets.webhooks.router import router as webhooks_router

API_PREFIX = "/v1"
# Each is included in the app itself under API_PREFIX, the hot paths first: a request is matched against
# the routers in this order, and each router nested in another costs one more round of matching per
# request (no route here shadows another, so the order changes nothing else).
API_ROUTERS: list[APIRouter] = [
    checkin_router,
    orders_router,
    galas_router,
    seating_router,
    ticket_types_router,
    promo_router,
    comp_router,
    tickets_router,
    payments_router,
    api_keys_router,
    webhooks_router,
    reports_router,
]
