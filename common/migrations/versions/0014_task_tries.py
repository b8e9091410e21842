"""task_try: each earlier try of a task instance, as it ended

The task_instance row holds only its latest try; a retry or a clear copies the finished try here
first, so the task-instance page can show any try's state, times, worker, host and error, not only
the latest one's. Tries that ended before this migration have no row (the page says so).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03 11:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from hareflow.common.db.types import LongText, SafeString, UtcDateTime

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "task_try",
        sa.Column(
            "ti_id", sa.Integer(), sa.ForeignKey("task_instance.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("try_number", sa.Integer(), nullable=False),
        sa.Column("state", SafeString(20), nullable=False),
        sa.Column("queued_at", UtcDateTime(), nullable=True),
        sa.Column("start_date", UtcDateTime(), nullable=True),
        sa.Column("end_date", UtcDateTime(), nullable=True),
        sa.Column("duration", sa.Float(), nullable=True),
        sa.Column("worker", SafeString(200), nullable=True),
        sa.Column("hostname", SafeString(255), nullable=True),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column("error", LongText(), nullable=True),
        sa.PrimaryKeyConstraint("ti_id", "try_number"),
    )


def downgrade() -> None:
    op.drop_table("task_try")
