"""Check-in at the door: the scan (the hot path), undo, offline uploads, stats and the offline bundle.

A scan is admitted by the database, never by a read followed by a blind write: the admission is a
conditional write that succeeds only if the ticket is valid, of the scanned version, not checked in, and
unchanged since it was read, so of any number of concurrent scans exactly one admits (on PostgreSQL the
others wait on its row lock, then find `checked_in_at` set; on SQLite writers take turns under `BEGIN
IMMEDIATE`). A partial unique index on the scan log (one `counted` admission per ticket) states the
same rule a second time.

Round trips for one online scan (`record_scan`, statements in `checkin.store`; the API key and the gala
are cached per process, Ed25519 public keys derived once per gala and process):
  admitted             1: the admission (lock, log, check in, queue `ticket.checked_in`) when the
                       process's hint of the gala's tickets shows the ticket admissible; otherwise a read
                       of the ticket first (2)
  any other verdict    2: a read of the ticket (and of any answer to the scan_id), the log INSERT
  malformed or forged  1: the log INSERT
  wrong gala           1: the log INSERT (the other gala's title comes from the cache)
  repeated scan_id     the first answer, from the log (a read; or the admission finds its log row)
Offline uploads (`record_batch`) are decided in the upload's own transaction, one scan after another.

Write order is always ticket, then scan (undo locks the ticket first too), so that check-in writes never
wait on each other in opposite orders.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import and_, bindparam, func, or_, select, update
from sqlalchemy.engine import Row
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from tickets.auth.service import Principal
from tickets.checkin.errors import (
    AdmissionSuperseded,
    AmbiguousScanId,
    NotAnAdmission,
    ScanAlreadyUndone,
    ScanNotFound,
)
from tickets.checkin.models import Scan, ScanResult, ScanSource
from tickets.checkin.schemas import (
    ArrivalBucket,
    BatchResult,
    BatchScan,
    CheckinStats,
    GateCount,
    NamedItem,
    ResultCount,
    ScanRead,
    ScanSync,
    ScanTicket,
    SyncTicket,
    TicketTypeCount,
    UndoRead,
)
from tickets.checkin.store import LOG_SCAN, TICKET_COLUMNS, CheckedInEvent, ScanEntry, ScanStore, TicketFacts
from tickets.db import Database
from tickets.galas.errors import GalaNotFound
from tickets.galas.models import Gala
from tickets.ids import new_id
from tickets.keys import KeyRing
from tickets.pagination import InvalidCursor, decode_cursor, encode_cursor
from tickets.problems import Busy
from tickets.seating.models import Section
from tickets.ticket_types.models import TicketType
from tickets.tickets import codes
from tickets.tickets.models import Ticket, TicketStatus
from tickets.webhooks import outbox

log = logging.getLogger("tickets.checkin")

# A key's devices together may scan this many times the per-device limit (RATE_LIMIT_SCANS).
KEY_LIMIT_FACTOR = 4
# The sync cursor trails the clock by this much: a ticket change is stamped with `updated_at` before its
# transaction commits, so a change committed just after a sync may carry an earlier stamp than the newest
# row that sync saw. Re-sending the last seconds costs a few duplicate rows, which clients apply idempotently.
SYNC_OVERLAP = timedelta(seconds=30)
BATCH_COMMIT_EVERY = 50
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# --- per-process cache -------------------------------------------------------------------------------


@dataclass(frozen=True)
class GalaInfo:
    id: str
    title: str
    starts_at: datetime
    timezone: ZoneInfo


class DoorCache:
    """What every scan needs and almost never changes, kept per process: each gala's Ed25519 public key
    (derived from SECRET_KEY), the gala's title and time zone (re-read after `ttl` seconds), and
    the gala's tickets as last read (`ticket_hint`).

    The tickets are only ever a hint: a scan whose ticket the hint shows admissible tries the one atomic
    admission at once, and the database admits only if the ticket is still exactly as the hint says
    (same `updated_at`); anything else (no hint, a stale one, a refusal) is decided from a fresh read. So
    a gala's door rush costs one round trip per admission, and a stale hint costs a read, never a wrong
    answer."""

    MAX_KEYS = 1024
    MAX_HINTS = 200_000  # tickets held over all galas; a gala beyond it is scanned without hints

    def __init__(self, keys: KeyRing, db: Database, store: ScanStore, *, ttl: float = 60.0) -> None:
        self._keys = keys
        self._db = db
        self._store = store
        self._ttl = ttl
        # Bounded: a forged code can name any gala id, and each derivation would otherwise stay here.
        self._public: OrderedDict[str, bytes] = OrderedDict()
        self._galas: dict[str, tuple[float, GalaInfo]] = {}
        # gala id -> (read again after, tickets by id), most recently used last
        self._hints: OrderedDict[str, tuple[float, dict[str, TicketFacts]]] = OrderedDict()
        self._loading: dict[str, asyncio.Task[None]] = {}

    def ticket_hint(self, gala_id: str, ticket_id: str) -> TicketFacts | None:
        """The ticket as last read with its gala's tickets, if at hand. The first call for a gala (and the
        first after `ttl`) starts reading them in the background and returns None meanwhile."""
        entry = self._hints.get(gala_id)
        if entry is None or entry[0] <= time.monotonic():
            self._load_hints(gala_id)
        if entry is None:
            return None
        self._hints.move_to_end(gala_id)
        return entry[1].get(ticket_id)

    def note_admitted(self, gala_id: str, facts: TicketFacts) -> None:
        """Our own admission, so that this process's next scan of the ticket goes straight to a read."""
        entry = self._hints.get(gala_id)
        if entry is not None and facts.id in entry[1]:
            entry[1][facts.id] = facts

    def _load_hints(self, gala_id: str) -> None:
        if gala_id in self._loading:
            return
        task = asyncio.get_running_loop().create_task(self._read_hints(gala_id))
        self._loading[gala_id] = task
        task.add_done_callback(lambda _: self._loading.pop(gala_id, None))

    async def _read_hints(self, gala_id: str) -> None:
        until = time.monotonic() + self._ttl
        try:
            tickets = await self._store.gala_tickets(gala_id, limit=self.MAX_HINTS)
        except Exception:  # a hint is optional: scans go on by reads; try again after `ttl`
            log.warning("checkin.hints_failed", extra={"gala_id": gala_id}, exc_info=True)
            tickets = None
        self._hints.pop(gala_id, None)
        self._hints[gala_id] = (until, {t.id: t for t in tickets or ()})
        while sum(len(h) for _, h in self._hints.values()) > self.MAX_HINTS and len(self._hints) > 1:
            self._hints.popitem(last=False)

    async def close(self) -> None:
        """Stop reading hints (the app is shutting down)."""
        for task in list(self._loading.values()):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def public_key(self, gala_id: str) -> bytes:
        key = self._public.get(gala_id)
        if key is None:
            key = codes.public_key(self._keys, gala_id)
            self._public[gala_id] = key
            if len(self._public) > self.MAX_KEYS:
                self._public.popitem(last=False)
        else:
            self._public.move_to_end(gala_id)
        return key

    def public_key_b64(self, gala_id: str) -> str:
        return base64.b64encode(self.public_key(gala_id)).decode()

    async def gala(self, gala_id: str) -> GalaInfo:
        """The gala (cached); GalaNotFound when there is none."""
        info = await self.find(gala_id)
        if info is None:
            raise GalaNotFound(f"No gala {gala_id}.")
        return info

    async def find(self, gala_id: str) -> GalaInfo | None:
        """The gala (cached, read in a short read-only transaction of its own), None when there is none."""
        cached = self._galas.get(gala_id)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        async with self._db.read_sessions() as session:
            row = (
                await session.execute(
                    select(col(Gala.id), col(Gala.title), col(Gala.starts_at), col(Gala.timezone)).where(
                        col(Gala.id) == gala_id
                    )
                )
            ).first()
        if row is None:
            return None
        info = GalaInfo(id=row.id, title=row.title, starts_at=row.starts_at, timezone=_zone(row.timezone))
        if len(self._galas) > 10_000:
            self._galas.clear()
        self._galas[gala_id] = (time.monotonic() + self._ttl, info)
        return info


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


