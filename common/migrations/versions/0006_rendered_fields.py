"""task_rendered: the template fields of each try as its worker rendered them

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 20:00:00.000000
"""

from __future__ import annotations

import hareflow.common.db.types
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "task_rendered",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("ti_id", sa.Integer(), nullable=False),
        sa.Column("try_number", sa.Integer(), nullable=False),
        sa.Column(
            "fields_json",
            sa.Text().with_variant(mysql.LONGTEXT(), "mariadb").with_variant(mysql.LONGTEXT(), "mysql"),
            nullable=False,
        ),
        sa.Column("created_at", hareflow.common.db.types.UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["ti_id"],
            ["task_instance.id"],
            name=op.f("fk_task_rendered_ti_id_task_instance"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_task_rendered")),
        sa.UniqueConstraint("ti_id", "try_number", name=op.f("uq_task_rendered_ti_id_try_number")),
    )


def downgrade() -> None:
    op.drop_table("task_rendered")
