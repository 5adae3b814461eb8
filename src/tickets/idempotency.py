"""Idempotent writes: the first answer to an `Idempotency-Key` is stored and replayed.

The key is claimed in a transaction of its own (a unique row, state `in_flight`) before the work
starts, so two concurrent requests with one key can never both do the work: the second sees the
claim and gets `409 busy`. A success is written in the request's own transaction, atomically with
the work itself; a refusal that will not change on retry (a 4xx other than 409 busy and 429) is
stored after the rollback. Answers meant to be retried (409 busy, 429, 5xx) are not stored: the
claim is dropped instead.

Work that is one transaction from start to end (`atomic`: an order paid at once, say) needs no claim:
its answer is written as the key's finished row in that very transaction. Two concurrent requests with
one key may then both do the work, but only one can commit it: the other's row collides with the
first's on the key's unique index (on PostgreSQL it waits there until the first commits), so its whole
transaction is rolled back and it replays the first answer. No write of the key's own: its row goes
in with the work's last write (`Keep`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from fastapi import Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import Insert, bindparam, delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from tickets.clock import utc_now
from tickets.db import Database
from tickets.ids import new_id
from tickets.orders.errors import IdempotencyKeyReused
from tickets.orders.models import IdempotencyRecord
from tickets.problems import PROBLEM_MEDIA_TYPE, Busy, ProblemError, ValidationFailed, problem_from_error

STALE_AFTER = timedelta(minutes=2)  # a claim this old belongs to a crashed request: take it over

# Built once: every request with a key runs them, and a prebuilt statement skips SQLAlchemy's
# per-call construction and cache-key work.
_CLAIM = insert(IdempotencyRecord)
_FINISH = (
    update(IdempotencyRecord)
    .where(col(IdempotencyRecord.id) == bindparam("record_id"))
    .values(state="done", status_code=bindparam("answer_status"), response_body=bindparam("answer_body"))
)
_FORGET = delete(IdempotencyRecord).where(col(IdempotencyRecord.id) == bindparam("record_id"))


def _hash(body: BaseModel) -> str:
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _encode(result: Any) -> Any:
    """The answer as JSON-ready data. A pydantic model dumps itself in one pass (what `jsonable_encoder`
    does first, before walking the dumped data a second time)."""
    if isinstance(result, BaseModel):
        return result.model_dump(mode="json", by_alias=True)
    return jsonable_encoder(result)


def _retryable(status: int) -> bool:
    return status >= 500 or status == 429


async def _claim(db: Database, *, scope: str, key: str, request_hash: str) -> IdempotencyRecord | str:
    """Claim the key; returns the record id, or the finished record to replay."""
    now = utc_now()
    record_id = new_id("idem")
    try:
        await db.write_alone(
            _CLAIM,
            {
                "id": record_id,
                "scope": scope,
                "key": key,
                "request_hash": request_hash,
                "state": "in_flight",
                "created_at": now,
            },
        )
        return record_id
    except IntegrityError:
        pass
    async with db.sessions() as s:
        existing: IdempotencyRecord | None = (
            await s.execute(
                select(IdempotencyRecord).where(
                    col(IdempotencyRecord.scope) == scope, col(IdempotencyRecord.key) == key
                )
            )
        ).scalar_one_or_none()
        if existing is None:
            raise Busy("The Idempotency-Key is being released; retry.")
        if existing.request_hash != request_hash:
            raise IdempotencyKeyReused("This Idempotency-Key was already used with a different request body.")
        if existing.state == "done":
            return existing
        if existing.created_at > now - STALE_AFTER:
            raise Busy("A request with this Idempotency-Key is still being processed.", retry_after=1)
        taken = await s.execute(
            update(IdempotencyRecord)
            .where(col(IdempotencyRecord.id) == existing.id, col(IdempotencyRecord.created_at) == existing.created_at)
            .values(created_at=now)
        )
        await s.commit()
        if taken.rowcount != 1:  # type: ignore[attr-defined]
            raise Busy("A request with this Idempotency-Key is still being processed.", retry_after=1)
        return existing.id


async def _store_refusal(
    db: Database, *, scope: str, key: str, request_hash: str, request: Request, exc: ProblemError
) -> bool:
    """Store a refusal as the key's finished answer in one write; False if the key is taken already."""
    try:
        await db.write_alone(
            _CLAIM,
            {
                "id": new_id("idem"),
                "scope": scope,
                "key": key,
                "request_hash": request_hash,
                "state": "done",
                "status_code": exc.status,
                "response_body": _problem_body(request, exc),
                "created_at": utc_now(),
            },
        )
    except IntegrityError:
        return False
    return True


def _problem_body(request: Request, exc: ProblemError) -> str:
    """The problem document of a refusal, as it is stored for replays."""
    return bytes(problem_from_error(request, exc).body).decode()


async def _forget(db: Database, record_id: str) -> None:
    await db.write_alone(_FORGET, {"record_id": record_id})