# --- deciding one scan ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """A verdict reached from the code alone, before the database is asked."""

    result: ScanResult
    reason: str
    message: str
    other_gala_id: str | None = None


def check_code(cache: DoorCache, code: str, gala_id: str) -> codes.CodePayload | Verdict:
    """Parse and verify a code for a gala: its payload, or the verdict when it cannot admit anyone."""
    try:
        payload, body, signature = codes.parse(code.strip())
    except codes.MalformedCode:
        return Verdict(ScanResult.invalid, "malformed", "Not a ticket code. Do not admit.")
    if not codes.verify(cache.public_key(payload.gala_id), body, signature):
        return Verdict(
            ScanResult.invalid, "forged", "Forged or damaged code: its signature does not match. Do not admit."
        )
    if payload.gala_id != gala_id:
        return Verdict(
            ScanResult.wrong_gala, "other_gala", "This ticket is for another event.", other_gala_id=payload.gala_id
        )
    return payload


def _admit_statement(*, earlier_than_recorded: bool) -> Any:
    checked_in = col(Ticket.checked_in_at)
    return (
        update(Ticket)
        .where(
            col(Ticket.id) == bindparam("p_ticket_id"),
            col(Ticket.status) == TicketStatus.valid,
            col(Ticket.version) == bindparam("p_version"),
            checked_in > bindparam("p_at") if earlier_than_recorded else checked_in.is_(None),
        )
        .values(checked_in_at=bindparam("p_at"), checked_in_gate=bindparam("p_gate"), updated_at=bindparam("p_now"))
        .returning(*TICKET_COLUMNS)
    )


