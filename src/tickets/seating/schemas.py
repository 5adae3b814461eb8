from __future__ import annotations

from typing import Annotated, Literal, Self

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tickets.seating.models import SectionKind
from tickets.validation import Label, Name

SectionID = Annotated[str, Path(pattern="^sec_[A-Za-z0-9]{1,40}$", description="Section id (`sec_…`)")]
SeatID = Annotated[str, Path(pattern="^seat_[A-Za-z0-9]{1,40}$", description="Seat id (`seat_…`)")]

MAX_SEATS_PER_REQUEST = 5000
MAX_GENERAL_CAPACITY = 20000


class SeatCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    label: Label = Field(description="Unique within the gala, e.g. `B12` or `T5-3`.")
    row: Annotated[str, Field(min_length=1, max_length=32)] | None = None
    number: int | None = Field(default=None, ge=0, le=100_000)
    table: Label | None = Field(default=None, description="Banquet table label; seats sharing it form the table.")


def _unique_labels(seats: list[SeatCreate]) -> None:
    seen: set[str] = set()
    for seat in seats:
        if seat.label in seen:
            raise ValueError(f"seat label {seat.label!r} appears twice")
        seen.add(seat.label)


class ReservedSectionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    kind: Literal["reserved"]
    seats: list[SeatCreate] = Field(min_length=1, max_length=MAX_SEATS_PER_REQUEST)

    @model_validator(mode="after")
    def _labels_unique(self) -> Self:
        _unique_labels(self.seats)
        return self


class GeneralSectionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    kind: Literal["general"]
    capacity: int = Field(ge=1, le=MAX_GENERAL_CAPACITY)


SectionCreate = Annotated[ReservedSectionCreate | GeneralSectionCreate, Field(discriminator="kind")]


class SectionUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    capacity: int | None = Field(
        default=None,
        ge=0,
        le=MAX_GENERAL_CAPACITY,
        description="General areas only; cannot go below held + sold.",
    )


class SeatsAdd(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seats: list[SeatCreate] = Field(min_length=1, max_length=MAX_SEATS_PER_REQUEST)

    @model_validator(mode="after")
    def _labels_unique(self) -> Self:
        _unique_labels(self.seats)
        return self


class SeatIds(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seat_ids: list[Annotated[str, Field(pattern="^seat_[A-Za-z0-9]{1,40}$")]] = Field(
        min_length=1, max_length=MAX_SEATS_PER_REQUEST
    )


class SeatRead(BaseModel):
    id: str
    label: str | None
    row: str | None
    number: int | None
    table: str | None
    status: Literal["available", "held", "sold", "blocked"]


class SectionRead(BaseModel):
    id: str
    gala_id: str
    name: str
    kind: SectionKind
    capacity: int = Field(description="Seats in a reserved section, places in a general area.")
    available: int


class SeatMapSection(BaseModel):
    id: str
    name: str
    kind: SectionKind
    capacity: int | None = None
    available: int | None = None
    seats: list[SeatRead]


class SeatMap(BaseModel):
    gala_id: str
    sections: list[SeatMapSection]


class BlockResult(BaseModel):
    gala_id: str
    seats: list[SeatRead]
