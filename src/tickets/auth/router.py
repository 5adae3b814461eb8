from __future__ import annotations

from fastapi import APIRouter, Request

from tickets.auth import service as auth_service
from tickets.auth.deps import AdminKey, key_cache
from tickets.auth.errors import ApiKeyNotFound, GalaNotAllowed, RoleRequired
from tickets.auth.models import ApiKey
from tickets.auth.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyID, ApiKeyRead
from tickets.clock import utc_now
from tickets.db import SessionDep
from tickets.pagination import Cursor, InvalidCursor, Limit, Page, paginate
from tickets.problems import InvalidApiKey, Unauthenticated, problem_responses

router = APIRouter(prefix="/api-keys", tags=["API keys"])

ADMIN = (Unauthenticated, InvalidApiKey, RoleRequired, GalaNotAllowed)


@router.post("", status_code=201, summary="Create an API key", responses=problem_responses(*ADMIN))
async def create_api_key(body: ApiKeyCreate, session: SessionDep, principal: AdminKey) -> ApiKeyCreated:
    """Make a key for a role (`admin`, `box_office`, `door`), optionally limited to some galas and with
    an expiry. The secret `key` is in this response only; the service keeps just its SHA-256 digest."""
    key, plain = await auth_service.create_api_key(
        session,
        name=body.name,
        role=body.role,
        gala_ids=body.gala_ids,
        expires_at=body.expires_at,
        creator=principal,
    )
    return ApiKeyCreated(**ApiKeyRead.from_model(key).model_dump(), key=plain)


@router.get("", summary="List API keys", responses=problem_responses(*ADMIN, InvalidCursor))
async def list_api_keys(
    session: SessionDep, principal: AdminKey, limit: Limit = 50, cursor: Cursor = None
) -> Page[ApiKeyRead]:
    """Every key (never the secret), revoked ones included."""
    from sqlalchemy import select

    rows, next_cursor = await paginate(
        session, select(ApiKey), created_col=ApiKey.created_at, id_col=ApiKey.id, limit=limit, cursor=cursor
    )
    if principal.gala_ids is not None:
        rows = [k for k in rows if k.gala_ids is not None and set(k.gala_ids) <= principal.gala_ids]
    return Page[ApiKeyRead](data=[ApiKeyRead.from_model(k) for k in rows], next_cursor=next_cursor)


@router.get("/{key_id}", summary="Read an API key", responses=problem_responses(*ADMIN, ApiKeyNotFound))
async def read_api_key(key_id: ApiKeyID, session: SessionDep, principal: AdminKey) -> ApiKeyRead:  # noqa: ARG001
    """One key's metadata (never the secret)."""
    return ApiKeyRead.from_model(await auth_service.get_api_key(session, key_id))


@router.delete("/{key_id}", summary="Revoke an API key", responses=problem_responses(*ADMIN, ApiKeyNotFound))
async def revoke_api_key(request: Request, key_id: ApiKeyID, session: SessionDep, principal: AdminKey) -> ApiKeyRead:
    """Revoke a key: from now on it is refused with 401 on every route. Revoking twice is harmless."""
    key = await auth_service.revoke_api_key(session, key_id, now=utc_now(), by=principal)
    # Commit first, then forget cached keys: a request racing with this one cannot cache the key
    # again from a row that is not revoked yet. (Other workers hear of it: see auth.revocations.)
    await session.commit()
    key_cache(request).clear()
    return ApiKeyRead.from_model(key)
