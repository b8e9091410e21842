"""server-side web sessions; API tokens that expire

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 10:10:00.000000
"""

from __future__ import annotations

import hareflow.common.db.types
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "web_session",
        sa.Column("id_hash", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("created_at", hareflow.common.db.types.UtcDateTime(), nullable=False),
        sa.Column("last_seen_at", hareflow.common.db.types.UtcDateTime(), nullable=False),
        sa.Column("expires_at", hareflow.common.db.types.UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["user.id"], name=op.f("fk_web_session_user_id_user"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id_hash", name=op.f("pk_web_session")),
    )
    op.create_index(op.f("ix_web_session_user_id"), "web_session", ["user_id"], unique=False)
    with op.batch_alter_table("api_token") as batch:
        batch.add_column(sa.Column("expires_at", hareflow.common.db.types.UtcDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_token") as batch:
        batch.drop_column("expires_at")
    op.drop_table("web_session")  # its index goes with it (MySQL refuses to drop an index a foreign key uses)