# Built once: every scan runs one of them (a prebuilt statement skips construction and cache-key work).
_ADMIT = _admit_statement(earlier_than_recorded=False)
_ADMIT_EARLIER = _admit_statement(earlier_than_recorded=True)


async def _admit(
    session: AsyncSession,
    payload: codes.CodePayload,
    *,
    at: datetime,
    gate: str | None,
    now: datetime,
    earlier_than_recorded: bool = False,
) -> Row[Any] | None:
    """The one conditional UPDATE that admits: the ticket's row, or None when it could not be admitted.
    With `earlier_than_recorded`, it instead moves an existing check-in back to `at` (an offline scan
    that proves an earlier admission)."""
    conn = await session.connection()  # Core: the ticket row is not in the session
    result = await conn.execute(
        _ADMIT_EARLIER if earlier_than_recorded else _ADMIT,
        {"p_ticket_id": payload.ticket_id, "p_version": payload.version, "p_at": at, "p_gate": gate, "p_now": now},
    )
    return result.first()


async def _read_ticket(session: AsyncSession, ticket_id: str) -> Row[Any] | None:
    return (await session.execute(select(*TICKET_COLUMNS).where(col(Ticket.id) == ticket_id))).first()


# A ticket as read for a scan: `TicketFacts` (online) or a row of `TICKET_COLUMNS` (offline, undo).
TicketRow = TicketFacts | Row[Any]


def _classify(row: TicketRow | None, payload: codes.CodePayload) -> tuple[ScanResult, str] | None:
    """Why a code did not admit, from the ticket as it is; None when it is admissible after all (it was
    released between our UPDATE and this read: try again)."""
    if row is None or payload.version > row.version:
        return ScanResult.invalid, "unknown_ticket"
    if row.status != TicketStatus.valid:
        return ScanResult.void, "void"
    if payload.version < row.version:
        return ScanResult.void, "superseded"
    if row.checked_in_at is not None:
        return ScanResult.already_checked_in, "already_checked_in"
    return None


def _ticket(row: TicketRow) -> ScanTicket:
    return ScanTicket(
        id=row.id,
        attendee_name=row.attendee_name,
        ticket_type_id=row.ticket_type_id,
        ticket_type_name=row.ticket_type_name,
        section_id=row.section_id,
        section_name=row.section_name,
        seat_label=row.seat_label,
        table=row.table,
        status=TicketStatus(row.status),
        version=row.version,
    )


def _place(ticket: ScanTicket) -> str:
    if ticket.seat_label:
        return f"seat {ticket.seat_label}"
    if ticket.table:
        return f"table {ticket.table}"
    return ticket.section_name or "general admission"


def _local(moment: datetime, gala: GalaInfo, now: datetime) -> str:
    local = moment.astimezone(gala.timezone)
    if local.date() == now.astimezone(gala.timezone).date():
        return local.strftime("%H:%M")
    return local.strftime("%b %d %H:%M")


def _message(
    result: ScanResult, reason: str | None, ticket: ScanTicket, row: TicketRow, gala: GalaInfo, now: datetime
) -> str:
    name = ticket.attendee_name or "guest"
    who = f"{name}, {ticket.ticket_type_name or 'ticket'}, {_place(ticket)}"
    if result == ScanResult.admitted:
        return f"Admit {who}."
    if result == ScanResult.already_checked_in:
        gate = f" at gate {row.checked_in_gate}" if row.checked_in_gate else ""
        first = row.checked_in_at
        assert first is not None
        return f"Already checked in at {_local(first, gala, now)}{gate}: {who}."
    if reason == "superseded":
        return f"Old code: this ticket was transferred and reissued (now version {ticket.version}). Do not admit."
    return f"Void ticket (cancelled or refunded): {name}. Do not admit."


