"""Check-in at the door: door staff (role `door` and up), each key limited to its galas."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends, Query, Request, Response

from tickets.auth.deps import DoorKey, principal_of, require_door
from tickets.auth.errors import GalaNotAllowed, RoleRequired
from tickets.auth.service import Principal
from tickets.checkin import service as checkin_service
from tickets.checkin.errors import (
    AdmissionSuperseded,
    AmbiguousScanId,
    NotAnAdmission,
    ScanAlreadyUndone,
    ScanNotFound,
)
from tickets.checkin.schemas import (
    CheckinStats,
    ScanBatchCreate,
    ScanBatchRead,
    ScanCreate,
    ScanID,
    ScanRead,
    ScanSync,
    UndoCreate,
    UndoRead,
)
from tickets.checkin.service import KEY_LIMIT_FACTOR, DoorCache
from tickets.clock import utc_now
from tickets.db import SessionDep
from tickets.fastpath import FastPathRoute, fast_path, json_body
from tickets.galas.errors import GalaNotFound
from tickets.galas.schemas import GalaID
from tickets.pagination import InvalidCursor
from tickets.problems import Busy, InvalidApiKey, RateLimited, Unauthenticated, problem_responses
from tickets.ratelimit import RateLimit

router = APIRouter(tags=["Check-in"], route_class=FastPathRoute)

AUTH_PROBLEMS = (Unauthenticated, InvalidApiKey, RoleRequired, GalaNotAllowed)


async def door_cache(request: Request) -> DoorCache:
    """The process's check-in cache (public keys, gala facts). (`async`: FastAPI runs a plain `def`
    dependency in its thread pool, a thread hand-off on every scan.)"""
    cache: DoorCache = request.app.state.door_cache
    return cache


DoorCacheDep = Annotated[DoorCache, Depends(door_cache)]


async def limit_scans(request: Request, principal: Principal, device_id: str | None) -> None:
    """RATE_LIMIT_SCANS per device of a key, and KEY_LIMIT_FACTOR times that for all of a key's scans
    together (device ids are the client's word, so the key's own limit is what stops a runaway client).
    A scan that names no device counts against the key's limit only: a scanner app that sends no
    `device_id` is not one device."""
    limit: RateLimit | None = request.app.state.settings.scans_limit
    if limit is None:
        return
    limiter = request.app.state.rate_limiter
    if device_id:
        await limiter.check("scans-device", f"{principal.key_id}:{device_id}", limit)
    await limiter.check("scans-key", principal.key_id, RateLimit(limit.count * KEY_LIMIT_FACTOR, limit.seconds))


async def _scan_fast(request: Request) -> Response | None:
    """`scan` without FastAPI's dependency solving, for a request with a valid JSON body (tickets.fastpath)."""
    body = await json_body(request, ScanCreate)
    if body is None:
        return None
    return await scan(request, body, await require_door(await principal_of(request)))


@router.post(
    "/scans",
    summary="Scan a ticket at the door",
    response_model=ScanRead,
    responses=problem_responses(*AUTH_PROBLEMS, GalaNotFound, RateLimited, Busy),
)
@fast_path(_scan_fast)
async def scan(request: Request, body: ScanCreate, principal: DoorKey) -> Response:
    """Check a ticket's code in at a gala and say what to do: `200` for every decided scan, whatever the
    `result` (`admitted`, `already_checked_in`, `invalid`, `wrong_gala`, `void`). Of any number of
    concurrent scans of one ticket, exactly one is `admitted`; the others say when and at which gate it
    was first checked in.

    Send your own `scan_id` (e.g. a UUID made when the code was read) and retry freely: a repeated
    `scan_id` returns the first answer, never a second verdict. Without one, the server makes one.
    Every scan is logged with its gala, gate, device, key and time, failures too.

    Rate limited (`RATE_LIMIT_SCANS`, default 3,000 a minute) per `device_id` of a key, and per key at
    four times that."""
    principal.require_gala(body.gala_id)
    await limit_scans(request, principal, body.device_id)
    cache: DoorCache = request.app.state.door_cache  # (not a dependency: each one costs on every scan)
    gala = await cache.gala(body.gala_id)
    # The hot path: no request-wide transaction (the store writes once, atomically), and the answer is
    # sent as the very JSON text that the scan log keeps (a retried scan_id gets the same bytes back).
    answer = await checkin_service.record_scan(
        request.app.state.scan_store,
        cache,
        gala=gala,
        code=body.code,
        scan_id=body.scan_id,
        gate=body.gate,
        device_id=body.device_id,
        key_id=principal.key_id,
        now=utc_now(),
    )
    return Response(answer, media_type="application/json")


