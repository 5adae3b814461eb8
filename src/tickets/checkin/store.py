"""The online scan's database work, in as few round trips as each engine allows.

An online scan (`POST /v1/scans`) reads, decides in Python, then writes once:

  look     one read: the ticket as it is now (with its type's and section's names) and the answer
           already given for this `scan_id`, if any (a retried scan gets that answer back, unchanged).
  admit    one atomic write, only when the read found the ticket admissible: lock the ticket row if it
           is still exactly as read (`status`, `version`, not checked in, same `updated_at`), log the
           scan as its counted admission, check the ticket in, and queue `ticket.checked_in`. It admits
           nothing when the ticket changed since the read (another scan admitted it first) or when the
           `scan_id` is already logged (the same scan, retried while in flight); the caller reads again.
  log      one write for any other verdict: the scan and its answer (nothing if the `scan_id` is
           already logged; the caller answers from the log).

On PostgreSQL each step is one statement in autocommit on the pooled asyncpg connection: no BEGIN and
COMMIT round trips, no ORM. `admit` is a single statement of data-modifying CTEs, so it is atomic on its
own: the ticket row is locked (`FOR UPDATE`, re-checked after any wait) before the scan is logged, and the
ticket is updated only if the log row went in. An admitted scan is two round trips; a refused one two; a
forged code one. On SQLite (one writer at a time) `admit` is a `BEGIN IMMEDIATE` transaction of the same
three writes through SQLAlchemy.

The decision (what the answer says) is made once, in `checkin.service`, for both.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, Protocol

import asyncpg
from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import col

from tickets.checkin.models import Scan, ScanResult, ScanSource
from tickets.db import READ_ONLY, Database
from tickets.problems import RETRYABLE_SQLSTATES, Busy
from tickets.seating.models import Section
from tickets.ticket_types.models import TicketType
from tickets.tickets.models import Ticket, TicketStatus
from tickets.webhooks.models import OutboxEvent


@dataclass(frozen=True)
class TicketFacts:
    """The ticket as a scan sees it (the columns of `TICKET_COLUMNS`, in order)."""

    id: str
    order_id: str
    ticket_type_id: str
    section_id: str
    seat_label: str | None
    table: str | None
    attendee_name: str | None
    status: str
    version: int
    checked_in_at: datetime | None
    checked_in_gate: str | None
    ticket_type_name: str | None
    section_name: str | None
    updated_at: datetime


@dataclass(frozen=True)
class Look:
    """What `look` found: the answer already given for the scan id (JSON text), and the ticket."""

    stored: str | None
    ticket: TicketFacts | None


@dataclass(frozen=True)
class ScanEntry:
    """One row of the scan log (online or offline), with the answer given as JSON text."""

    gala_id: str
    scan_id: str
    ticket_id: str | None
    ticket_version: int | None
    result: ScanResult
    reason: str | None
    counted: bool
    source: ScanSource
    gate: str | None
    device_id: str | None
    key_id: str
    scanned_at: datetime
    received_at: datetime
    response: str

    def columns(self) -> dict[str, Any]:
        """The row's values for a SQLAlchemy INSERT of `Scan`."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return {**values, "response": json.loads(self.response)}


@dataclass(frozen=True)
class CheckedInEvent:
    """The `ticket.checked_in` outbox event that an admission queues."""

    id: str
    gala_id: str
    data: str  # JSON text


class ScanStore(Protocol):
    async def look(self, *, gala_id: str, scan_id: str, ticket_id: str | None) -> Look: ...

    async def admit(self, entry: ScanEntry, *, seen: TicketFacts, event: CheckedInEvent) -> bool: ...

    async def log(self, entry: ScanEntry) -> bool: ...

    async def gala_tickets(self, gala_id: str, *, limit: int) -> list[TicketFacts]: ...


def store_for(db: Database) -> ScanStore:
    return SqliteScanStore(db) if db.is_sqlite else PostgresScanStore(db)


# --- PostgreSQL: one statement per step, asyncpg directly --------------------------------------------

_PG_TICKET_COLUMNS = """
       t.id, t.order_id, t.ticket_type_id, t.section_id, t.seat_label, t."table", t.attendee_name,
       t.status, t.version, t.checked_in_at, t.checked_in_gate,
       (SELECT tt.name FROM ticket_type tt WHERE tt.id = t.ticket_type_id) AS ticket_type_name,
       (SELECT se.name FROM section se WHERE se.id = t.section_id) AS section_name,
       t.updated_at"""

_PG_GALA_TICKETS = f"SELECT {_PG_TICKET_COLUMNS} FROM ticket t WHERE t.gala_id = $1 LIMIT $2"

