"""The application factory."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from sqlalchemy.orm import configure_mappers

from tickets import __version__
from tickets.api import API_PREFIX, API_ROUTERS
from tickets.auth import revocations
from tickets.auth.service import KeyCache
from tickets.checkin.service import DoorCache
from tickets.checkin.store import store_for
from tickets.config import Settings, get_settings
from tickets.db import Database
from tickets.door import router as door_router
from tickets.gate import GateMiddleware
from tickets.health import router as health_router
from tickets.jobs import run_periodically
from tickets.keys import KeyRing
from tickets.logs import configure_logging
from tickets.mail import service as mail_service
from tickets.metrics import MetricsMiddleware
from tickets.metrics import router as metrics_router
from tickets.middleware import RequestContextMiddleware
from tickets.orders import service as orders_service
from tickets.payments import cancellation
from tickets.payments import service as payments_service
from tickets.problems import Problem, register_problem_handlers
from tickets.ratelimit import RateLimiter
from tickets.webhooks import service as webhooks_service

DESCRIPTION = """
Event ticketing and gala registration: galas, seat inventory, orders paid through Stripe,
QR-coded tickets and door check-in.

* Money is an integer in minor units plus an ISO 4217 `currency`.
* Errors are RFC 9457 `application/problem+json` with a stable machine `code`.
* Lists are `{"data": [...], "next_cursor": ...}`; pass `cursor` to get the next page.
* Staff authenticate with `Authorization: Bearer <API key>`; buyers read their order with
  `X-Order-Token: <access_token>`.