@router.post(
    "/scans/batch",
    summary="Upload scans made offline",
    responses=problem_responses(*AUTH_PROBLEMS, GalaNotFound, RateLimited, Busy),
)
async def scan_batch(
    request: Request, body: ScanBatchCreate, session: SessionDep, principal: DoorKey, cache: DoorCacheDep
) -> ScanBatchRead:
    """Scans a device made without a connection (up to 500 per upload), decided now in the order they
    were made (`scanned_at`, the device's clock; a future time counts as now). When two devices admitted
    one ticket, the earliest admission stands: if an uploaded admission is earlier than the recorded one,
    it becomes the ticket's check-in and the other stops counting. Each result says whether the scan
    `counted` as its ticket's admission.

    Idempotent per `scan_id`: upload again after a failure; scans already logged are answered from the
    log as it stands. One upload counts once against the scan rate limit."""
    principal.require_gala(body.gala_id)
    await limit_scans(request, principal, body.device_id)
    gala = await cache.gala(body.gala_id)
    results = await checkin_service.record_batch(
        session,
        cache,
        gala=gala,
        device_id=body.device_id,
        scans=body.scans,
        key_id=principal.key_id,
        now=utc_now(),
    )
    return ScanBatchRead(results=results)


@router.post(
    "/scans/{scan_id}/undo",
    summary="Undo an admission",
    responses=problem_responses(
        *AUTH_PROBLEMS, ScanNotFound, NotAnAdmission, ScanAlreadyUndone, AdmissionSuperseded, AmbiguousScanId, Busy
    ),
)
async def undo(
    scan_id: ScanID,
    session: SessionDep,
    principal: DoorKey,
    body: Annotated[UndoCreate | None, Body()] = None,
) -> UndoRead:
    """Reverse an admission (a mis-scan, a guest who left before the doors closed): the ticket is no
    longer checked in and can be admitted again. Logged with the key that undid it and the `reason`.

    The body is optional. Give `gala_id` when your scan ids are not unique across galas; without it the
    scan is found by `scan_id` among the galas this key may act on. Undoing a scan that was not an
    admission is `409 scan_not_admission`; undoing twice is `409 scan_already_undone`."""
    body = body or UndoCreate()
    return await checkin_service.undo_scan(
        session, principal=principal, scan_id=scan_id, gala_id=body.gala_id, reason=body.reason, now=utc_now()
    )


@router.get(
    "/galas/{gala_id}/checkin-stats",
    summary="Check-in statistics",
    responses=problem_responses(*AUTH_PROBLEMS, GalaNotFound),
)
async def stats(
    gala_id: GalaID,
    session: SessionDep,
    principal: DoorKey,
    cache: DoorCacheDep,
    bucket_minutes: Annotated[
        int, Query(ge=1, le=60, description="Width of the `arrivals` buckets, in minutes (default 5).")
    ] = 5,
) -> CheckinStats:
    """Valid tickets checked in (`admitted`) against all valid tickets (`expected`), by ticket type and by
    gate, arrivals over time, and every scan logged by result."""
    principal.require_gala(gala_id)
    await cache.gala(gala_id)
    return await checkin_service.checkin_stats(session, gala_id=gala_id, bucket_minutes=bucket_minutes, now=utc_now())


@router.get(
    "/galas/{gala_id}/scan-sync",
    summary="Bundle for offline scanning",
    responses=problem_responses(*AUTH_PROBLEMS, GalaNotFound, InvalidCursor),
)
async def scan_sync(
    gala_id: GalaID,
    session: SessionDep,
    principal: DoorKey,
    cache: DoorCacheDep,
    since: Annotated[
        str | None, Query(max_length=300, description="`next_since` of your last bundle: only what changed since.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=5000, description="At most this many tickets (default 2000).")] = 2000,
) -> ScanSync:
    """What a scanner needs to decide without a connection: the gala's Ed25519 `public_key` (a code is
    the 43 signed bytes then the 64-byte signature, base32; see the ticket code format), and every ticket
    with its current `version` and `status`, so that an old code of a transferred ticket and the code of
    a void ticket are refused offline too (a valid signature alone does not make a code good). `revoked`
    lists the void ones. Tickets include `checked_in_at`, so a device also knows who is already in.

    Without `since`, every ticket of the gala; with `since=next_since`, only tickets changed after it
    (a transfer, a refund, a check-in elsewhere, an undo). Apply rows by `id`. When `has_more` is true,
    call again at once with `next_since`. The cursor trails the clock by 30 seconds (a change is stamped
    just before it commits), so a delta may repeat rows you already have."""
    principal.require_gala(gala_id)
    await cache.gala(gala_id)
    return await checkin_service.sync_bundle(session, cache, gala_id=gala_id, since=since, limit=limit, now=utc_now())
