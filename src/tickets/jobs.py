"""Periodic jobs run inside every worker. Each is a set-based, idempotent statement, so several
workers (or a restart half-way) are harmless: the one that gets there first does the work."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable

from tickets.db import Database

log = logging.getLogger("tickets.jobs")

Job = Callable[[Database], Awaitable[int]]


async def run_periodically(db: Database, job: Job, *, name: str, interval: float) -> None:
    await asyncio.sleep(random.uniform(0, interval))  # spread workers out
    while True:
        try:
            count = await job(db)
            if count:
                log.info("%s: %d", name, count, extra={"event": name, "count": count})
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("job %s failed; will retry", name, extra={"event": name})
        await asyncio.sleep(interval)
