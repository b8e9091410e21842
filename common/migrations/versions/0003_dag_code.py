"""the source of each DAG file, stored at parse time

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 10:00:00.000000
"""

from __future__ import annotations

import hareflow.common.db.types
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dag_code",
        sa.Column("fileloc_hash", sa.String(length=64), nullable=False),
        sa.Column("fileloc", sa.String(length=1000), nullable=False),
        sa.Column(
            "source",
            sa.Text().with_variant(mysql.LONGTEXT(), "mariadb").with_variant(mysql.LONGTEXT(), "mysql"),
            nullable=False,
        ),
        sa.Column("source_hash", sa.String(length=64), nullable=False),
        sa.Column("updated_at", hareflow.common.db.types.UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("fileloc_hash", name=op.f("pk_dag_code")),
    )


def downgrade() -> None:
    op.drop_table("dag_code")
