"""API keys: made, stored as a SHA-256 digest, resolved to a principal, revoked."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from tickets.auth.errors import ApiKeyNotFound, GalaNotAllowed, RoleRequired
from tickets.auth.models import ApiKey, Role
from tickets.ids import new_id

KEY_PREFIX = "tk_"


@dataclass(frozen=True)
class Principal:
    """Who is calling with an API key: its role and, for a limited key, its galas."""

    key_id: str
    role: Role
    gala_ids: frozenset[str] | None

    def has_role(self, role: Role) -> bool:
        return self.role.rank >= role.rank

    def can_access_gala(self, gala_id: str) -> bool:
        return self.gala_ids is None or gala_id in self.gala_ids

    def require_gala(self, gala_id: str) -> None:
        if not self.can_access_gala(gala_id):
            raise GalaNotAllowed(f"This API key may not act on gala {gala_id}.")


def hash_key(plain: str) -> str:
    # The key has ~256 bits of entropy, so a fast digest is safe and costs nothing per request.
    return hashlib.sha256(plain.encode()).hexdigest()


async def create_api_key(
    session: AsyncSession,
    *,
    name: str,
    role: Role,
    gala_ids: list[str] | None = None,
    expires_at: datetime | None = None,
    creator: Principal | None = None,
) -> tuple[ApiKey, str]:
    """Make a key; returns the row and the plain key, which is never stored."""
    if creator is not None:
        if not creator.has_role(role):
            raise RoleRequired("A key may not create a key with a higher role than its own.")
        if creator.gala_ids is not None:
            if gala_ids is None or not set(gala_ids) <= creator.gala_ids:
                raise GalaNotAllowed("A key limited to some galas may only create keys limited to those.")
    plain = KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(
        id=new_id("key"),
        name=name,
        role=role.value,
        key_hash=hash_key(plain),
        prefix=plain[:10],
        gala_ids=sorted(set(gala_ids)) if gala_ids is not None else None,
        expires_at=expires_at,
    )
    session.add(key)
    await session.flush()
    return key, plain


async def resolve_key(session: AsyncSession, plain: str, *, now: datetime) -> Principal | None:
    """The principal for a presented key, or None if it is unknown, revoked or expired."""
    row = (
        await session.execute(
            select(
                col(ApiKey.id), col(ApiKey.role), col(ApiKey.gala_ids), col(ApiKey.revoked_at), col(ApiKey.expires_at)
            ).where(col(ApiKey.key_hash) == hash_key(plain))
        )
    ).first()
    if row is None or row.revoked_at is not None:
        return None
    if row.expires_at is not None and row.expires_at <= now:
        return None
    gala_ids = frozenset(row.gala_ids) if row.gala_ids is not None else None
    return Principal(key_id=row.id, role=Role(row.role), gala_ids=gala_ids)


async def get_api_key(session: AsyncSession, key_id: str) -> ApiKey:
    key = await session.get(ApiKey, key_id)
    if key is None:
        raise ApiKeyNotFound(f"No API key {key_id}.")
    return key


async def revoke_api_key(session: AsyncSession, key_id: str, *, now: datetime, by: Principal) -> ApiKey:
    """Revoke a key at once; revoking twice is harmless."""
    key = await get_api_key(session, key_id)
    if by.gala_ids is not None and (key.gala_ids is None or not set(key.gala_ids) <= by.gala_ids):
        raise GalaNotAllowed("A key limited to some galas may only revoke keys limited to those.")
    if key.revoked_at is None:
        key.revoked_at = now
        session.add(key)
        await session.flush()
    return key
