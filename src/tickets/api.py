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

api_router = APIRouter(prefix="/v1")
# The hot paths first: a request is matched against the routes in this order, one by one (no route here
# shadows another, so the order changes nothing else).
api_router.include_router(checkin_router)
api_router.include_router(orders_router)
api_router.include_router(galas_router)
api_router.include_router(seating_router)
api_router.include_router(ticket_types_router)
api_router.include_router(promo_router)
api_router.include_router(comp_router)
api_router.include_router(tickets_router)
api_router.include_router(payments_router)
api_router.include_router(api_keys_router)
api_router.include_router(webhooks_router)
api_router.include_router(reports_router)