_PG_LOOK = """
SELECT (SELECT s.response::text FROM scan s WHERE s.gala_id = $1 AND s.scan_id = $2) AS stored,"""
_PG_LOOK += (
    _PG_TICKET_COLUMNS
    + """
FROM (SELECT 1) AS one LEFT JOIN ticket t ON t.id = $3
"""
)

_PG_ADMIT = """
WITH candidate AS (
    -- Locked by primary key, then checked: the row as it is after any wait for another scan's lock.
    -- (The conditions stay out of this WHERE: with them, a generic plan may pick the partial index
    -- on valid tickets and filter a whole gala's tickets.)
    SELECT id, status, version, checked_in_at, updated_at FROM ticket WHERE id = $3 FOR UPDATE
), logged AS (
    INSERT INTO scan (gala_id, scan_id, ticket_id, ticket_version, result, reason, counted, source,
                      gate, device_id, key_id, scanned_at, received_at, response)
    SELECT $1, $2, candidate.id, $4, 'admitted', NULL, true, $13, $6, $7, $8, $9, $14, $10::json
    FROM candidate
    WHERE status = 'valid' AND version = $4 AND checked_in_at IS NULL AND updated_at = $5
    ON CONFLICT (gala_id, scan_id) DO NOTHING
    RETURNING ticket_id
), admitted AS (
    UPDATE ticket SET checked_in_at = $9, checked_in_gate = $6, updated_at = $14
    WHERE id = $3 AND EXISTS (SELECT FROM logged)  -- a key lookup (`id IN (SELECT …)` may plan a scan)
    RETURNING id
), queued AS (
    INSERT INTO outbox_event (id, type, gala_id, data, created_at)
    SELECT $11, 'ticket.checked_in', $1, $12::json, $14 FROM admitted
)
SELECT count(*) FROM admitted
"""

_PG_LOG = """
INSERT INTO scan (gala_id, scan_id, ticket_id, ticket_version, result, reason, counted, source,
                  gate, device_id, key_id, scanned_at, received_at, response)
VALUES ($1, $2, $3, $4, $5, $6, false, $7, $8, $9, $10, $11, $12, $13::json)
ON CONFLICT (gala_id, scan_id) DO NOTHING
RETURNING scan_id
"""


class PostgresScanStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def _run(self, sql: str, *args: Any, many: bool = False) -> Any:
        """One statement on the driver, in autocommit, through `Database.on_driver` (which gets past
        connections a restart left dead: every statement here may run twice; a scan that was logged before
        its connection died finds its log row and is answered from it)."""
        try:
            return await self._db.on_driver(
                lambda driver: driver.fetch(sql, *args) if many else driver.fetchrow(sql, *args)
            )
        except asyncpg.exceptions.PostgresError as exc:
            if exc.sqlstate in RETRYABLE_SQLSTATES:
                raise Busy("The ticket is changing; scan again.") from exc
            raise

    async def look(self, *, gala_id: str, scan_id: str, ticket_id: str | None) -> Look:
        row = await self._run(_PG_LOOK, gala_id, scan_id, ticket_id)
        ticket = TicketFacts(*row[1:]) if row["id"] is not None else None
        return Look(stored=row["stored"], ticket=ticket)

    async def admit(self, entry: ScanEntry, *, seen: TicketFacts, event: CheckedInEvent) -> bool:
        try:
            row = await self._run(
                _PG_ADMIT,
                entry.gala_id,
                entry.scan_id,
                seen.id,
                seen.version,
                seen.updated_at,
                entry.gate,
                entry.device_id,
                entry.key_id,
                entry.scanned_at,
                entry.response,
                event.id,
                event.data,
                entry.source.value,
                entry.received_at,
            )
        except asyncpg.exceptions.UniqueViolationError:
            return False  # a counted admission of this ticket appeared meanwhile: read again
        return bool(row[0])

    async def log(self, entry: ScanEntry) -> bool:
        row = await self._run(
            _PG_LOG,
            entry.gala_id,
            entry.scan_id,
            entry.ticket_id,
            entry.ticket_version,
            entry.result.value,
            entry.reason,
            entry.source.value,
            entry.gate,
            entry.device_id,
            entry.key_id,
            entry.scanned_at,
            entry.received_at,
            entry.response,
        )
        return row is not None

    async def gala_tickets(self, gala_id: str, *, limit: int) -> list[TicketFacts]:
        return [TicketFacts(*row) for row in await self._run(_PG_GALA_TICKETS, gala_id, limit, many=True)]


# --- SQLite (and any other engine): the same steps through SQLAlchemy ---------------------------------

