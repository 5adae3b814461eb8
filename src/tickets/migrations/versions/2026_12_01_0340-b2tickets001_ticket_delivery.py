"""ticket delivery (mail)

Revision ID: b2tickets001
Revises: a1outbox0001
Create Date: 2026-12-01 03:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

import tickets.db

revision: str = "b2tickets001"
down_revision: str | None = "a1outbox0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "mail_message",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("dedupe_key", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("order_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
        sa.Column("ticket_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
        sa.Column("ticket_version", sa.Integer(), nullable=True),
        sa.Column("to_address", sqlmodel.sql.sqltypes.AutoString(length=320), nullable=False),
        sa.Column("subject", sqlmodel.sql.sqltypes.AutoString(length=300), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", tickets.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("locked_until", tickets.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_error", sqlmodel.sql.sqltypes.AutoString(length=500), nullable=True),
        sa.Column("created_at", tickets.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("sent_at", tickets.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["order_id"], ["order.id"], name=op.f("fk_mail_message_order_id_order")),
        sa.ForeignKeyConstraint(["ticket_id"], ["ticket.id"], name=op.f("fk_mail_message_ticket_id_ticket")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mail_message")),
        sa.UniqueConstraint("dedupe_key", name=op.f("uq_mail_message_dedupe_key")),
    )
    with op.batch_alter_table("mail_message", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_mail_message_order_id"), ["order_id"], unique=False)
        batch_op.create_index("ix_mail_message_status_next_attempt", ["status", "next_attempt_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("mail_message", schema=None) as batch_op:
        batch_op.drop_index("ix_mail_message_status_next_attempt")
        batch_op.drop_index(batch_op.f("ix_mail_message_order_id"))

    op.drop_table("mail_message")
