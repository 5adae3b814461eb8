"""Settings, read from the environment (and an optional `.env`), one object per process."""

from __future__ import annotations

import os
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tickets.ratelimit import RateLimit, parse_limit


class Settings(BaseSettings):
    """Every setting the service reads. Names are the environment variables, case-insensitive."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    database_url: str = "sqlite:///./tickets.db"
    db_pool_size: int = Field(default=10, ge=1, le=200)
    db_lock_timeout_ms: int = Field(default=5000, ge=100)
    data_dir: Path = Path(".")

    order_hold_seconds: int = Field(default=600, ge=10, le=86_400)
    sweep_interval_seconds: float = Field(default=15.0, gt=0)

    stripe_secret_key: SecretStr | None = None
    stripe_webhook_secret: SecretStr | None = None
    stripe_api_base: str | None = None
    stripe_timeout_seconds: float = 10.0

    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = False
    mail_from: str = "tickets@localhost"

    public_base_url: str = "http://127.0.0.1:8000"
    order_url_template: str | None = None
    secret_key: SecretStr | None = None

    # Public order creation is unlimited by default: a frontend may send every buyer from one address.
    rate_limit_orders: str = "0"
    # Scans are limited by default against a runaway client, high enough that no door rush meets it: fifty a
    # second per device that names itself, and four times that for a key as a whole (every scan of a key).
    rate_limit_scans: str = "3000/minute"
    rate_limit_storage_url: str = "memory://"
    cors_origins: str = ""
    webhook_allow_private_urls: bool = False
    webhook_poll_seconds: float = Field(default=1.0, gt=0)

    # Resolved API keys are kept in each worker for this long; a revoked key is refused at once by
    # the worker that revoked it and by the others within this many seconds. 0 turns the cache off.
    api_key_cache_seconds: float = Field(default=1.0, ge=0, le=60)

    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    access_log: bool = False
    # How long an idle keep-alive connection stays open. Longer than a client's or proxy's own idle
    # expiry (httpx: 5 s; load balancers: often 60 s), so that they always drop an idle connection
    # first: a server that closes it at the moment they reuse it makes them fail a request.
    keep_alive_seconds: int = Field(default=75, ge=1, le=3600)
    # How many order and scan requests one worker process works on at once; the others wait their turn
    # in arrival order (tickets.gate). 0: no limit.
    hot_path_concurrency: int = Field(default=8, ge=0, le=10_000)
    # With several workers, each listens on a socket of its own (SO_REUSEPORT) instead of all accepting
    # from one (tickets.listen).
    listen_per_worker: bool = True
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    # Test-only switch: replaces the atomic seat hold by a naive read-then-write so the race
    # tests can show that they fail without the protection. Never set it in production.
    unsafe_naive_holds: bool = False

    @field_validator("rate_limit_orders", "rate_limit_scans")
    @classmethod
    def _valid_limit(cls, value: str) -> str:
        parse_limit(value)  # raises ValueError on a malformed limit
        return value

    @field_validator(
        "stripe_secret_key",
        "stripe_webhook_secret",
        "stripe_api_base",
        "smtp_host",
        "secret_key",
        "order_url_template",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("database_url")
    @classmethod
    def _normalise_url(cls, value: str) -> str:
        return normalise_database_url(value)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def payments_enabled(self) -> bool:
        return self.stripe_secret_key is not None and self.stripe_webhook_secret is not None

    @property
    def orders_limit(self) -> RateLimit | None:
        return parse_limit(self.rate_limit_orders)

    @property
    def scans_limit(self) -> RateLimit | None:
        return parse_limit(self.rate_limit_scans)

    @property
    def cors_origin_list(self) -> list[str]:
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]

    def resolved_secret_key(self) -> bytes:
        """The master secret: SECRET_KEY, or one made once and kept in the data folder."""
        if self.secret_key is not None:
            return self.secret_key.get_secret_value().encode()
        path = self.data_dir / "tickets-secret.key"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(48))
        return path.read_text().strip().encode()


def normalise_database_url(url: str) -> str:
    """Map any accepted spelling to the async driver the service uses."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url.removeprefix("postgres://")
    for prefix in (
        "postgresql+psycopg2://",
        "postgresql+psycopg://",
        "postgresql+asyncpg://",
        "postgresql://",
    ):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url.removeprefix(prefix)
    for prefix in ("sqlite+aiosqlite://", "sqlite+pysqlite://", "sqlite://"):
        if url.startswith(prefix):
            return "sqlite+aiosqlite://" + url.removeprefix(prefix)
    return url


def sync_database_url(url: str) -> str:
    """The same database through a synchronous driver (migrations, `tickets check`)."""
    url = normalise_database_url(url)
    if url.startswith("postgresql+asyncpg://"):
        return "postgresql+psycopg://" + url.removeprefix("postgresql+asyncpg://")
    if url.startswith("sqlite+aiosqlite://"):
        return "sqlite://" + url.removeprefix("sqlite+aiosqlite://")
    return url


@lru_cache
def get_settings() -> Settings:
    return Settings()