TICKET_COLUMNS: tuple[Any, ...] = (
    col(Ticket.id),
    col(Ticket.order_id),
    col(Ticket.ticket_type_id),
    col(Ticket.section_id),
    col(Ticket.seat_label),
    col(Ticket.table),
    col(Ticket.attendee_name),
    col(Ticket.status),
    col(Ticket.version),
    col(Ticket.checked_in_at),
    col(Ticket.checked_in_gate),
    select(col(TicketType.name))
    .where(col(TicketType.id) == col(Ticket.ticket_type_id))
    .correlate(Ticket)
    .scalar_subquery()
    .label("ticket_type_name"),
    select(col(Section.name))
    .where(col(Section.id) == col(Ticket.section_id))
    .correlate(Ticket)
    .scalar_subquery()
    .label("section_name"),
    col(Ticket.updated_at),
)

_LOOK_TICKET = select(*TICKET_COLUMNS).where(col(Ticket.id) == bindparam("ticket_id"))
_GALA_TICKETS = select(*TICKET_COLUMNS).where(col(Ticket.gala_id) == bindparam("gala_id")).limit(bindparam("limit"))
_LOOK_STORED = select(col(Scan.response)).where(
    col(Scan.gala_id) == bindparam("gala_id"), col(Scan.scan_id) == bindparam("scan_id")
)
_CHECK_IN = (
    update(Ticket)
    .where(
        col(Ticket.id) == bindparam("p_ticket_id"),
        col(Ticket.status) == TicketStatus.valid,
        col(Ticket.version) == bindparam("p_version"),
        col(Ticket.checked_in_at).is_(None),
        col(Ticket.updated_at) == bindparam("p_seen"),
    )
    .values(checked_in_at=bindparam("p_at"), checked_in_gate=bindparam("p_gate"), updated_at=bindparam("p_now"))
    .returning(col(Ticket.id))
)
# The log INSERT of any scan: nothing (no row back) when its (gala, scan_id) is logged already.
LOG_SCAN = {
    name: dialect.insert(Scan)
    .on_conflict_do_nothing(index_elements=["gala_id", "scan_id"])
    .returning(col(Scan.scan_id))
    for name, dialect in (("postgresql", postgresql), ("sqlite", sqlite))
}
_QUEUE = insert(OutboxEvent)


class SqliteScanStore:
    def __init__(self, db: Database) -> None:
        self._engine = db.engine
        self._read = db.engine.execution_options(**{READ_ONLY: True})  # a deferred BEGIN: never waits on writers

    async def look(self, *, gala_id: str, scan_id: str, ticket_id: str | None) -> Look:
        async with self._read.connect() as conn:
            stored = (await conn.execute(_LOOK_STORED, {"gala_id": gala_id, "scan_id": scan_id})).scalar()
            row = None
            if ticket_id is not None:
                row = (await conn.execute(_LOOK_TICKET, {"ticket_id": ticket_id})).first()
        return Look(
            # compact, as pydantic wrote it: a replay is the same bytes as the first answer
            stored=json.dumps(stored, separators=(",", ":"), ensure_ascii=False) if stored is not None else None,
            ticket=TicketFacts(*row) if row is not None else None,
        )

    async def admit(self, entry: ScanEntry, *, seen: TicketFacts, event: CheckedInEvent) -> bool:
        # A write transaction (BEGIN IMMEDIATE); leaving the block without commit rolls it back. Lock
        # contention reaches the app's handler as `409 busy`.
        async with self._engine.connect() as conn:
            params = {"p_ticket_id": seen.id, "p_version": seen.version, "p_seen": seen.updated_at}
            at = {"p_at": entry.scanned_at, "p_now": entry.received_at, "p_gate": entry.gate}
            checked_in = await conn.execute(_CHECK_IN, {**params, **at})
            if checked_in.first() is None or not await self._insert(conn, entry):
                return False
            await conn.execute(
                _QUEUE,
                {
                    "id": event.id,
                    "type": "ticket.checked_in",
                    "gala_id": event.gala_id,
                    "data": json.loads(event.data),
                    "created_at": entry.received_at,
                },
            )
            await conn.commit()
        return True

    async def log(self, entry: ScanEntry) -> bool:
        async with self._engine.connect() as conn:
            logged = await self._insert(conn, entry)
            await conn.commit()
        return logged

    async def gala_tickets(self, gala_id: str, *, limit: int) -> list[TicketFacts]:
        async with self._read.connect() as conn:
            rows = await conn.execute(_GALA_TICKETS, {"gala_id": gala_id, "limit": limit})
            return [TicketFacts(*row) for row in rows]

    @staticmethod
    async def _insert(conn: AsyncConnection, entry: ScanEntry) -> bool:
        return (await conn.execute(LOG_SCAN[conn.dialect.name], entry.columns())).first() is not None
