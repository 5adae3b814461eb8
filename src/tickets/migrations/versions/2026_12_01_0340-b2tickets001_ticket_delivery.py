"""ticket delivery (mail)

Revision ID: b2tickets001
Revises: a1outbox0001
Create Date: 2026-12-01 03:40:00
"""

from collections.abc import Sequence

revision: str = "b2tickets001"
down_revision: str | None = "a1outbox0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