@dataclass
class Decision:
    result: ScanResult
    reason: str | None
    message: str
    ticket_row: TicketRow | None = None
    ticket_id: str | None = None
    version: int | None = None
    admitted: bool = False
    replaced: bool = False


async def _decide_offline(
    session: AsyncSession,
    cache: DoorCache,
    gala: GalaInfo,
    code: str,
    *,
    at: datetime,
    gate: str | None,
    now: datetime,
) -> Decision:
    """An uploaded offline scan, decided in the upload's transaction (online scans: `record_scan`)."""
    checked = check_code(cache, code, gala.id)
    if isinstance(checked, Verdict):
        message = checked.message
        if checked.other_gala_id is not None:
            message = await _other_gala_message(cache, checked.other_gala_id, gala)
        return Decision(checked.result, checked.reason, message)
    payload = checked
    for _ in range(3):
        row = await _admit(session, payload, at=at, gate=gate, now=now)
        replaced = False
        if row is None:
            # An offline admission earlier than the recorded one takes its place: the earliest stands.
            row = await _admit(session, payload, at=at, gate=gate, now=now, earlier_than_recorded=True)
            replaced = row is not None
        if row is not None:
            if replaced:
                await session.execute(
                    update(Scan)
                    .where(col(Scan.ticket_id) == payload.ticket_id, col(Scan.counted).is_(True))
                    .values(counted=False)
                    .execution_options(synchronize_session=False)
                )
            return _admission(row, payload, gala, now, replaced=replaced)
        row = await _read_ticket(session, payload.ticket_id)
        verdict = _classify(row, payload)
        if verdict is None:
            continue  # undone between the UPDATE and the read: the next UPDATE will admit
        return _refusal(verdict, row, payload, gala, now)
    raise Busy("The ticket is changing; scan again.")


async def _other_gala_message(cache: DoorCache, other_gala_id: str, gala: GalaInfo) -> str:
    other = await cache.find(other_gala_id)
    if other is None:
        return "This ticket is for another event. Do not admit."
    day = other.starts_at.astimezone(gala.timezone).strftime("%b %d")
    return f"This ticket is for another event: {other.title} ({day}). Do not admit."


def _answer(decision: Decision, *, scan_id: str, gala_id: str, scanned_at: datetime) -> ScanRead:
    row = decision.ticket_row
    show_ticket = row is not None and decision.result in (
        ScanResult.admitted,
        ScanResult.already_checked_in,
        ScanResult.void,
    )
    first = row is not None and decision.result in (ScanResult.admitted, ScanResult.already_checked_in)
    return ScanRead(
        scan_id=scan_id,
        gala_id=gala_id,
        result=decision.result,
        reason=decision.reason,
        ticket=_ticket(row) if show_ticket and row is not None else None,
        first_checked_in_at=row.checked_in_at if first and row is not None else None,
        first_gate=row.checked_in_gate if first and row is not None else None,
        message=decision.message,
        scanned_at=scanned_at,
    )


def _dialect(session: AsyncSession) -> str:
    return session.get_bind().dialect.name


async def _store(session: AsyncSession, scan: ScanEntry) -> bool:
    """Log the scan; False when its (gala, scan_id) is already logged (a repeated scan)."""
    conn = await session.connection()
    return (await conn.execute(LOG_SCAN[conn.dialect.name], scan.columns())).first() is not None


def _entry(
    decision: Decision,
    *,
    gala_id: str,
    scan_id: str,
    gate: str | None,
    device_id: str | None,
    key_id: str,
    source: ScanSource,
    scanned_at: datetime,
    now: datetime,
) -> ScanEntry:
    """The scan log's row for a decided scan, with the answer it gives."""
    answer = _answer(decision, scan_id=scan_id, gala_id=gala_id, scanned_at=scanned_at)
    return ScanEntry(
        gala_id=gala_id,
        scan_id=scan_id,
        ticket_id=decision.ticket_id,
        ticket_version=decision.version,
        result=decision.result,
        reason=decision.reason,
        counted=decision.admitted,
        source=source,
        gate=gate,
        device_id=device_id,
        key_id=key_id,
        scanned_at=scanned_at,
        received_at=now,
        response=answer.model_dump_json(),
    )


