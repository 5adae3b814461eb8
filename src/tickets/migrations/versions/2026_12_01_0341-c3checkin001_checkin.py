"""door check-in

Revision ID: c3checkin001
Revises: b2tickets001
Create Date: 2026-12-01 03:41:00
"""

from collections.abc import Sequence

revision: str = "c3checkin001"
down_revision: str | None = "b2tickets001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
