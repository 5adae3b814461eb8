"""Column helpers shared by every domain's tables."""

from datetime import datetime
from typing import Any

from sqlmodel import Field

from tickets.clock import utc_now
from tickets.db import UTCDateTime


def utc_field(*, nullable: bool = False, index: bool = False, default_now: bool = False) -> Any:
    """An aware-UTC timestamp column."""
    if default_now:
        return Field(default_factory=utc_now, sa_type=UTCDateTime, nullable=nullable, index=index)
    return Field(default=None, sa_type=UTCDateTime, nullable=nullable, index=index)


def created_at_field() -> Any:
    return utc_field(default_now=True)


__all__ = ["created_at_field", "datetime", "utc_field"]