def _checked_in_data(row: Any, *, gala_id: str, scan_id: str, device_id: str | None, offline: bool) -> dict[str, Any]:
    """The `ticket.checked_in` event's data, from the admitted ticket (as checked in)."""
    return {
        "ticket_id": row.id,
        "order_id": row.order_id,
        "gala_id": gala_id,
        "ticket_type_id": row.ticket_type_id,
        "attendee_name": row.attendee_name,
        "checked_in_at": row.checked_in_at.isoformat(),
        "gate": row.checked_in_gate,
        "device_id": device_id,
        "scan_id": scan_id,
        "offline": offline,
    }


async def _emit_checked_in(
    session: AsyncSession, decision: Decision, *, gala_id: str, scan: ScanEntry, now: datetime
) -> None:
    assert decision.ticket_row is not None
    data = _checked_in_data(
        decision.ticket_row,
        gala_id=gala_id,
        scan_id=scan.scan_id,
        device_id=scan.device_id,
        offline=scan.source == ScanSource.offline,
    )
    await outbox.emit(session, "ticket.checked_in", gala_id=gala_id, data=data, now=now)


async def record_scan(
    store: ScanStore,
    cache: DoorCache,
    *,
    gala: GalaInfo,
    code: str,
    scan_id: str | None,
    gate: str | None,
    device_id: str | None,
    key_id: str,
    now: datetime,
) -> str:
    """Decide one scan at the door, log it, and answer (the `ScanRead` document as JSON text, exactly as
    logged); a repeated `scan_id` gets its first answer. See `checkin.store` for the round trips."""
    scan_id = scan_id or new_id("scn")

    def entry(decision: Decision) -> ScanEntry:
        return _entry(
            decision,
            gala_id=gala.id,
            scan_id=scan_id,
            gate=gate,
            device_id=device_id,
            key_id=key_id,
            source=ScanSource.online,
            scanned_at=now,
            now=now,
        )

    checked = check_code(cache, code, gala.id)
    if isinstance(checked, Verdict):
        message = checked.message
        if checked.other_gala_id is not None:
            message = await _other_gala_message(cache, checked.other_gala_id, gala)
        return await _refuse(store, entry(Decision(checked.result, checked.reason, message)), gala.id, scan_id)
    payload = checked
    ticket = cache.ticket_hint(gala.id, payload.ticket_id)
    for _ in range(3):
        if ticket is None or _classify(ticket, payload) is not None:
            # No hint, or a hint that would refuse: a refusal is only ever decided from a fresh read.
            seen = await store.look(gala_id=gala.id, scan_id=scan_id, ticket_id=payload.ticket_id)
            if seen.stored is not None:
                return seen.stored  # a repeated scan_id: the first answer, never a second verdict
            ticket = seen.ticket
            verdict = _classify(ticket, payload)
            if verdict is not None:
                return await _refuse(store, entry(_refusal(verdict, ticket, payload, gala, now)), gala.id, scan_id)
        assert ticket is not None
        # The ticket as the admission leaves it; the answer and the event describe it so.
        row = replace(ticket, checked_in_at=now, checked_in_gate=gate, updated_at=now)
        decision = _admission(row, payload, gala, now)
        admission = entry(decision)
        event = CheckedInEvent(
            id=new_id("evt"),
            gala_id=gala.id,
            data=json.dumps(
                _checked_in_data(row, gala_id=gala.id, scan_id=scan_id, device_id=device_id, offline=False)
            ),
        )
        if await store.admit(admission, seen=ticket, event=event):
            cache.note_admitted(gala.id, row)
            _log_scan(gala.id, scan_id, decision.result, gate)
            return admission.response
        # The ticket is not as read (another scan admitted it, it was changed), or this scan_id is logged
        # already (the same scan, retried): read again.
        ticket = None
    raise Busy("The ticket is changing; scan again.")


async def _refuse(store: ScanStore, refusal: ScanEntry, gala_id: str, scan_id: str) -> str:
    """Log a refusal and answer it; if the scan_id is logged already (the same scan, sent twice at once),
    answer from the log."""
    if await store.log(refusal):
        _log_scan(gala_id, scan_id, refusal.result, refusal.gate)
        return refusal.response
    seen = await store.look(gala_id=gala_id, scan_id=scan_id, ticket_id=None)
    if seen.stored is None:  # logged and gone: cannot happen (the log is never deleted from)
        raise Busy("The scan is being recorded; scan again.")
    return seen.stored