async def run(
    request: Request,
    session: AsyncSession,
    *,
    scope: str,
    key: str | None,
    body: BaseModel,
    status_code: int,
    handler: Callable[..., Awaitable[Any]],
    refusal: Callable[[], Awaitable[None]] | None = None,
    atomic: Callable[[], bool] | None = None,
) -> JSONResponse:
    """Run `handler` at most once per (scope, key); replay its stored answer to retries.

    `refusal`, if given, runs first, outside any transaction: a quick check that raises the problem
    the handler would raise anyway (say, a seat already sold). Such a refusal is stored as the key's
    answer in one write, with no claim first; if the key was used before, the stored answer wins.
    `atomic`, asked after `refusal`, says whether `handler` does all its work in `session`'s transaction,
    without committing: then its answer is stored in that transaction, with no claim (see above), and
    `handler` is called with a `Keep`, whose rows it may insert with its own last write. The handler
    may run again (after a rollback) if the key turns out to be free after all."""
    if key is not None and (not (1 <= len(key) <= 255) or not key.isprintable()):
        raise ValidationFailed(
            "Idempotency-Key must be 1 to 255 printable characters.",
            errors=[{"loc": ["header", "Idempotency-Key"], "msg": "1 to 255 printable characters"}],
        )
    db: Database = request.app.state.db
    request_hash = _hash(body) if key is not None else ""
    if refusal is not None:
        try:
            await refusal()
        except ProblemError as exc:
            if key is None or _retryable(exc.status) or isinstance(exc, Busy):
                raise
            if await _store_refusal(db, scope=scope, key=key, request_hash=request_hash, request=request, exc=exc):
                raise
            # The key was used before: the claim below finds its first answer (or its request in flight).
    if key is None:
        return JSONResponse(_encode(await handler()), status_code=status_code)
    if atomic is not None and atomic():
        answer = await _run_atomic(
            request, session, scope=scope, key=key, request_hash=request_hash, status_code=status_code, handler=handler
        )
        if answer is not None:
            return answer
        # The key was used before: the claim below finds its first answer (or its request in flight).
    # End the request's transaction so far (the key lookup): on SQLite it would hold the write lock
    # that the claim's own transaction needs.
    await session.commit()
    claimed = await _claim(db, scope=scope, key=key, request_hash=request_hash)
    if isinstance(claimed, IdempotencyRecord):
        media = PROBLEM_MEDIA_TYPE if (claimed.status_code or 200) >= 400 else "application/json"
        return JSONResponse(
            json.loads(claimed.response_body or "null"),
            status_code=claimed.status_code or 200,
            media_type=media,
            headers={"Idempotent-Replayed": "true"},
        )
    record_id = claimed
    try:
        result = _encode(await handler())
    except ProblemError as exc:
        await session.rollback()
        if _retryable(exc.status) or isinstance(exc, Busy):
            await _forget(db, record_id)
        else:
            await db.write_alone(
                _FINISH,
                {"record_id": record_id, "answer_status": exc.status, "answer_body": _problem_body(request, exc)},
            )
        raise
    except BaseException:
        await session.rollback()
        await _forget(db, record_id)
        raise
    response = JSONResponse(result, status_code=status_code)  # rendered once: sent, and stored for replays
    conn = await session.connection()
    await conn.execute(
        _FINISH, {"record_id": record_id, "answer_status": status_code, "answer_body": bytes(response.body).decode()}
    )
    return response


@dataclass
class Keep:
    """Given to an atomic run's handler (see `run`): `rows(result)` renders the answer once and returns the
    key's finished row, for the handler to insert with its own last write (one round trip fewer)."""

    scope: str
    key: str
    request_hash: str
    status_code: int
    response: JSONResponse | None = None

    def rows(self, result: Any) -> list[tuple[Insert, list[dict[str, Any]]]]:
        self.response = JSONResponse(_encode(result), status_code=self.status_code)  # sent, and stored
        row = {
            "id": new_id("idem"),
            "scope": self.scope,
            "key": self.key,
            "request_hash": self.request_hash,
            "state": "done",
            "status_code": self.status_code,
            "response_body": bytes(self.response.body).decode(),
            "created_at": utc_now(),
        }
        return [(_CLAIM, [row])]


def _key_taken(exc: IntegrityError) -> bool:
    """The unique (scope, key) of `idempotency_record` refused a row (not another table's constraint)."""
    return "idempotency_record" in str(exc.orig)


async def _run_atomic(
    request: Request,
    session: AsyncSession,
    *,
    scope: str,
    key: str,
    request_hash: str,
    status_code: int,
    handler: Callable[..., Awaitable[Any]],
) -> JSONResponse | None:
    """Run `handler` and write its answer as the key's finished row in the same transaction (with the
    handler's own last write if it takes the `Keep`); None (and nothing done: all rolled back) if the key
    was taken already."""
    db: Database = request.app.state.db
    keep = Keep(scope=scope, key=key, request_hash=request_hash, status_code=status_code)
    try:
        result = await handler(keep)
        if keep.response is None:  # the handler wrote nothing of its own to join: the row goes alone
            ((statement, rows),) = keep.rows(result)
            await (await session.connection()).execute(statement, rows)
    except IntegrityError as exc:
        await session.rollback()
        if not _key_taken(exc):
            raise
        return None  # the work too is undone: the first request with this key did it
    except ProblemError as exc:
        await session.rollback()
        if _retryable(exc.status) or isinstance(exc, Busy):
            raise
        if await _store_refusal(db, scope=scope, key=key, request_hash=request_hash, request=request, exc=exc):
            raise
        return None
    except BaseException:
        await session.rollback()
        raise
    return keep.response
