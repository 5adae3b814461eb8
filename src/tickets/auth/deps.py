"""Who is calling: API-key principals and role requirements, as Annotated dependencies."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from tickets.auth import service as auth_service
from tickets.auth.errors import RoleRequired
from tickets.auth.models import Role
from tickets.auth.service import KeyCache, Principal
from tickets.clock import utc_now
from tickets.problems import InvalidApiKey, Unauthenticated

bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer tk_…`")


def key_cache(request: Request) -> KeyCache:
    """This process's cache of resolved API keys (see `KeyCache`)."""
    cache: KeyCache = request.app.state.key_cache
    return cache


async def get_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal | None:
    """The caller's principal, None without a key; a wrong, revoked or expired key is 401 anywhere."""
    header = request.headers.get("authorization")
    if header is None:
        return None
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise InvalidApiKey("The Authorization header must be `Bearer <API key>`.")
    principal = await auth_service.resolve_key_cached(
        request.app.state.db, key_cache(request), credentials.credentials, now=utc_now()
    )
    if principal is None:
        raise InvalidApiKey("The API key is unknown, revoked or expired.")
    request.state.principal = principal
    return principal


OptionalPrincipal = Annotated[Principal | None, Depends(get_principal)]


async def principal_of(request: Request) -> Principal | None:
    """`get_principal` called directly, outside FastAPI's dependency solving (tickets.fastpath)."""
    return await get_principal(request, await bearer(request))


def require_role(role: Role) -> Callable[[Principal | None], Awaitable[Principal]]:
    async def dependency(principal: OptionalPrincipal) -> Principal:
        if principal is None:
            raise Unauthenticated("This route needs an API key: `Authorization: Bearer <key>`.")
        if not principal.has_role(role):
            raise RoleRequired(f"This route needs the role {role.value} or higher.")
        return principal

    dependency.__name__ = f"require_{role.value}"
    return dependency


require_door = require_role(Role.door)
AdminKey = Annotated[Principal, Depends(require_role(Role.admin))]
BoxOfficeKey = Annotated[Principal, Depends(require_role(Role.box_office))]
DoorKey = Annotated[Principal, Depends(require_door)]
