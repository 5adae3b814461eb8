"""Fixed-window rate limits: `120/minute` per client (or per key and device), `0` turns one off.

Counters live in process memory by default (each worker counts alone), or in Redis
(`RATE_LIMIT_STORAGE_URL=redis://…`) so that several workers and hosts share them.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol

from tickets.problems import RateLimited

_PERIODS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
_LIMIT = re.compile(r"^\s*(\d+)\s*/\s*(\d+)?\s*(second|minute|hour|day)s?\s*$")


@dataclass(frozen=True)
class RateLimit:
    count: int
    seconds: int


@lru_cache(maxsize=64)  # read on every scan and order
def parse_limit(text: str) -> RateLimit | None:
    """`"120/minute"` → 120 per 60 s; `"0"` or empty → no limit."""
    text = (text or "").strip().lower()
    if text in ("", "0", "off", "none"):
        return None
    m = _LIMIT.match(text)
    if m is None:
        raise ValueError(f"not a rate limit: {text!r} (use e.g. 120/minute, or 0 for none)")
    count, multiplier, unit = int(m.group(1)), int(m.group(2) or 1), m.group(3)
    return None if count == 0 else RateLimit(count=count, seconds=multiplier * _PERIODS[unit])


class Storage(Protocol):
    async def incr(self, key: str, window_seconds: int) -> int: ...

    async def close(self) -> None: ...


class MemoryStorage:
    def __init__(self) -> None:
        self._counts: dict[str, tuple[float, int]] = {}

    async def incr(self, key: str, window_seconds: int) -> int:
        now = time.monotonic()
        expires, count = self._counts.get(key, (0.0, 0))
        if expires <= now:
            expires, count = now + window_seconds, 0
        self._counts[key] = (expires, count + 1)
        if len(self._counts) > 100_000:  # forget finished windows
            self._counts = {k: v for k, v in self._counts.items() if v[0] > now}
        return count + 1

    async def close(self) -> None:
        self._counts.clear()


class RedisStorage:
    def __init__(self, url: str) -> None:
        import redis.asyncio as redis

        self._redis = redis.from_url(url)

    async def incr(self, key: str, window_seconds: int) -> int:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, window_seconds, nx=True)
            count, _ = await pipe.execute()
        return int(count)

    async def close(self) -> None:
        await self._redis.aclose()


class RateLimiter:
    def __init__(self, storage_url: str) -> None:
        self.storage: Storage = (
            RedisStorage(storage_url) if storage_url.startswith(("redis://", "rediss://")) else MemoryStorage()
        )

    async def check(self, bucket: str, identity: str, limit: RateLimit | None) -> None:
        """Count one hit; raise 429 `rate_limited` with Retry-After once the window is full."""
        if limit is None:
            return
        window = int(time.time()) // limit.seconds
        count = await self.storage.incr(f"tickets:rl:{bucket}:{identity}:{window}", limit.seconds)
        if count > limit.count:
            retry_after = max(1, (window + 1) * limit.seconds - int(time.time()))
            raise RateLimited(
                f"More than {limit.count} requests in {limit.seconds} s; retry in {retry_after} s.",
                retry_after=retry_after,
            )
