"""Prometheus metrics: request counts and latencies from every worker, and business gauges read from
the database at scrape time (so they agree whichever worker answers the scrape).

With several workers, `tickets serve` points PROMETHEUS_MULTIPROC_DIR at a scratch folder so that
request counters from all workers are summed.
"""

from __future__ import annotations

import os
import time

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from sqlalchemy import func, select
from sqlmodel import col
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tickets.clock import utc_now
from tickets.db import Database
from tickets.orders.models import Order
from tickets.seating.models import Seat, SeatStatus
from tickets.webhooks.models import OutboxEvent, WebhookDelivery

REQUESTS = Counter("tickets_http_requests_total", "HTTP requests", ["method", "route", "status"])
LATENCY = Histogram(
    "tickets_http_request_duration_seconds",
    "HTTP request latency",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
SCANS = Counter("tickets_scans_total", "Door scans by result", ["result"])


class MetricsMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            template = _template(scope) if scope.get("route") is not None else "unmatched"
            method = scope.get("method", "")
            REQUESTS.labels(method, template, str(status)).inc()
            LATENCY.labels(method, template).observe(time.perf_counter() - started)


def _template(scope: Scope) -> str:
    """The route's path template (`/v1/galas/{gala_id}`), rebuilt from the path and its parameters,
    so that label values stay few."""
    params = {str(v): k for k, v in (scope.get("path_params") or {}).items()}
    path: str = scope.get("path", "")
    return "/".join("{" + params[seg] + "}" if seg in params else seg for seg in path.split("/"))


def _process_metrics() -> bytes:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest()


async def _database_metrics(db: Database) -> str:
    now = utc_now()
    lines: list[str] = []
    async with db.read_sessions() as s:
        orders = (await s.execute(select(col(Order.status), func.count()).group_by(col(Order.status)))).all()
        holds = (
            await s.execute(
                select(func.count()).where(col(Seat.status) == SeatStatus.held, col(Seat.hold_expires_at) > now)
            )
        ).scalar_one()
        deliveries = (
            await s.execute(select(col(WebhookDelivery.status), func.count()).group_by(col(WebhookDelivery.status)))
        ).all()
        backlog = (await s.execute(select(func.count()).where(col(OutboxEvent.dispatched_at).is_(None)))).scalar_one()
    lines.append("# HELP tickets_orders Orders by stored status.")
    lines.append("# TYPE tickets_orders gauge")
    lines += [f'tickets_orders{{status="{status}"}} {n}' for status, n in orders]
    lines.append("# HELP tickets_holds_active Seats and places held by pending orders right now.")
    lines.append("# TYPE tickets_holds_active gauge")
    lines.append(f"tickets_holds_active {holds}")
    lines.append("# HELP tickets_webhook_deliveries Outgoing webhook deliveries by status.")
    lines.append("# TYPE tickets_webhook_deliveries gauge")
    lines += [f'tickets_webhook_deliveries{{status="{status}"}} {n}' for status, n in deliveries]
    lines.append("# HELP tickets_outbox_backlog Events not yet fanned out to webhook endpoints.")
    lines.append("# TYPE tickets_outbox_backlog gauge")
    lines.append(f"tickets_outbox_backlog {backlog}")
    return "\n".join(lines) + "\n"


router = APIRouter(tags=["Operations"])


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}, "description": "Prometheus text"}
    },
)
async def metrics(request: Request) -> Response:
    """Request counts and latencies per route (all workers), scans by result, and gauges from the
    database: orders by status, active holds, webhook deliveries by status, outbox backlog."""
    body = _process_metrics() + (await _database_metrics(request.app.state.db)).encode()
    return Response(content=body, media_type=CONTENT_TYPE_LATEST)
