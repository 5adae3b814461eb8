"""tickets_require(): end a statement with an error when a condition fails (PostgreSQL)

Revision ID: f6sale00001
Revises: e5holds00001
Create Date: 2026-12-02 14:00:00.000000

A sale of reserved seats runs as one statement in autocommit: the seats' UPDATE and the order's INSERTs
as data-modifying CTEs. Such a statement is atomic, but plain SQL cannot undo its own CTEs when the
UPDATE took fewer seats than asked. `tickets_require(ok, message)` raises SQLSTATE TK001 when `ok` is
not true, which ends the statement and undoes all of it. SQLite has no such sale, and needs nothing.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "f6sale00001"
down_revision: str | None = "e5holds00001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        """
        CREATE FUNCTION tickets_require(ok boolean, message text) RETURNS boolean
        LANGUAGE plpgsql AS $$
        BEGIN
            IF ok IS NOT TRUE THEN
                RAISE EXCEPTION USING ERRCODE = 'TK001', MESSAGE = message;
            END IF;
            RETURN true;
        END
        $$
        """
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP FUNCTION tickets_require(boolean, text)")
