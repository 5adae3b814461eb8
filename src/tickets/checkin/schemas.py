from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import Path
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from tickets.checkin.models import ScanResult
from tickets.tickets.models import TicketStatus

# No control characters in what is stored as text (PostgreSQL refuses NUL in text, and logs should stay readable).
PRINTABLE = r"^[^\x00-\x1f\x7f]*$"
GalaIdField = Annotated[str, Field(pattern="^gal_[A-Za-z0-9]{1,40}$", description="Gala id (`gal_…`)")]
ScanIdField = Annotated[
    str,
    Field(
        min_length=1,
        max_length=64,
        pattern=PRINTABLE,
        description="The client's id for this scan (any string up to 64 characters), unique per gala. "
        "Sending it again returns the first answer instead of scanning again.",
    ),
]
ScanID = Annotated[str, Path(min_length=1, max_length=64, pattern=PRINTABLE, description="The scan's `scan_id`.")]
Gate = Annotated[str, Field(min_length=1, max_length=64, pattern=PRINTABLE, description="The entrance, e.g. `North`.")]
DeviceId = Annotated[
    str, Field(min_length=1, max_length=64, pattern=PRINTABLE, description="The scanning device, e.g. `phone-3`.")
]
Code = Annotated[
    str,
    Field(
        max_length=2000,
        description="The exact text of the QR code. Surrounding whitespace (a scanner's line end) is ignored; "
        "anything else that is not a ticket code is the answer `invalid`, not an error.",
    ),
]


class ScanCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "code": "AFUJX7…",
                    "gala_id": "gal_4fQ9kLm2Xv8RzT1aBcDe",
                    "gate": "North",
                    "device_id": "phone-3",
                    "scan_id": "3f1c2a9e-0b7d-4d3e-9a52-1c0f5e8b7a61",
                }
            ]
        },
    )

    code: Code
    gala_id: GalaIdField
    gate: Gate | None = None
    device_id: DeviceId | None = None
    scan_id: ScanIdField | None = None


class ScanTicket(BaseModel):
    """What door staff need to see of the scanned ticket."""

    id: str
    attendee_name: str | None
    ticket_type_id: str
    ticket_type_name: str | None
    section_id: str
    section_name: str | None
    seat_label: str | None
    table: str | None
    status: TicketStatus
    version: int


class ScanRead(BaseModel):
    """The verdict on one scan. Every decided scan is a `200`, whatever its `result`."""

    scan_id: str
    gala_id: str
    result: ScanResult = Field(
        description="`admitted` (let them in), `already_checked_in` (see `first_checked_in_at` and `first_gate`), "
        "`invalid` (unknown, malformed or forged code), `wrong_gala` (a ticket of another gala), `void` "
        "(cancelled, refunded, or an old code superseded by a transfer)."
    )
    reason: str | None = Field(
        default=None,
        description="Why not admitted, for machines: `malformed`, `forged`, `unknown_ticket` (invalid); "
        "`void`, `superseded` (void); `other_gala` (wrong_gala); `already_checked_in`.",
    )
    ticket: ScanTicket | None = Field(
        default=None, description="The ticket, for admitted, already_checked_in and void answers."
    )
    first_checked_in_at: datetime | None = Field(
        default=None, description="When the ticket was first checked in (admitted and already_checked_in)."
    )
    first_gate: str | None = Field(default=None, description="At which gate the ticket was first checked in.")
    message: str = Field(description="A short sentence for the person at the door.")
    scanned_at: datetime


class UndoCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    gala_id: GalaIdField | None = Field(
        default=None,
        description="The scan's gala. Optional: without it the scan is looked up by `scan_id` among the galas "
        "this key may act on (a `409 scan_id_ambiguous` asks for it when several match).",
    )
    reason: str | None = Field(
        default=None, max_length=500, pattern=r"^[^\x00]*$", description="Why, e.g. `scanned the wrong ticket`."
    )


class UndoRead(BaseModel):
    scan_id: str
    gala_id: str
    ticket_id: str
    undone_at: datetime
    undone_by_key_id: str
    reason: str | None
    ticket: ScanTicket | None


class TicketTypeCount(BaseModel):
    ticket_type_id: str
    name: str | None
    admitted: int
    expected: int


class GateCount(BaseModel):
    gate: str | None = Field(description="The gate of the admission; null when the scanner named none.")
    admitted: int


class ArrivalBucket(BaseModel):
    start: datetime = Field(description="Start of the bucket (UTC).")
    count: int


class ResultCount(BaseModel):
    result: ScanResult
    count: int


class CheckinStats(BaseModel):
    gala_id: str
    admitted: int = Field(description="Valid tickets checked in now (undone admissions do not count).")
    expected: int = Field(description="Valid tickets of the gala.")
    by_ticket_type: list[TicketTypeCount]
    by_gate: list[GateCount]
    arrivals: list[ArrivalBucket] = Field(
        description="Admissions per time bucket (by the time each counted admission was made), gaps filled with zeros."
    )
    bucket_minutes: int
    scans: list[ResultCount] = Field(description="Every scan logged for the gala, by result (failures too).")
    generated_at: datetime


class SyncTicket(BaseModel):
    id: str
    version: int = Field(description="The current version: a code of another version is refused.")
    status: TicketStatus
    attendee_name: str | None
    seat_label: str | None
    table: str | None
    ticket_type_id: str
    section_id: str
    checked_in_at: datetime | None
    checked_in_gate: str | None


class NamedItem(BaseModel):
    id: str
    name: str


class ScanSync(BaseModel):
    """The bundle for scanning offline. Apply `tickets` by id over what you have (a newer row replaces an
    older one); then call again with `since=next_since` for what changed."""

    gala_id: str
    public_key: str = Field(
        description="The gala's Ed25519 public key, base64 of the 32 raw bytes: verifies the signature of a code."
    )
    tickets: list[SyncTicket] = Field(description="Tickets changed after `since` (all tickets without it).")
    revoked: list[str] = Field(description="Ids of void tickets among `tickets`: refuse their codes.")
    ticket_types: list[NamedItem]
    sections: list[NamedItem]
    next_since: str = Field(description="Pass as `since` to get only what changed after this bundle.")
    has_more: bool = Field(description="True when `limit` cut the bundle short: call again at once with `next_since`.")
    generated_at: datetime


class BatchScan(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scan_id: ScanIdField
    code: Code
    gate: Gate | None = None
    scanned_at: AwareDatetime = Field(description="When the device scanned (its clock); a future time counts as now.")


class ScanBatchCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    gala_id: GalaIdField
    device_id: DeviceId
    scans: list[BatchScan] = Field(min_length=1, max_length=500)


class BatchResult(BaseModel):
    scan_id: str
    result: ScanResult
    counted: bool = Field(
        description="True when this scan is its ticket's admission now: the earliest admission stands."
    )
    reason: str | None = None


class ScanBatchRead(BaseModel):
    results: list[BatchResult]
