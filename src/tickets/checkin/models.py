"""The scan log: every scan at the door, failures too."""

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Index, text
from sqlmodel import Field, SQLModel

from tickets.models_base import utc_field


class ScanResult(StrEnum):
    """The verdict on one scan, as the door shows it."""

    admitted = "admitted"
    already_checked_in = "already_checked_in"
    invalid = "invalid"  # unknown, malformed or forged code
    wrong_gala = "wrong_gala"
    void = "void"  # cancelled, refunded or superseded by a transfer


class ScanSource(StrEnum):
    online = "online"  # POST /v1/scans, decided at once
    offline = "offline"  # POST /v1/scans/batch, decided on upload


class Scan(SQLModel, table=True):
    """One scan of one code at a gala's door, keyed by the client's (or the server's) `scan_id`.

    Lifecycle: written once with its verdict and the answer given (replayed for a repeated `scan_id`).
    An admission is `counted` while it is its ticket's check-in; it stops counting when it is undone
    (`undone_at`, `undone_by_key_id`, `undo_reason`) or when an offline upload proves an earlier admission
    of the same ticket (the earliest admission stands).
    """

    __tablename__ = "scan"
    __table_args__ = (
        # The database's own guarantee of one counted admission per ticket.
        Index(
            "uq_scan_counted_ticket",
            "ticket_id",
            unique=True,
            postgresql_where=text("counted"),
            sqlite_where=text("counted"),
        ),
    )

    gala_id: str = Field(primary_key=True, foreign_key="gala.id", max_length=32)
    scan_id: str = Field(primary_key=True, max_length=64, index=True)
    # Only set when the code's signature is ours; a forged code names no ticket.
    ticket_id: str | None = Field(default=None, max_length=32)
    ticket_version: int | None = None
    result: str = Field(max_length=24)
    reason: str | None = Field(default=None, max_length=32)
    counted: bool = False
    source: str = Field(default=ScanSource.online, max_length=16)
    gate: str | None = Field(default=None, max_length=64)
    device_id: str | None = Field(default=None, max_length=64)
    key_id: str = Field(max_length=32)
    scanned_at: datetime = utc_field()
    received_at: datetime = utc_field()
    response: dict[str, Any] = Field(sa_type=JSON)
    undone_at: datetime | None = utc_field(nullable=True)
    undone_by_key_id: str | None = Field(default=None, max_length=32)
    undo_reason: str | None = Field(default=None, max_length=500)
