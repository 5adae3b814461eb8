"""The schema comes from Alembic only: an empty database reaches head, and models match migrations."""

from __future__ import annotations

import os
from pathlib import Path

import sqlalchemy as sa
from alembic import command

from tests.support import scratch_database
from tickets.config import sync_database_url
from tickets.migrate import alembic_config, check_models_match, upgrade_to_head


def test_empty_database_to_head_and_back(tmp_path: Path) -> None:
    with scratch_database(os.environ.get("TEST_DATABASE_URL"), tmp_path) as url:
        upgrade_to_head(url)
        check_models_match(url)  # raises if autogenerate would find any difference
        engine = sa.create_engine(sync_database_url(url))
        with engine.connect() as conn:
            tables = set(sa.inspect(conn).get_table_names())
        assert {"gala", "section", "seat", "ticket_type", "order", "order_item", "ticket", "api_key"} <= tables
        command.downgrade(alembic_config(url), "base")
        with engine.connect() as conn:
            assert set(sa.inspect(conn).get_table_names()) <= {"alembic_version"}
        upgrade_to_head(url)
        engine.dispose()


def test_session_database_matches_models(database_url: str) -> None:
    check_models_match(database_url)
