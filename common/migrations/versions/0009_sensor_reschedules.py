"""task_instance.reschedules and first_poke_at: sensors in reschedule mode

A sensor in reschedule mode returns its worker slot between pokes (state ``up_for_reschedule``,
its next poke at ``next_retry_at``) and is dispatched again with the same try number;
``reschedules`` numbers those deliveries of one try, ``first_poke_at`` is when the try's first poke
ran (the sensor's timeout counts from it). No index: the scheduler finds due pokes in the rows of
the running runs it reads anyway (docs/architecture.md, "Sensors in reschedule mode").

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 07:00:00.000000
"""

from __future__ import annotations

import hareflow.common.db.types
import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("task_instance") as batch:
        batch.add_column(sa.Column("reschedules", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("first_poke_at", hareflow.common.db.types.UtcDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("task_instance") as batch:
        batch.drop_column("first_poke_at")
        batch.drop_column("reschedules")