"""

# FastAPI(telemetry=...) exists in newer FastAPI releases only.
_HAS_TELEMETRY = "telemetry" in inspect.signature(FastAPI.__init__).parameters


def create_app(settings: Settings | None = None, *, run_jobs: bool = True) -> FastAPI:
    settings = settings or get_settings()
    # Every model is imported by now: set the mappers up before the first request, which may read
    # objects without a query of the ORM's (the order plan's `model_construct`), before any would.
    configure_mappers()
    db = Database.from_settings(settings)
    keys = KeyRing(settings.resolved_secret_key())
    key_cache = KeyCache(settings.api_key_cache_seconds)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        jobs = {
            "orders.expire": lambda db: orders_service.expire_due_orders(
                db, include_card_orders=not settings.payments_enabled
            ),
            "payments.reconcile_pending": lambda db: payments_service.reconcile_pending(db, settings),
            "payments.resume_cancellations": lambda db: cancellation.resume_all(db, settings),
            "mail.send_pending": lambda db: mail_service.send_pending(db, settings, keys),
        }
        tasks = (
            [
                asyncio.create_task(run_periodically(db, job, name=name, interval=settings.sweep_interval_seconds))
                for name, job in jobs.items()
            ]
            + [
                asyncio.create_task(
                    run_periodically(
                        db,
                        lambda db: webhooks_service.run_once(db, settings, keys),
                        name="webhooks.deliver",
                        interval=settings.webhook_poll_seconds,
                    )
                )
            ]
            if run_jobs
            else []
        )
        if not settings.is_sqlite and key_cache.ttl > 0:
            # Not a job: every process that serves requests must forget revoked keys.
            tasks.append(asyncio.create_task(revocations.listen(settings.database_url, key_cache.clear)))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await app.state.door_cache.close()
            await db.engine.dispose()
            await app.state.rate_limiter.storage.close()
            await payments_service.close_gateway(settings)

    # FastAPI's own OpenTelemetry hooks look for configured providers on every request; this service
    # reports through /metrics and its logs, so they are off.
    no_telemetry = {"telemetry": {"tracing": False, "metrics": False, "logs": False}} if _HAS_TELEMETRY else {}
    app = FastAPI(
        **no_telemetry,  # type: ignore[arg-type]
        title="tickets",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        openapi_tags=[
            {"name": "Galas", "description": "Events and their sale status."},
            {"name": "Seating", "description": "Sections, seats, general areas and the seat map."},
            {"name": "Ticket types", "description": "Price tiers."},
            {"name": "Orders", "description": "Holding seats, buying, cancelling."},
            {"name": "Promo codes", "description": "Discount codes per gala."},
            {"name": "Payments", "description": "Stripe webhooks and refunds."},
            {"name": "Tickets", "description": "Tickets, their codes and attendees."},
            {"name": "Check-in", "description": "Scans at the door, undo, stats and the offline bundle."},
            {"name": "Webhooks", "description": "Events for integrators, signed and retried."},
            {"name": "API keys", "description": "Staff credentials and roles."},
            {"name": "Operations", "description": "Health and readiness."},
        ],
    )
    app.state.settings = settings
    app.state.db = db
    app.state.keys = keys
    app.state.key_cache = key_cache
    app.state.scan_store = store_for(db)
    app.state.door_cache = DoorCache(keys, db, app.state.scan_store)
    app.state.public_base_url = settings.public_base_url
    app.state.rate_limiter = RateLimiter(settings.rate_limit_storage_url)

    register_problem_handlers(app)
    for router in API_ROUTERS:
        app.include_router(router, prefix=API_PREFIX)
    app.include_router(health_router)
    app.include_router(door_router)
    app.include_router(metrics_router)
    if settings.cors_origin_list:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origin_list,
            allow_methods=["GET", "POST", "PATCH", "DELETE", "OPTIONS"],
            allow_headers=[
                "Authorization",
                "Content-Type",
                "Idempotency-Key",
                "X-Order-Token",
                "X-Request-ID",
            ],
            expose_headers=["Retry-After", "X-Request-ID"],
            max_age=600,
        )
    app.add_middleware(GateMiddleware, limit=settings.hot_path_concurrency)  # inside: its wait is timed
    app.add_middleware(MetricsMiddleware)
    app.add_middleware(RequestContextMiddleware, max_body_bytes=settings.max_body_bytes)
    _add_problem_schema(app)
    return app


def _add_problem_schema(app: FastAPI) -> None:
    original = app.openapi

    def openapi() -> dict[str, object]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = original()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.setdefault("Problem", Problem.model_json_schema(ref_template="#/components/schemas/{model}"))
        _document_common_problems(schema)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


_PROBLEM_CONTENT = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}


def _document_common_problems(schema: dict[str, object]) -> None:
    """Problems any operation of a kind can return, documented once here instead of on every route:
    a wrong key (401) anywhere under /v1, a malformed or oversized body where there is a body,
    contention (409 `busy`) on every write, and a lost database connection (503) on every /v1 route."""
    paths = schema.get("paths")
    assert isinstance(paths, dict)
    for path, operations in paths.items():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            common: dict[str, str] = {}
            if path.startswith("/v1/"):
                common["503"] = "`database_unavailable` (the database connection was lost; retry after `Retry-After` s)"
            if path.startswith("/v1/") and path != "/v1/payments/stripe/webhook":
                common["401"] = "`invalid_api_key` (a wrong, revoked or expired key, on every route)"
            if "requestBody" in operation:
                common["400"] = "`malformed_body` (not valid JSON)"
                common["413"] = "`payload_too_large`"
                common.setdefault("422", "`validation_error`")
            if method in ("post", "patch", "delete") and path.startswith("/v1/"):
                common["409"] = "`busy` (contention; retry after `Retry-After` seconds)"
            for status, text in common.items():
                if status in responses:
                    description = responses[status].get("description", "")
                    if text.split(" ")[0] not in description:
                        responses[status]["description"] = (
                            f"{description}; {text}" if description else f"Problem: {text}"
                        )
                    responses[status].setdefault("content", _PROBLEM_CONTENT)
                else:
                    responses[status] = {"description": f"Problem: {text}", "content": _PROBLEM_CONTENT}


def app_factory() -> FastAPI:
    """Entry point for uvicorn workers (`tickets.main:app_factory`, factory mode)."""
    settings = get_settings()
    configure_logging(settings.log_level)
    app = create_app(settings)
    tune_garbage_collector()
    return app


def tune_garbage_collector() -> None:
    """For a serving process: what was loaded at start-up (modules, routes, schemas) is kept out of
    every later collection, and young collections run every 10,000 allocations instead of 700. A
    request allocates a few thousand objects and frees nearly all of them by reference counting; the
    default threshold ran a collection every few requests, each walking objects that live for the
    whole process."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 20, 20)
