"""Cursor pagination: every list is `{"data": [...], "next_cursor": ...}`, ordered by (created_at, id)."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Query
from pydantic import BaseModel
from sqlalchemy import Select, and_, or_
from sqlmodel.ext.asyncio.session import AsyncSession

from tickets.clock import as_utc
from tickets.problems import BadRequest


class InvalidCursor(BadRequest):
    code, title = "invalid_cursor", "Invalid cursor"


Limit = Annotated[int, Query(ge=1, le=200, description="Page size (default 50, at most 200).")]
Cursor = Annotated[str | None, Query(max_length=300, description="`next_cursor` of the previous page.")]


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    data: list[T]
    next_cursor: str | None = None


def encode_cursor(created_at: datetime, row_id: str) -> str:
    raw = json.dumps([as_utc(created_at).isoformat(), row_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, row_id = json.loads(raw)
        return as_utc(datetime.fromisoformat(created)), str(row_id)
    except (ValueError, TypeError, json.JSONDecodeError) as exc:
        raise InvalidCursor("The cursor is not one this API returned.") from exc


async def paginate(
    session: AsyncSession,
    stmt: Select[Any],
    *,
    created_col: Any,
    id_col: Any,
    limit: int,
    cursor: str | None,
    whole_rows: bool = False,
) -> tuple[list[Any], str | None]:
    """Run `stmt` for one page after `cursor`, ordered by (`created_col`, `id_col`) of its first entity.
    Returns that entity of each row, or with `whole_rows` the rows themselves (the keyed entity first)."""
    if cursor:
        created, row_id = decode_cursor(cursor)
        stmt = stmt.where(or_(created_col > created, and_(created_col == created, id_col > row_id)))
    result = await session.execute(stmt.order_by(created_col, id_col).limit(limit + 1))
    rows = list(result.all() if whole_rows else result.scalars())
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        last = rows[-1][0] if whole_rows else rows[-1]
        next_cursor = encode_cursor(getattr(last, created_col.key), getattr(last, id_col.key))
    return rows, next_cursor


async def each_page(fetch: Callable[[str | None], Awaitable[tuple[list[T], str | None]]]) -> AsyncIterator[list[T]]:
    """Every page of a list, first to last: `fetch(cursor)` returns a page and the next cursor (exports)."""
    cursor: str | None = None
    while True:
        page, cursor = await fetch(cursor)
        yield page
        if cursor is None:
            return
