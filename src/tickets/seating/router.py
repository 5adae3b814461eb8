from __future__ import annotations

from fastapi import APIRouter, Response
from pydantic_core import to_json

from tickets.auth.deps import AdminKey, OptionalPrincipal
from tickets.auth.errors import GalaNotAllowed, RoleRequired
from tickets.clock import utc_now
from tickets.db import SessionDep
from tickets.galas import service as galas_service
from tickets.galas.errors import GalaCancelled, GalaNotFound
from tickets.galas.schemas import GalaID
from tickets.problems import InvalidApiKey, Unauthenticated, problem_responses
from tickets.seating import service as seating_service
from tickets.seating.errors import (
    DuplicateLabel,
    DuplicateSectionName,
    InventoryInUse,
    SeatNotFound,
    SectionInUse,
    SectionNotFound,
    WrongSectionKind,
)
from tickets.seating.schemas import (
    BlockResult,
    SeatID,
    SeatIds,
    SeatMap,
    SeatsAdd,
    SectionCreate,
    SectionID,
    SectionRead,
    SectionUpdate,
)

router = APIRouter(prefix="/galas/{gala_id}", tags=["Seating"])

ADMIN = (Unauthenticated, InvalidApiKey, RoleRequired, GalaNotAllowed, GalaNotFound)


@router.post(
    "/sections",
    status_code=201,
    summary="Add a section",
    responses=problem_responses(*ADMIN, GalaCancelled, DuplicateLabel, DuplicateSectionName),
)
async def create_section(gala_id: GalaID, body: SectionCreate, session: SessionDep, principal: AdminKey) -> SectionRead:
    """A reserved section with explicit seats (theatre rows with `row`/`number`, or banquet tables: seats
    sharing a `table` label form that table), or a general-admission area with a `capacity`.
    Seat and table labels are unique within the gala."""
    now = utc_now()
    section = await seating_service.create_section(session, gala_id, body, principal=principal, now=now)
    return seating_service.section_read(section, section.capacity)


@router.get("/sections", summary="List sections", responses=problem_responses(InvalidApiKey, GalaNotFound))
async def list_sections(gala_id: GalaID, session: SessionDep, principal: OptionalPrincipal) -> list[SectionRead]:
    """The gala's sections with their capacity and what is still available (the seat map has every seat)."""
    await galas_service.get_gala(session, gala_id, principal=principal)
    return await seating_service.list_sections(session, gala_id, now=utc_now())


@router.patch(
    "/sections/{section_id}",
    summary="Rename or resize a section",
    responses=problem_responses(
        *ADMIN, GalaCancelled, SectionNotFound, DuplicateSectionName, InventoryInUse, WrongSectionKind
    ),
)
async def update_section(
    gala_id: GalaID, section_id: SectionID, body: SectionUpdate, session: SessionDep, principal: AdminKey
) -> SectionRead:
    """Rename a section, or change a general area's capacity (never below its held and sold places)."""
    return await seating_service.update_section(session, gala_id, section_id, body, principal=principal, now=utc_now())


@router.delete(
    "/sections/{section_id}",
    status_code=204,
    summary="Remove a section",
    responses=problem_responses(*ADMIN, GalaCancelled, SectionNotFound, InventoryInUse, SectionInUse),
)
async def delete_section(gala_id: GalaID, section_id: SectionID, session: SessionDep, principal: AdminKey) -> Response:
    """Remove a section and its seats. Refused while anything in it is held or sold, or was ever ordered,
    or while a ticket type sells from it."""
    await seating_service.delete_section(session, gala_id, section_id, principal=principal, now=utc_now())
    return Response(status_code=204)


@router.post(
    "/sections/{section_id}/seats",
    status_code=201,
    summary="Add seats to a reserved section",
    responses=problem_responses(*ADMIN, GalaCancelled, SectionNotFound, DuplicateLabel, WrongSectionKind),
)
async def add_seats(
    gala_id: GalaID, section_id: SectionID, body: SeatsAdd, session: SessionDep, principal: AdminKey
) -> SectionRead:
    """Append seats to a reserved section. Labels stay unique within the gala."""
    await seating_service.add_seats(session, gala_id, section_id, body.seats, principal=principal)
    section = await seating_service.get_section(session, gala_id, section_id)
    sections = {s.id: s for s in await seating_service.list_sections(session, gala_id, now=utc_now())}
    return sections[section.id]


@router.delete(
    "/seats/{seat_id}",
    status_code=204,
    summary="Remove a seat",
    responses=problem_responses(*ADMIN, GalaCancelled, SeatNotFound, InventoryInUse),
)
async def delete_seat(gala_id: GalaID, seat_id: SeatID, session: SessionDep, principal: AdminKey) -> Response:
    """Remove a seat from the map. Refused while it is held or sold, or if it was ever ordered."""
    await seating_service.delete_seat(session, gala_id, seat_id, principal=principal, now=utc_now())
    return Response(status_code=204)


@router.get(
    "/seats", summary="Seat map", response_model=SeatMap, responses=problem_responses(InvalidApiKey, GalaNotFound)
)
async def read_seat_map(gala_id: GalaID, session: SessionDep, principal: OptionalPrincipal) -> Response:
    """The whole seat map as one document: every seat with its live status (`available`, `held`, `sold`,
    `blocked`), and `capacity` and `available` for general areas. Public for published galas."""
    await galas_service.get_gala(session, gala_id, principal=principal)
    seat_map = await seating_service.seat_map(session, gala_id, now=utc_now())
    # Plain data encoded by pydantic-core in one pass: the map of a large hall has thousands of seats,
    # and the response-model path would validate every one of them again before encoding it.
    return Response(to_json(seat_map), media_type="application/json")


@router.post(
    "/seats/block",
    summary="Block seats",
    responses=problem_responses(*ADMIN, GalaCancelled, SeatNotFound),
)
async def block_seats(gala_id: GalaID, body: SeatIds, session: SessionDep, principal: AdminKey) -> BlockResult:
    """Hold seats back from the public (guests of honour, sightlines). Box office comp orders may still
    take them. Blocking a held or sold seat keeps its buyer."""
    seats = await seating_service.set_blocked(
        session, gala_id, body.seat_ids, blocked=True, principal=principal, now=utc_now()
    )
    return BlockResult(gala_id=gala_id, seats=seats)


@router.post(
    "/seats/unblock",
    summary="Unblock seats",
    responses=problem_responses(*ADMIN, GalaCancelled, SeatNotFound),
)
async def unblock_seats(gala_id: GalaID, body: SeatIds, session: SessionDep, principal: AdminKey) -> BlockResult:
    """Release blocked seats to the public."""
    seats = await seating_service.set_blocked(
        session, gala_id, body.seat_ids, blocked=False, principal=principal, now=utc_now()
    )
    return BlockResult(gala_id=gala_id, seats=seats)
