"""history clean-up indexes: dag_run (state, end_date, id) and asset_event (timestamp, id)

``hareflow db clean`` and the scheduler's ``retention_days`` step look for finished runs that
ended, and asset events recorded, before a cutoff; these indexes find the highest id such a row
has, so the batches that follow scan only the rows created before it, however much newer history
the table holds (audit_log and dead_letter already have an index on their time).

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-03 14:30:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_dag_run_state_end_date", "dag_run", ["state", "end_date", "id"])
    op.create_index("ix_asset_event_timestamp", "asset_event", ["timestamp", "id"])


def downgrade() -> None:
    op.drop_index("ix_asset_event_timestamp", table_name="asset_event")
    op.drop_index("ix_dag_run_state_end_date", table_name="dag_run")
