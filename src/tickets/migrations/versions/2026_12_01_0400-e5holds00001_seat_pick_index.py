"""seat pick index: free places of an area in id order

Revision ID: e5holds00001
Revises: d4webhooks01
Create Date: 2026-12-01 04:00:00.000000

A general-admission hold picks the first free places of an area in id order. With an index on
(section_id, status) only, PostgreSQL walked the primary key in id order and filtered, passing every
place already taken on the way: each order of a sell-out cost more than the one before. With `id` as
the third column, the pick is an index range scan that starts at the first available place.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "e5holds00001"
down_revision: str | None = "d4webhooks01"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("seat", schema=None) as batch_op:
        batch_op.create_index("ix_seat_section_status_id", ["section_id", "status", "id"], unique=False)
        batch_op.drop_index("ix_seat_section_status")


def downgrade() -> None:
    with op.batch_alter_table("seat", schema=None) as batch_op:
        batch_op.create_index("ix_seat_section_status", ["section_id", "status"], unique=False)
        batch_op.drop_index("ix_seat_section_status_id")
