from datetime import datetime
from typing import Annotated

from fastapi import Path
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from tickets.auth.models import ApiKey, Role

ApiKeyID = Annotated[str, Path(pattern="^key_[A-Za-z0-9]{1,40}$", description="API key id")]


class ApiKeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200, examples=["Door volunteers, west entrance"])
    role: Role
    gala_ids: list[Annotated[str, Field(pattern="^gal_")]] | None = Field(
        default=None, max_length=100, description="Limit the key to these galas (all galas when absent)."
    )
    expires_at: AwareDatetime | None = None


class ApiKeyRead(BaseModel):
    id: str
    name: str
    role: Role
    prefix: str = Field(description="The first characters of the key, to recognise it.")
    gala_ids: list[str] | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def from_model(cls, key: ApiKey) -> "ApiKeyRead":
        return cls(
            id=key.id,
            name=key.name,
            role=Role(key.role),
            prefix=key.prefix,
            gala_ids=key.gala_ids,
            created_at=key.created_at,
            expires_at=key.expires_at,
            revoked_at=key.revoked_at,
        )


class ApiKeyCreated(ApiKeyRead):
    key: str = Field(description="The secret key. Shown this once only; store it safely.")