def _admission(
    row: TicketRow, payload: codes.CodePayload, gala: GalaInfo, now: datetime, *, replaced: bool = False
) -> Decision:
    """The admission of the ticket `row` (as checked in)."""
    return Decision(
        ScanResult.admitted,
        None,
        _message(ScanResult.admitted, None, _ticket(row), row, gala, now),
        ticket_row=row,
        ticket_id=payload.ticket_id,
        version=payload.version,
        admitted=True,
        replaced=replaced,
    )


def _refusal(
    verdict: tuple[ScanResult, str], row: Any, payload: codes.CodePayload, gala: GalaInfo, now: datetime
) -> Decision:
    result, reason = verdict
    if row is None or result == ScanResult.invalid:
        return Decision(result, reason, "Unknown ticket. Do not admit.", ticket_id=payload.ticket_id)
    return Decision(
        result,
        reason,
        _message(result, reason, _ticket(row), row, gala, now),
        ticket_row=row,
        ticket_id=payload.ticket_id,
        version=payload.version,
    )


def _log_scan(gala_id: str, scan_id: str, result: ScanResult, gate: str | None) -> None:
    log.info("checkin.scan", extra={"gala_id": gala_id, "scan_id": scan_id, "result": result.value, "gate": gate})


async def record_batch(
    session: AsyncSession,
    cache: DoorCache,
    *,
    gala: GalaInfo,
    device_id: str,
    scans: Sequence[BatchScan],
    key_id: str,
    now: datetime,
) -> list[BatchResult]:
    """Decide scans made offline, in the order they were made; the earliest admission of a ticket stands.
    Idempotent per `scan_id`: a scan already logged is answered from the log, as it stands now."""
    ids = list(dict.fromkeys(s.scan_id for s in scans))
    known = await _logged(session, gala.id, ids)
    results: dict[str, BatchResult] = {}
    order = sorted(range(len(scans)), key=lambda i: (min(scans[i].scanned_at, now), i))
    done = 0
    for i in order:
        item = scans[i]
        if item.scan_id in known or item.scan_id in results:
            continue
        at = min(item.scanned_at, now)
        decision = await _decide_offline(session, cache, gala, item.code, at=at, gate=item.gate, now=now)
        scan = _entry(
            decision,
            gala_id=gala.id,
            scan_id=item.scan_id,
            gate=item.gate,
            device_id=device_id,
            key_id=key_id,
            source=ScanSource.offline,
            scanned_at=at,
            now=now,
        )
        if not await _store(session, scan):
            raise Busy("Another upload of the same scans is in progress; retry.")
        if decision.admitted and not decision.replaced:
            await _emit_checked_in(session, decision, gala_id=gala.id, scan=scan, now=now)
        results[item.scan_id] = BatchResult(
            scan_id=item.scan_id, result=decision.result, counted=decision.admitted, reason=decision.reason
        )
        done += 1
        if done % BATCH_COMMIT_EVERY == 0:
            await session.commit()  # keep write transactions short; each scan is idempotent on retry
    if known:
        # Answered from the log as it stands after this batch (an earlier admission may have displaced one).
        results.update(await _logged(session, gala.id, list(known)))
    log.info("checkin.batch", extra={"gala_id": gala.id, "device_id": device_id, "scans": len(scans), "new": done})
    return [results[s.scan_id] for s in scans]


async def _logged(session: AsyncSession, gala_id: str, scan_ids: list[str]) -> dict[str, BatchResult]:
    found: dict[str, BatchResult] = {}
    for i in range(0, len(scan_ids), 500):
        rows = await session.execute(
            select(col(Scan.scan_id), col(Scan.result), col(Scan.counted), col(Scan.reason)).where(
                col(Scan.gala_id) == gala_id, col(Scan.scan_id).in_(scan_ids[i : i + 500])
            )
        )
        for row in rows:
            found[row.scan_id] = BatchResult(
                scan_id=row.scan_id, result=ScanResult(row.result), counted=row.counted, reason=row.reason
            )
    return found


# --- undo ---------------------------------------------------------------------------------------------


