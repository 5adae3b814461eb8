from __future__ import annotations

from fastapi import APIRouter, Request, Response
from sqlalchemy import select
from sqlmodel import col

from tickets.auth.deps import AdminKey
from tickets.auth.errors import GalaNotAllowed, RoleRequired
from tickets.clock import utc_now
from tickets.db import SessionDep
from tickets.pagination import Cursor, InvalidCursor, Limit, Page, paginate
from tickets.problems import InvalidApiKey, Unauthenticated, problem_responses
from tickets.webhooks import service as webhooks_service
from tickets.webhooks.errors import InvalidWebhookUrl, WebhookDeliveryNotFound, WebhookEndpointNotFound
from tickets.webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from tickets.webhooks.schemas import (
    DeliveryID,
    EndpointID,
    WebhookDeliveryRead,
    WebhookEndpointCreate,
    WebhookEndpointRead,
)

router = APIRouter(tags=["Webhooks"])
ADMIN = (Unauthenticated, InvalidApiKey, RoleRequired, GalaNotAllowed)


def _read(request: Request, endpoint: WebhookEndpoint) -> WebhookEndpointRead:
    return WebhookEndpointRead.from_model(
        endpoint, webhooks_service.endpoint_secret(request.app.state.keys, endpoint.id)
    )


@router.post(
    "/webhook-endpoints",
    status_code=201,
    summary="Subscribe a URL to events",
    responses=problem_responses(*ADMIN, InvalidWebhookUrl),
)
async def create_endpoint(
    request: Request, body: WebhookEndpointCreate, session: SessionDep, principal: AdminKey
) -> WebhookEndpointRead:
    """Events: `order.paid`, `order.refunded`, `order.expired`, `ticket.checked_in`, `gala.sold_out`.
    Each delivery is a POST of `{id, type, created_at, gala_id, data}` with headers `Tickets-Event-Id`
    (de-duplicate on it: delivery is at least once), `Tickets-Event-Type` and `Tickets-Signature:
    t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>" keyed with the endpoint's secret>`.
    A non-2xx answer or a timeout (10 s) is retried with backoff: after 10 s, 30 s, 2 min, 10 min,
    30 min, 1 h, 3 h, 6 h, 12 h and 24 h, then the delivery is marked failed (it can be replayed).
    Private and loopback URLs are refused unless WEBHOOK_ALLOW_PRIVATE_URLS=true."""
    if body.gala_id is not None:
        principal.require_gala(body.gala_id)
    elif principal.gala_ids is not None:
        raise GalaNotAllowed("A key limited to some galas must subscribe to one of its galas (gala_id).")
    endpoint = await webhooks_service.create_endpoint(
        session, body, settings=request.app.state.settings, key_id=principal.key_id, now=utc_now()
    )
    return _read(request, endpoint)


@router.get("/webhook-endpoints", summary="List webhook endpoints", responses=problem_responses(*ADMIN, InvalidCursor))
async def list_endpoints(
    request: Request, session: SessionDep, principal: AdminKey, limit: Limit = 50, cursor: Cursor = None
) -> Page[WebhookEndpointRead]:
    """Every active endpoint (with its signing secret)."""
    stmt = select(WebhookEndpoint).where(col(WebhookEndpoint.deleted_at).is_(None))
    if principal.gala_ids is not None:
        stmt = stmt.where(col(WebhookEndpoint.gala_id).in_(sorted(principal.gala_ids)))
    rows, next_cursor = await paginate(
        session, stmt, created_col=WebhookEndpoint.created_at, id_col=WebhookEndpoint.id, limit=limit, cursor=cursor
    )
    return Page[WebhookEndpointRead](data=[_read(request, e) for e in rows], next_cursor=next_cursor)


async def _owned(session: SessionDep, principal: AdminKey, endpoint_id: str) -> WebhookEndpoint:
    endpoint = await webhooks_service.get_endpoint(session, endpoint_id)
    if principal.gala_ids is not None and endpoint.gala_id not in principal.gala_ids:
        raise WebhookEndpointNotFound(f"No webhook endpoint {endpoint_id}.")
    return endpoint


