"""task_instance.confirmed_at: when the broker confirmed a queued try's message

Task instances queued before this migration have no mark: they are re-published once after
queued_timeout, as before it; every try queued afterwards is marked once its message is confirmed.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 16:00:00.000000
"""

from __future__ import annotations

import hareflow.common.db.types
import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("task_instance") as batch:
        batch.add_column(sa.Column("confirmed_at", hareflow.common.db.types.UtcDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("task_instance") as batch:
        batch.drop_column("confirmed_at")
