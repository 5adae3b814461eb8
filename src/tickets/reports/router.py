from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from tickets.auth.deps import AdminKey
from tickets.auth.errors import GalaNotAllowed, RoleRequired
from tickets.clock import utc_now
from tickets.csvexport import CSV_CONTENT, csv_response, wants_csv
from tickets.db import SessionDep
from tickets.galas import service as galas_service
from tickets.galas.errors import GalaNotFound
from tickets.galas.schemas import GalaID
from tickets.pagination import Cursor, InvalidCursor, Limit, Page
from tickets.problems import InvalidApiKey, Unauthenticated, problem_responses
from tickets.reports import service as reports_service
from tickets.reports.schemas import AttendeeRead, GalaStats

router = APIRouter(prefix="/galas/{gala_id}", tags=["Reports"])
ADMIN = (Unauthenticated, InvalidApiKey, RoleRequired, GalaNotAllowed, GalaNotFound)


@router.get(
    "/attendees",
    summary="Attendee list",
    response_model=Page[AttendeeRead],
    responses={
        **problem_responses(*ADMIN, InvalidCursor),
        200: {
            "description": "JSON page of attendees, or the whole list as CSV with `Accept: text/csv`.",
            "content": CSV_CONTENT,
        },
    },
)
async def attendees(
    request: Request,
    gala_id: GalaID,
    session: SessionDep,
    principal: AdminKey,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[AttendeeRead] | Response:
    """Every valid ticket with its attendee, seat, dietary needs, buyer and check-in time. JSON is
    cursor-paginated; `Accept: text/csv` returns the whole list as CSV (UTF-8, header row) for a
    spreadsheet or the door list (cells that a spreadsheet would run as formulas are prefixed with `'`)."""
    await galas_service.get_gala(session, gala_id, principal=principal)
    if wants_csv(request):
        columns = reports_service.CSV_COLUMNS
        rows = ([getattr(a, c) for c in columns] async for a in reports_service.attendees_all(session, gala_id))
        return await csv_response(columns, rows, filename=f"attendees-{gala_id}.csv")
    data, next_cursor = await reports_service.attendees_page(session, gala_id, limit=limit, cursor=cursor)
    return Page[AttendeeRead](data=data, next_cursor=next_cursor)


@router.get("/stats", summary="Sales statistics", responses=problem_responses(*ADMIN))
async def stats(gala_id: GalaID, session: SessionDep, principal: AdminKey) -> GalaStats:
    """Sold, held and available by tier and section; orders by status; revenue, refunds and net by
    payment provider (minor units); check-ins against expected."""
    gala = await galas_service.get_gala(session, gala_id, principal=principal)
    return await reports_service.gala_stats(session, gala, now=utc_now())