async def undo_scan(
    session: AsyncSession,
    *,
    principal: Principal,
    scan_id: str,
    gala_id: str | None,
    reason: str | None,
    now: datetime,
) -> UndoRead:
    """Reverse an admission (a mis-scan): the ticket may be admitted again. Logged with who and why."""
    stmt = select(col(Scan.gala_id), col(Scan.ticket_id), col(Scan.result)).where(col(Scan.scan_id) == scan_id)
    if gala_id is not None:
        principal.require_gala(gala_id)
        stmt = stmt.where(col(Scan.gala_id) == gala_id)
    rows = [r for r in (await session.execute(stmt)).all() if principal.can_access_gala(r.gala_id)]
    if not rows:
        raise ScanNotFound(f"No scan {scan_id}.")
    if len(rows) > 1:
        raise AmbiguousScanId(
            f"Scan id {scan_id} was used at {len(rows)} galas; name the gala in `gala_id`.",
            gala_ids=sorted(r.gala_id for r in rows),
        )
    found = rows[0]
    if found.result != ScanResult.admitted or found.ticket_id is None:
        raise NotAnAdmission(f"Scan {scan_id} was not an admission ({found.result}).", result=found.result)
    # Lock the ticket first (every check-in write goes ticket, then scan), then look at the scan again.
    await session.execute(select(col(Ticket.id)).where(col(Ticket.id) == found.ticket_id).with_for_update())
    state = (
        await session.execute(
            select(col(Scan.counted), col(Scan.undone_at)).where(
                col(Scan.gala_id) == found.gala_id, col(Scan.scan_id) == scan_id
            )
        )
    ).one()
    if state.undone_at is not None:
        raise ScanAlreadyUndone(f"Scan {scan_id} was undone at {state.undone_at.isoformat()}.")
    if not state.counted:
        raise AdmissionSuperseded(
            f"Scan {scan_id} no longer counts: an earlier admission of the ticket stands. Undo that one."
        )
    row = (
        await session.execute(
            update(Ticket)
            .where(col(Ticket.id) == found.ticket_id)
            .values(checked_in_at=None, checked_in_gate=None, updated_at=now)
            .returning(*TICKET_COLUMNS)
            .execution_options(synchronize_session=False)
        )
    ).first()
    await session.execute(
        update(Scan)
        .where(col(Scan.gala_id) == found.gala_id, col(Scan.scan_id) == scan_id)
        .values(counted=False, undone_at=now, undone_by_key_id=principal.key_id, undo_reason=reason)
        .execution_options(synchronize_session=False)
    )
    log.info(
        "checkin.undone",
        extra={"gala_id": found.gala_id, "scan_id": scan_id, "key_id": principal.key_id, "reason": reason},
    )
    return UndoRead(
        scan_id=scan_id,
        gala_id=found.gala_id,
        ticket_id=found.ticket_id,
        undone_at=now,
        undone_by_key_id=principal.key_id,
        reason=reason,
        ticket=_ticket(row) if row is not None else None,
    )


# --- stats ----------------------------------------------------------------------------------------------


async def checkin_stats(session: AsyncSession, *, gala_id: str, bucket_minutes: int, now: datetime) -> CheckinStats:
    """Admitted against expected, by ticket type and gate, and arrivals over time."""
    valid = and_(col(Ticket.gala_id) == gala_id, col(Ticket.status) == TicketStatus.valid)
    names = {
        r.id: r.name
        for r in await session.execute(
            select(col(TicketType.id), col(TicketType.name)).where(col(TicketType.gala_id) == gala_id)
        )
    }
    counts = {
        r.ticket_type_id: (r.admitted, r.expected)
        for r in await session.execute(
            select(
                col(Ticket.ticket_type_id),
                func.count(col(Ticket.checked_in_at)).label("admitted"),
                func.count().label("expected"),
            )
            .where(valid)
            .group_by(col(Ticket.ticket_type_id))
        )
    }
    by_type = [
        TicketTypeCount(
            ticket_type_id=tid,
            name=names.get(tid),
            admitted=counts.get(tid, (0, 0))[0],
            expected=counts.get(tid, (0, 0))[1],
        )
        for tid in sorted(set(names) | set(counts), key=lambda t: (names.get(t) or "", t))
    ]
    checked_in = and_(valid, col(Ticket.checked_in_at).is_not(None))
    by_gate = [
        GateCount(gate=r.gate, admitted=r.admitted)
        for r in await session.execute(
            select(col(Ticket.checked_in_gate).label("gate"), func.count().label("admitted"))
            .where(checked_in)
            .group_by(col(Ticket.checked_in_gate))
        )
    ]
    by_gate.sort(key=lambda g: (-g.admitted, g.gate or ""))
    if _dialect(session) == "postgresql":
        minute: Any = func.date_trunc("minute", col(Ticket.checked_in_at))
    else:
        minute = func.strftime("%Y-%m-%dT%H:%M:00", col(Ticket.checked_in_at))
    per_minute = (
        await session.execute(
            select(minute.label("minute"), func.count().label("n")).where(checked_in).group_by(minute)
        )
    ).all()
    scans = [
        ResultCount(result=ScanResult(r.result), count=r.n)
        for r in await session.execute(
            select(col(Scan.result), func.count().label("n"))
            .where(col(Scan.gala_id) == gala_id)
            .group_by(col(Scan.result))
        )
    ]
    return CheckinStats(
        gala_id=gala_id,
        admitted=sum(t.admitted for t in by_type),
        expected=sum(t.expected for t in by_type),
        by_ticket_type=by_type,
        by_gate=by_gate,
        arrivals=_buckets(per_minute, bucket_minutes),
        bucket_minutes=bucket_minutes,
        scans=sorted(scans, key=lambda s: s.result.value),
        generated_at=now,
    )


