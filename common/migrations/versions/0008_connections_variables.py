"""connection and variable: integrations' settings, secrets encrypted at rest (Fernet)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 07:00:00.000000
"""

from __future__ import annotations

import hareflow.common.db.types
import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    types = hareflow.common.db.types
    op.create_table(
        "connection",
        sa.Column("conn_id", types.SafeString(250), nullable=False),
        sa.Column("conn_type", types.SafeString(100), nullable=False),
        sa.Column("description", types.SafeText(), nullable=True),
        sa.Column("host", types.SafeString(1000), nullable=True),
        sa.Column("port", sa.Integer(), nullable=True),
        sa.Column("login", types.SafeText(), nullable=True),
        sa.Column("password", types.SafeText(), nullable=True),
        sa.Column("schema", types.SafeString(1000), nullable=True),
        sa.Column("extra", types.SafeText(), nullable=True),
        sa.Column("allowed_dag_ids", sa.JSON(), nullable=True),
        sa.Column("updated_at", types.UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("conn_id", name=op.f("pk_connection")),
    )
    op.create_table(
        "variable",
        sa.Column("key", types.SafeString(250), nullable=False),
        sa.Column("val", types.SafeText(), nullable=False),
        sa.Column("description", types.SafeText(), nullable=True),
        sa.Column("updated_at", types.UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_variable")),
    )


def downgrade() -> None:
    op.drop_table("variable")
    op.drop_table("connection")
