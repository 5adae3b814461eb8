from __future__ import annotations

from fastapi import APIRouter, BackgroundTasks, Query, Request

from tickets.auth.deps import AdminKey, OptionalPrincipal
from tickets.auth.errors import GalaNotAllowed, RoleRequired
from tickets.clock import utc_now
from tickets.db import SessionDep
from tickets.galas import service as galas_service
from tickets.galas.errors import (
    GalaCancelled,
    GalaHasOrders,
    GalaNotFound,
    GalaNotReady,
    InvalidGalaTransition,
)
from tickets.galas.models import GalaCancellation, GalaStatus
from tickets.galas.schemas import GalaCancel, GalaCreate, GalaID, GalaRead, GalaUpdate
from tickets.pagination import Cursor, InvalidCursor, Limit, Page
from tickets.payments import cancellation
from tickets.problems import InvalidApiKey, Unauthenticated, problem_responses

router = APIRouter(prefix="/galas", tags=["Galas"])

ADMIN_PROBLEMS = (Unauthenticated, InvalidApiKey, RoleRequired, GalaNotAllowed)


@router.post(
    "",
    status_code=201,
    summary="Create a gala",
    responses=problem_responses(*ADMIN_PROBLEMS),
)
async def create_gala(body: GalaCreate, session: SessionDep, principal: AdminKey) -> GalaRead:
    """Create a gala in `draft`. Add sections and ticket types, then publish it. Admin only."""
    if principal.gala_ids is not None:
        raise GalaNotAllowed("A key limited to some galas cannot create galas.")
    return GalaRead.from_model(await galas_service.create_gala(session, body, now=utc_now()))


@router.get(
    "",
    summary="List galas",
    responses=problem_responses(InvalidApiKey, InvalidCursor),
)
async def list_galas(
    session: SessionDep,
    principal: OptionalPrincipal,
    status: GalaStatus | None = Query(default=None, description="Only galas in this status."),
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[GalaRead]:
    """Without a key: published galas (on sale, closed or cancelled). With a key: every gala it may see."""
    rows, next_cursor = await galas_service.list_galas(
        session, principal=principal, status=status, limit=limit, cursor=cursor
    )
    return Page[GalaRead](data=[GalaRead.from_model(g) for g in rows], next_cursor=next_cursor)


@router.get("/{gala_id}", summary="Read a gala", responses=problem_responses(InvalidApiKey, GalaNotFound))
async def read_gala(gala_id: GalaID, session: SessionDep, principal: OptionalPrincipal) -> GalaRead:
    """A published gala is public; a draft is visible to staff only. A cancelled gala carries the
    progress of its refunds in `cancellation`."""
    gala = await galas_service.get_gala(session, gala_id, principal=principal)
    job = await session.get(GalaCancellation, gala.id) if gala.status == GalaStatus.cancelled else None
    return GalaRead.from_model(gala, job)


@router.patch(
    "/{gala_id}",
    summary="Update a gala",
    responses=problem_responses(*ADMIN_PROBLEMS, GalaNotFound, GalaCancelled, GalaHasOrders),
)
async def update_gala(gala_id: GalaID, body: GalaUpdate, session: SessionDep, principal: AdminKey) -> GalaRead:
    """Change any detail of a gala. The currency cannot change once there are orders."""
    gala = await galas_service.update_gala(session, gala_id, body, principal=principal, now=utc_now())
    return GalaRead.from_model(gala)


@router.post(
    "/{gala_id}/publish",
    summary="Put a gala on sale",
    responses=problem_responses(*ADMIN_PROBLEMS, GalaNotFound, InvalidGalaTransition, GalaNotReady),
)
async def publish_gala(gala_id: GalaID, session: SessionDep, principal: AdminKey) -> GalaRead:
    """`draft` (or `closed`) → `on_sale`. Needs at least one ticket type. Publishing twice is harmless."""
    return GalaRead.from_model(await galas_service.publish_gala(session, gala_id, principal=principal, now=utc_now()))


@router.post(
    "/{gala_id}/close",
    summary="Close sales",
    responses=problem_responses(*ADMIN_PROBLEMS, GalaNotFound, InvalidGalaTransition),
)
async def close_gala(gala_id: GalaID, session: SessionDep, principal: AdminKey) -> GalaRead:
    """`on_sale` → `closed`: no more sales; tickets already sold still admit at the door."""
    return GalaRead.from_model(await galas_service.close_gala(session, gala_id, principal=principal, now=utc_now()))


@router.post(
    "/{gala_id}/cancel",
    status_code=202,
    summary="Cancel a gala",
    responses=problem_responses(*ADMIN_PROBLEMS, GalaNotFound),
)
async def cancel_gala(
    request: Request,
    gala_id: GalaID,
    session: SessionDep,
    principal: AdminKey,
    background: BackgroundTasks,
    body: GalaCancel | None = None,
) -> GalaRead:
    """→ `cancelled`: sales stop, every ticket (comps too) is void at once, pending orders are cancelled,
    and every paid order is refunded by a resumable job (rerunning it finishes what an interrupted run
    left and refunds nothing twice). Follow its progress in `cancellation` on the gala. Cancelling
    again is harmless."""
    gala = await galas_service.get_gala_for_update(session, gala_id, principal=principal)
    job = await cancellation.start(session, gala, reason=body.reason if body else None, now=utc_now())
    if job.state != "completed":
        background.add_task(cancellation.run, request.app.state.db, request.app.state.settings, gala.id)
    return GalaRead.from_model(gala, job)