def _buckets(per_minute: Sequence[Row[Any]], bucket_minutes: int) -> list[ArrivalBucket]:
    width = bucket_minutes * 60
    counts: dict[int, int] = {}
    for row in per_minute:
        value = row.minute
        moment = datetime.fromisoformat(value) if isinstance(value, str) else value
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        start = int(moment.timestamp()) // width * width
        counts[start] = counts.get(start, 0) + row.n
    if not counts:
        return []
    first, last = min(counts), max(counts)
    starts = range(first, last + width, width) if (last - first) // width < 2000 else sorted(counts)
    return [ArrivalBucket(start=datetime.fromtimestamp(s, UTC), count=counts.get(s, 0)) for s in starts]


# --- the offline bundle ---------------------------------------------------------------------------------


async def sync_bundle(
    session: AsyncSession, cache: DoorCache, *, gala_id: str, since: str | None, limit: int, now: datetime
) -> ScanSync:
    """Every ticket changed after `since` (all without it), ordered by (updated_at, id), with the gala's
    public key: what a scanner needs to decide offline, old versions and void tickets included."""
    stmt = (
        select(
            col(Ticket.id),
            col(Ticket.version),
            col(Ticket.status),
            col(Ticket.attendee_name),
            col(Ticket.seat_label),
            col(Ticket.table),
            col(Ticket.ticket_type_id),
            col(Ticket.section_id),
            col(Ticket.checked_in_at),
            col(Ticket.checked_in_gate),
            col(Ticket.updated_at),
        )
        .where(col(Ticket.gala_id) == gala_id)
        .order_by(col(Ticket.updated_at), col(Ticket.id))
        .limit(limit + 1)
    )
    cursor = (EPOCH, "")
    if since:
        cursor = decode_cursor(since)
        if "\x00" in cursor[1]:
            raise InvalidCursor("The cursor is not one this API returned.")
        stmt = stmt.where(
            or_(
                col(Ticket.updated_at) > cursor[0],
                and_(col(Ticket.updated_at) == cursor[0], col(Ticket.id) > cursor[1]),
            )
        )
    rows = (await session.execute(stmt)).all()
    has_more = len(rows) > limit
    rows = rows[:limit]
    if rows:
        cursor = (rows[-1].updated_at, rows[-1].id)
    if not has_more and cursor[0] > now - SYNC_OVERLAP:
        cursor = (now - SYNC_OVERLAP, "")
    tickets = [
        SyncTicket(
            id=r.id,
            version=r.version,
            status=TicketStatus(r.status),
            attendee_name=r.attendee_name,
            seat_label=r.seat_label,
            table=r.table,
            ticket_type_id=r.ticket_type_id,
            section_id=r.section_id,
            checked_in_at=r.checked_in_at,
            checked_in_gate=r.checked_in_gate,
        )
        for r in rows
    ]
    types = await session.execute(
        select(col(TicketType.id), col(TicketType.name)).where(col(TicketType.gala_id) == gala_id)
    )
    sections = await session.execute(select(col(Section.id), col(Section.name)).where(col(Section.gala_id) == gala_id))
    return ScanSync(
        gala_id=gala_id,
        public_key=cache.public_key_b64(gala_id),
        tickets=tickets,
        revoked=[t.id for t in tickets if t.status == TicketStatus.void],
        ticket_types=[NamedItem(id=r.id, name=r.name) for r in types],
        sections=[NamedItem(id=r.id, name=r.name) for r in sections],
        next_since=encode_cursor(*cursor),
        has_more=has_more,
        generated_at=now,
    )
