"""assets: assets, their events, which DAGs consume and produce them, events not yet consumed

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 08:00:00.000000
"""

from __future__ import annotations

import hareflow.common.db.types
import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    types = hareflow.common.db.types
    op.create_table(
        "asset",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("uri", types.SafeString(500), nullable=False),
        sa.Column("name", types.SafeString(500), nullable=True),
        sa.Column("extra", sa.JSON(), nullable=False),
        sa.Column("created_at", types.UtcDateTime(), nullable=False),
        sa.Column("updated_at", types.UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_asset")),
        sa.UniqueConstraint("uri", name=op.f("uq_asset_uri")),
    )
    op.create_table(
        "asset_event",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("asset_id", sa.Integer(), nullable=False),
        sa.Column("extra", sa.JSON(), nullable=False),
        sa.Column("source_ti_id", sa.Integer(), nullable=True),
        sa.Column("source_dag_id", types.SafeString(250), nullable=True),
        sa.Column("source_run_id", types.SafeString(250), nullable=True),
        sa.Column("source_task_id", types.SafeString(250), nullable=True),
        sa.Column("source_map_index", sa.Integer(), nullable=False),
        sa.Column("source_try_number", sa.Integer(), nullable=True),
        sa.Column("created_by", types.SafeString(100), nullable=True),
        sa.Column("timestamp", types.UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["asset_id"], ["asset.id"], name=op.f("fk_asset_event_asset_id_asset"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_asset_event")),
        sa.UniqueConstraint(
            "source_ti_id",
            "source_try_number",
            "asset_id",
            name=op.f("uq_asset_event_source_ti_id_source_try_number_asset_id"),
        ),
    )
    op.create_index("ix_asset_event_asset_id", "asset_event", ["asset_id", "id"])
    op.create_table(
        "dag_schedule_asset",
        sa.Column("dag_id", types.SafeString(250), nullable=False),
        sa.Column("asset_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["asset_id"], ["asset.id"], name=op.f("fk_dag_schedule_asset_asset_id_asset"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("dag_id", "asset_id", name=op.f("pk_dag_schedule_asset")),
    )
    op.create_index("ix_dag_schedule_asset_asset_id", "dag_schedule_asset", ["asset_id"])
    op.create_table(
        "task_outlet_asset",
        sa.Column("dag_id", types.SafeString(250), nullable=False),
        sa.Column("task_id", types.SafeString(250), nullable=False),
        sa.Column("asset_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["asset_id"], ["asset.id"], name=op.f("fk_task_outlet_asset_asset_id_asset"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("dag_id", "task_id", "asset_id", name=op.f("pk_task_outlet_asset")),
    )
    op.create_index("ix_task_outlet_asset_asset_id", "task_outlet_asset", ["asset_id"])
    op.create_table(
        "asset_dag_run_queue",
        sa.Column("target_dag_id", types.SafeString(250), nullable=False),
        sa.Column("asset_id", sa.Integer(), nullable=False),
        sa.Column("first_event_id", sa.Integer(), nullable=False),
        sa.Column("last_event_id", sa.Integer(), nullable=False),
        sa.Column("created_at", types.UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["asset_id"], ["asset.id"], name=op.f("fk_asset_dag_run_queue_asset_id_asset"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("target_dag_id", "asset_id", name=op.f("pk_asset_dag_run_queue")),
    )
    op.create_table(
        "dag_run_asset_event",
        sa.Column("run_pk", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_pk"], ["dag_run.id"], name=op.f("fk_dag_run_asset_event_run_pk_dag_run"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["event_id"],
            ["asset_event.id"],
            name=op.f("fk_dag_run_asset_event_event_id_asset_event"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("run_pk", "event_id", name=op.f("pk_dag_run_asset_event")),
    )
    op.create_index("ix_dag_run_asset_event_event_id", "dag_run_asset_event", ["event_id"])


def downgrade() -> None:
    op.drop_table("dag_run_asset_event")
    op.drop_table("asset_dag_run_queue")
    op.drop_table("task_outlet_asset")
    op.drop_table("dag_schedule_asset")
    op.drop_table("asset_event")
    op.drop_table("asset")
