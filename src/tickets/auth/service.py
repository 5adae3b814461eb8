"""API keys: made, stored as a SHA-256 digest, resolved to a principal, revoked."""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from tickets.auth import revocations
from tickets.auth.errors import ApiKeyNotFound, GalaNotAllowed, RoleRequired
from tickets.auth.models import ApiKey, Role
from tickets.db import Database
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


# What a key's digest resolves to: (id, role, gala_ids, revoked_at, expires_at), or no row.
_KEY_ROW = select(
    col(ApiKey.id), col(ApiKey.role), col(ApiKey.gala_ids), col(ApiKey.revoked_at), col(ApiKey.expires_at)
).where(col(ApiKey.key_hash) == bindparam("digest"))


def _principal(row: Sequence[Any], *, now: datetime) -> Principal | None:
    key_id, role, gala_ids, revoked_at, expires_at = row
    if revoked_at is not None or (expires_at is not None and expires_at <= now):
        return None
    return Principal(key_id=key_id, role=Role(role), gala_ids=frozenset(gala_ids) if gala_ids is not None else None)


@dataclass
class _Cached:
    principal: Principal
    expires_at: datetime | None  # the key's own expiry, checked on every use
    until: float  # time.monotonic() after which the entry must be read again


class KeyCache:
    """Resolved API keys, kept in this process for `ttl` seconds so that a busy door scanner or
    integrator does not cost a database query per request.

    Only keys that resolved are kept; an unknown key always goes to the database. A key's expiry is
    checked on every use. Revoking a key clears this process's cache at once (after the revocation
    commits), and on PostgreSQL every other worker's as soon as it hears of it (`revocations`); without
    that (SQLite, or a lost listening connection) another worker may accept a revoked key until its entry
    is `ttl` seconds old, which is why the TTL is short (`API_KEY_CACHE_SECONDS`, default 1; 0: no cache)."""

    MAX_ENTRIES = 10_000

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._entries: dict[str, _Cached] = {}
        # Bumped by clear(): a lookup that started before a revocation must not store what it read.
        self.generation = 0

    def get(self, digest: str, *, now: datetime) -> Principal | None:
        entry = self._entries.get(digest)
        if entry is None:
            return None
        if entry.until <= time.monotonic() or (entry.expires_at is not None and entry.expires_at <= now):
            del self._entries[digest]
            return None
        return entry.principal

    def put(self, digest: str, principal: Principal, *, expires_at: datetime | None, generation: int) -> None:
        if self.ttl <= 0 or generation != self.generation:
            return
        if len(self._entries) >= self.MAX_ENTRIES:
            self._entries.clear()
        self._entries[digest] = _Cached(principal, expires_at, time.monotonic() + self.ttl)

    def clear(self) -> None:
        self.generation += 1
        self._entries.clear()


async def resolve_key_cached(db: Database, cache: KeyCache, plain: str, *, now: datetime) -> Principal | None:
    """The principal for a presented key, or None if it is unknown, revoked or expired: answered from the
    process's cache when it can be, otherwise read on its own (`Database.glance`, which gets past pooled
    connections a database restart left dead), not in the request's transaction: a route that needs no
    database, or one that writes, does not start its transaction for the key."""
    digest = hash_key(plain)
    principal = cache.get(digest, now=now)
    if principal is not None:
        return principal
    generation = cache.generation
    rows = await db.glance(_KEY_ROW, {"digest": digest})
    if not rows:
        return None
    row = rows[0]
    principal = _principal(row, now=now)
    if principal is not None:
        cache.put(digest, principal, expires_at=row[4], generation=generation)  # expires_at: see _KEY_ROW
    return principal


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
        await revocations.announce(session)
    return key
