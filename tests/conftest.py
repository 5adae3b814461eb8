"""Fixtures: one migrated database per test run (SQLite by default, PostgreSQL with
TEST_DATABASE_URL), the app in-process over ASGI, and API keys for each role.

Tests share the database and never clean it: each makes its own galas, so they don't see each other.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from tests.support import asgi_client, running_app, scratch_database, stripe_stand_in
from tickets.auth import service as auth_service
from tickets.auth.models import Role
from tickets.config import Settings
from tickets.db import Database
from tickets.migrate import upgrade_to_head

TEST_SECRET = "test-secret-key-not-for-production-0123456789"
WEBHOOK_SECRET = "whsec_test_0123456789abcdef"


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with scratch_database(os.environ.get("TEST_DATABASE_URL"), tmp_path_factory.mktemp("db")) as url:
        upgrade_to_head(url)
        yield url


@pytest.fixture(scope="session")
def stripe_base() -> Iterator[str]:
    with stripe_stand_in() as base:
        yield base


def make_settings(database_url: str, data_dir: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": database_url,
        "secret_key": TEST_SECRET,
        "data_dir": data_dir,
        "sweep_interval_seconds": 3600,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def settings(database_url: str, tmp_path_factory: pytest.TempPathFactory, stripe_base: str) -> Settings:
    return make_settings(
        database_url,
        tmp_path_factory.mktemp("data"),
        stripe_secret_key="sk_test_tickets",
        stripe_webhook_secret=WEBHOOK_SECRET,
        stripe_api_base=stripe_base,
    )


@pytest.fixture(scope="session")
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    async with running_app(settings) as application:
        yield application


@pytest.fixture(scope="session")
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(app) as c:
        yield c


@pytest.fixture(scope="session")
def db(app: FastAPI) -> Database:
    database: Database = app.state.db
    return database


async def new_api_key(db: Database, role: Role, gala_ids: list[str] | None = None) -> str:
    async with db.sessions() as session:
        _, plain = await auth_service.create_api_key(session, name=f"test {role}", role=role, gala_ids=gala_ids)
        await session.commit()
    return plain


@pytest.fixture(scope="session")
async def admin_key(db: Database) -> str:
    return await new_api_key(db, Role.admin)


@pytest.fixture(scope="session")
async def box_key(db: Database) -> str:
    return await new_api_key(db, Role.box_office)


@pytest.fixture(scope="session")
async def door_key(db: Database) -> str:
    return await new_api_key(db, Role.door)


@pytest.fixture(scope="session")
def admin(admin_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {admin_key}"}


@pytest.fixture(scope="session")
def box(box_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {box_key}"}


@pytest.fixture(scope="session")
def door(door_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {door_key}"}
