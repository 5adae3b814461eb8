"""API keys. The plain key is shown once; only its SHA-256 digest is stored."""

from datetime import datetime
from enum import StrEnum

from sqlalchemy import JSON
from sqlmodel import Field, SQLModel

from tickets.models_base import created_at_field, utc_field


class Role(StrEnum):
    """Ordered by power: admin may do all that box_office may, which may do all that door may."""

    door = "door"
    box_office = "box_office"
    admin = "admin"

    @property
    def rank(self) -> int:
        return {"door": 1, "box_office": 2, "admin": 3}[self.value]


class ApiKey(SQLModel, table=True):
    """A staff credential. Lifecycle: active → revoked (or expired at `expires_at`)."""

    __tablename__ = "api_key"

    id: str = Field(primary_key=True, max_length=32)
    name: str = Field(max_length=200)
    role: str = Field(max_length=20)
    key_hash: str = Field(max_length=64, unique=True)
    prefix: str = Field(max_length=16)
    gala_ids: list[str] | None = Field(default=None, sa_type=JSON)
    created_at: datetime = created_at_field()
    expires_at: datetime | None = utc_field(nullable=True)
    revoked_at: datetime | None = utc_field(nullable=True)