@router.get(
    "/webhook-endpoints/{endpoint_id}",
    summary="Read a webhook endpoint",
    responses=problem_responses(*ADMIN, WebhookEndpointNotFound),
)
async def read_endpoint(
    request: Request, endpoint_id: EndpointID, session: SessionDep, principal: AdminKey
) -> WebhookEndpointRead:
    """One endpoint with its signing secret."""
    return _read(request, await _owned(session, principal, endpoint_id))


@router.delete(
    "/webhook-endpoints/{endpoint_id}",
    status_code=204,
    summary="Delete a webhook endpoint",
    responses=problem_responses(*ADMIN, WebhookEndpointNotFound),
)
async def delete_endpoint(endpoint_id: EndpointID, session: SessionDep, principal: AdminKey) -> Response:
    """Stop sending to this endpoint; pending deliveries are dropped. Its delivery log is kept."""
    endpoint = await _owned(session, principal, endpoint_id)
    endpoint.deleted_at = utc_now()
    session.add(endpoint)
    return Response(status_code=204)


@router.get(
    "/webhook-endpoints/{endpoint_id}/deliveries",
    summary="An endpoint's delivery log",
    responses=problem_responses(*ADMIN, WebhookEndpointNotFound, InvalidCursor),
)
async def list_deliveries(
    endpoint_id: EndpointID, session: SessionDep, principal: AdminKey, limit: Limit = 50, cursor: Cursor = None
) -> Page[WebhookDeliveryRead]:
    """Deliveries to this endpoint, oldest first, with status, attempts and the last answer."""
    await _owned(session, principal, endpoint_id)
    rows, next_cursor = await paginate(
        session,
        select(WebhookDelivery).where(col(WebhookDelivery.endpoint_id) == endpoint_id),
        created_col=WebhookDelivery.created_at,
        id_col=WebhookDelivery.id,
        limit=limit,
        cursor=cursor,
    )
    return Page[WebhookDeliveryRead](data=[WebhookDeliveryRead.from_model(d) for d in rows], next_cursor=next_cursor)


async def _delivery_read(session: SessionDep, delivery: WebhookDelivery) -> WebhookDeliveryRead:
    attempts = list(
        (
            await session.execute(
                select(WebhookAttempt)
                .where(col(WebhookAttempt.delivery_id) == delivery.id)
                .order_by(col(WebhookAttempt.attempt))
            )
        ).scalars()
    )
    return WebhookDeliveryRead.from_model(delivery, attempts)


@router.get(
    "/webhook-deliveries/{delivery_id}",
    summary="Read a delivery and its attempts",
    responses=problem_responses(*ADMIN, WebhookDeliveryNotFound),
)
async def read_delivery(delivery_id: DeliveryID, session: SessionDep, principal: AdminKey) -> WebhookDeliveryRead:
    """A delivery with every attempt (`log`): time, HTTP status or error, duration."""
    delivery = await webhooks_service.get_delivery(session, delivery_id)
    await _owned(session, principal, delivery.endpoint_id)
    return await _delivery_read(session, delivery)


@router.post(
    "/webhook-deliveries/{delivery_id}/replay",
    summary="Send a delivery again",
    responses=problem_responses(*ADMIN, WebhookDeliveryNotFound),
)
async def replay_delivery(delivery_id: DeliveryID, session: SessionDep, principal: AdminKey) -> WebhookDeliveryRead:
    """Queue the same event (same `Tickets-Event-Id`) for this endpoint again, now."""
    delivery = await webhooks_service.get_delivery(session, delivery_id)
    await _owned(session, principal, delivery.endpoint_id)
    delivery = await webhooks_service.replay(session, delivery_id, now=utc_now())
    return await _delivery_read(session, delivery)
