"""dead_letter: the messages moved to the dead-letter queue, recorded by the results-consumer side

One row per dead-lettering (``fingerprint`` is unique: a copy delivered twice is stored once), with
the whole body and headers, so a requeue publishes the message exactly as it was.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03 11:00:00.000000
"""

from __future__ import annotations

import hareflow.common.db.types
import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    types = hareflow.common.db.types
    op.create_table(
        "dead_letter",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("fingerprint", types.SafeString(64), nullable=False),
        sa.Column("received_at", types.UtcDateTime(), nullable=False),
        sa.Column("queue", types.SafeString(255), nullable=False),
        sa.Column("reason", types.SafeText(), nullable=False),
        sa.Column("deliveries", sa.Integer(), nullable=False),
        sa.Column("message_id", types.SafeString(255), nullable=True),
        sa.Column("content_type", types.SafeString(255), nullable=True),
        sa.Column("headers", sa.JSON(), nullable=False),
        sa.Column("body", types.LongBinary(), nullable=False),
        sa.Column("body_size", sa.Integer(), nullable=False),
        sa.Column("message_type", types.SafeString(50), nullable=True),
        sa.Column("ti_id", sa.Integer(), nullable=True),
        sa.Column("dag_id", types.SafeString(250), nullable=True),
        sa.Column("run_id", types.SafeString(250), nullable=True),
        sa.Column("task_id", types.SafeString(250), nullable=True),
        sa.Column("map_index", sa.Integer(), nullable=True),
        sa.Column("try_number", sa.Integer(), nullable=True),
        sa.Column("state", types.SafeString(20), nullable=False),
        sa.Column("state_by", types.SafeString(100), nullable=True),
        sa.Column("state_at", types.UtcDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dead_letter")),
        sa.UniqueConstraint("fingerprint", name=op.f("uq_dead_letter_fingerprint")),
    )
    op.create_index("ix_dead_letter_state_queue", "dead_letter", ["state", "queue"])
    op.create_index("ix_dead_letter_received_at", "dead_letter", ["received_at"])


def downgrade() -> None:
    op.drop_index("ix_dead_letter_received_at", table_name="dead_letter")
    op.drop_index("ix_dead_letter_state_queue", table_name="dead_letter")
    op.drop_table("dead_letter")
