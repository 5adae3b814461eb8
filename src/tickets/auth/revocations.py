"""Telling every worker process that an API key was revoked, so that none keeps accepting it from its cache.

On PostgreSQL the revoking transaction sends a notification (`pg_notify`, delivered when it commits) and
each worker listens on a connection of its own, outside the pool; on a notification it forgets its cached
keys. If the listening connection drops, the worker forgets its cache (a revocation may have been missed)
and connects again; until then the cache's own short lifetime (`API_KEY_CACHE_SECONDS`) still bounds how
long a revoked key can pass. SQLite has no notifications: there, other workers rely on that lifetime.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import asyncpg
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlmodel.ext.asyncio.session import AsyncSession

log = logging.getLogger(__name__)

CHANNEL = "tickets_api_key_revoked"
_NOTIFY = text(f"SELECT pg_notify('{CHANNEL}', '')")
RECONNECT_SECONDS = (0.5, 1, 2, 5, 10)


async def announce(session: AsyncSession) -> None:
    """In the revoking transaction: every listening worker hears of it when (and only if) it commits."""
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(_NOTIFY)


def _dsn(database_url: str) -> str:
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


async def listen(database_url: str, on_revoked: Callable[[], None]) -> None:
    """Call `on_revoked` for every revocation announced, until cancelled (PostgreSQL only)."""
    failures = 0
    while True:
        try:
            await _listen_once(_dsn(database_url), on_revoked)
            failures = 0
            log.warning("api key revocation listener lost its connection", extra={"event": "auth.listener_lost"})
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            log.warning(
                "api key revocation listener cannot connect: %s",
                type(exc).__name__,
                extra={"event": "auth.listener_error"},
            )
        on_revoked()  # a revocation may have been missed while not listening
        await asyncio.sleep(RECONNECT_SECONDS[min(failures, len(RECONNECT_SECONDS) - 1)])
        failures += 1


async def _listen_once(dsn: str, on_revoked: Callable[[], None]) -> None:
    """Listen on one connection until it is lost."""
    connection = await asyncpg.connect(dsn, timeout=10)
    try:
        closed = asyncio.Event()
        connection.add_termination_listener(lambda _conn: closed.set())
        await connection.add_listener(CHANNEL, lambda *_args: on_revoked())
        on_revoked()  # anything revoked before we listened
        await closed.wait()
    finally:
        if not connection.is_closed():
            await connection.close(timeout=2)
